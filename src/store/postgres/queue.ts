import { MESSAGE_COUNT, MESSAGES_BY_STATE } from '../sql.js';
import type { NewMessage, QueuedMessage, QueueState } from '../../domain/types.js';
import type { QueueStore } from '../index.js';
import { labelOf } from '../principals.js';
import { toMessage, type MessageRow } from '../queue.js';
import type { Pg } from './pg.js';

/**
 * A message's recipient addresses in envelope order, as JSON text (what SQLite's RCPTS_JSON
 * gives, so the SQLite row mapper reads it): json_agg is NULL over no rows, json_group_array '[]'.
 */
export const PG_RCPTS_JSON = `(SELECT COALESCE(json_agg(r.address ORDER BY r.position), '[]'::json)::text FROM recipients r WHERE r.message_id = m.id)`;

/** SQL PROMOTE (a quarantine release, an admin's quota skip) in this engine's placeholders: $1 now, $2 id, $3 the state seen. */
export const PG_PROMOTE = `UPDATE messages SET state = 'queued', next_attempt_at = $1, held_at = NULL WHERE id = $2 AND state = $3`;

const SELECT = `SELECT m.*, ${labelOf('m.principal_ref')} AS principal, ${PG_RCPTS_JSON} AS rcpts FROM messages m`;

/** The spool's tables on PostgreSQL (port of QueueRepo). */
export class PgQueueRepo implements QueueStore {
  constructor(private readonly db: Pg) {}

  /** Can the spool commit now? Commits one tiny row, as the SQLite engine's probe does. */
  async writable(now: number): Promise<boolean> {
    try {
      await this.db.run(
        `INSERT INTO leases (name, owner, until) VALUES ('spool-health-probe', 'spool', $1) ON CONFLICT (name) DO UPDATE SET until = excluded.until`,
        [now],
      );
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Every message of the batch at once (group commit), in one statement whatever the batch
   * size (rows passed as arrays, one data-modifying CTE per table): a single statement is its
   * own transaction, so the batch costs one round trip and one commit, and lands whole or not
   * at all.
   */
  async insertMany(messages: NewMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const rcpts = messages.flatMap((m) => m.envelope.rcptTo.map((address, position) => ({ id: m.id, position, address })));
    await this.db.run(
      `WITH m AS (
         INSERT INTO messages (id, state, mail_from, principal_ref, client_ip, size, received_at, next_attempt_at, score, reasons, held_at, accepted_by)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::float8[], $10::text[], $11::bigint[], $12::text[])
       ), r AS (
         INSERT INTO recipients (message_id, position, address) SELECT * FROM unnest($13::text[], $14::int[], $15::text[])
       )
       INSERT INTO message_bodies (message_id, data) SELECT * FROM unnest($1::text[], $16::bytea[])`,
      [
        messages.map((m) => m.id),
        messages.map((m) => m.state),
        messages.map((m) => m.envelope.mailFrom),
        messages.map((m) => m.principal?.ref ?? null),
        messages.map((m) => m.clientIp),
        messages.map((m) => m.data.length),
        messages.map((m) => m.receivedAt),
        messages.map((m) => (m.state === 'queued' ? m.receivedAt : null)),
        // Quarantine: why policy put it where it is, and since when it waits.
        messages.map((m) => (m.assessment ? m.assessment.score : null)),
        messages.map((m) => (m.assessment ? JSON.stringify(m.assessment.reasons) : null)),
        messages.map((m) => (m.state === 'queued' ? null : m.receivedAt)),
        messages.map((m) => m.acceptedBy ?? null),
        rcpts.map((r) => r.id),
        rcpts.map((r) => r.position),
        rcpts.map((r) => r.address),
        messages.map((m) => m.data),
      ],
    );
  }

  async list(state?: QueueState): Promise<QueuedMessage[]> {
    const rows = state
      ? await this.db.q<MessageRow>(`${SELECT} WHERE m.state = $1 ORDER BY m.received_at, m.id COLLATE "C"`, [state])
      : await this.db.q<MessageRow>(`${SELECT} ORDER BY m.received_at, m.id COLLATE "C"`);
    return rows.map(toMessage);
  }

  async get(id: string): Promise<QueuedMessage | undefined> {
    const row = await this.db.one<MessageRow>(`${SELECT} WHERE m.id = $1`, [id]);
    return row && toMessage(row);
  }

  async body(id: string): Promise<Buffer | undefined> {
    return (await this.db.one<{ data: Buffer }>('SELECT data FROM message_bodies WHERE message_id = $1', [id]))?.data;
  }

  async count(): Promise<number> {
    return (await this.db.one<{ n: number }>(MESSAGE_COUNT))!.n;
  }

  /** Messages per spool state (metrics gauge, read at scrape time). */
  async depth(): Promise<Record<string, number>> {
    const rows = await this.db.q<{ state: string; n: number }>(MESSAGES_BY_STATE);
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  }
}
