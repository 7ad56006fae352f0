import type { TlsTicketKeyStore } from '../index.js';
import { toTicketKey, type TicketKey, type TicketKeyRow } from '../tls-tickets.js';
import type { Pg } from './pg.js';

/** Session ticket keys, one per period, shared by every node (see store/tls-tickets.ts). */
export class PgTlsTicketKeyRepo implements TlsTicketKeyStore {
  constructor(private readonly db: Pg) {}

  async claim(candidate: TicketKey, now: number): Promise<TicketKey> {
    await this.db.run('INSERT INTO tls_ticket_keys (starts_at, name, secret, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [
      candidate.startsAt,
      candidate.name,
      candidate.secret,
      now,
    ]);
    return toTicketKey((await this.db.one<TicketKeyRow>('SELECT starts_at, name, secret FROM tls_ticket_keys WHERE starts_at = $1', [candidate.startsAt]))!);
  }

  async since(since: number): Promise<TicketKey[]> {
    return (await this.db.q<TicketKeyRow>('SELECT starts_at, name, secret FROM tls_ticket_keys WHERE starts_at >= $1 ORDER BY starts_at DESC', [since])).map(toTicketKey);
  }

  async prune(before: number): Promise<number> {
    return this.db.run('DELETE FROM tls_ticket_keys WHERE starts_at < $1', [before]);
  }
}
