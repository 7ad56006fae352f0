import type { Db } from './db.js';

/** A TLS session ticket key for one rotation period (see migrations/019_tls_ticket_keys.sql). */
export interface TicketKey {
  /** The period's start, ms since the epoch. */
  startsAt: number;
  /** 16 bytes, named in every ticket the key issues. */
  name: Buffer;
  /** 32 bytes: the HMAC-SHA256 key, then the AES-128 key. */
  secret: Buffer;
}

export interface TicketKeyRow {
  starts_at: number | string;
  name: Buffer;
  secret: Buffer;
}

export const toTicketKey = (r: TicketKeyRow): TicketKey => ({ startsAt: Number(r.starts_at), name: Buffer.from(r.name), secret: Buffer.from(r.secret) });

/** Session ticket keys, one per period, shared by every process on the store. */
export class TlsTicketKeyRepo {
  constructor(private readonly db: Db) {}

  /**
   * The key of candidate.startsAt's period: the candidate, stored, when the period has none
   * yet; else the one another process stored first (every process ends up with the same).
   */
  claim(candidate: TicketKey, now: number): TicketKey {
    this.db
      .prepare('INSERT INTO tls_ticket_keys (starts_at, name, secret, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING')
      .run(candidate.startsAt, candidate.name, candidate.secret, now);
    return toTicketKey(this.db.prepare<[number], TicketKeyRow>('SELECT starts_at, name, secret FROM tls_ticket_keys WHERE starts_at = ?').get(candidate.startsAt)!);
  }

  /** Keys whose period starts at or after `since`, newest first. */
  since(since: number): TicketKey[] {
    return this.db.prepare<[number], TicketKeyRow>('SELECT starts_at, name, secret FROM tls_ticket_keys WHERE starts_at >= ? ORDER BY starts_at DESC').all(since).map(toTicketKey);
  }

  /** Deletes the keys whose period started before `before` (no ticket they issued is accepted any more). */
  prune(before: number): number {
    return this.db.prepare('DELETE FROM tls_ticket_keys WHERE starts_at < ?').run(before).changes;
  }
}
