import type { Db } from './db.js';
import type { NewMessage, PrincipalRef, QueuedMessage, QueueState } from '../domain/types.js';
import { labelOf } from './principals.js';
import { MESSAGE_COUNT, MESSAGES_BY_STATE, RCPTS_JSON } from './sql.js';

export interface MessageRow {
  id: string;
  state: QueueState;
  mail_from: string;
  principal: string | null;
  principal_ref: number | null;
  client_ip: string;
  size: number;
  received_at: number;
  attempts: number;
  next_attempt_at: number | null;
  accepted_by: string | null;
  claim_owner: string | null;
  claim_until: number | null;
  rcpts: string;
}

const SELECT = `SELECT m.*, ${labelOf('m.principal_ref')} AS principal, ${RCPTS_JSON} AS rcpts FROM messages m`;

export function toMessage(row: MessageRow): QueuedMessage {
  return {
    id: row.id,
    state: row.state,
    mailFrom: row.mail_from,
    rcptTo: JSON.parse(row.rcpts) as string[],
    principal: row.principal,
    principalRef: row.principal_ref as PrincipalRef | null,
    clientIp: row.client_ip,
    size: row.size,
    receivedAt: row.received_at,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    acceptedBy: row.accepted_by,
    claimOwner: row.claim_owner,
    claimUntil: row.claim_until,
  };
}

/** The spool's tables. Only spool/ writes new messages; the CLI reads and changes states. */
export class QueueRepo {
  /**
   * Can the spool commit now? Commits one tiny row on the spool's own connection (so through
   * its WAL and fsync), without waiting for another holder of the lock (busy_timeout 0 for
   * this probe): taking the lock alone would succeed on a disk that cannot take a page, and
   * a probe must not stall the event loop behind another process's long transaction.
   */
  writable(now: number): boolean {
    try {
      this.db
        .prepare(`INSERT INTO leases (name, owner, until) VALUES ('spool-health-probe', 'spool', ?) ON CONFLICT (name) DO UPDATE SET until = excluded.until`)
        .run(now);
      return true;
    } catch {
      return false;
    }
  }

  private readonly insertMsg;
  private readonly insertRcpt;
  private readonly insertBody;
  readonly insertMany: (messages: NewMessage[]) => void;

  constructor(private readonly db: Db) {
    this.insertMsg = db.prepare(
      `INSERT INTO messages (id, state, mail_from, principal_ref, client_ip, size, received_at, next_attempt_at, score, reasons, held_at, accepted_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.insertRcpt = db.prepare('INSERT INTO recipients (message_id, position, address) VALUES (?, ?, ?)');
    this.insertBody = db.prepare('INSERT INTO message_bodies (message_id, data) VALUES (?, ?)');
    // One transaction, hence one fsync, for every message accepted in the same event-loop
    // turn: group commit keeps durable accept cheap under concurrency.
    this.insertMany = db.transaction((messages: NewMessage[]) => {
      for (const m of messages) {
        this.insertMsg.run(
          m.id,
          m.state,
          m.envelope.mailFrom,
          m.principal?.ref ?? null,
          m.clientIp,
          m.data.length,
          m.receivedAt,
          m.state === 'queued' ? m.receivedAt : null,
          // Quarantine: why policy put it where it is, and since when it waits.
          m.assessment ? m.assessment.score : null,
          m.assessment ? JSON.stringify(m.assessment.reasons) : null,
          m.state === 'queued' ? null : m.receivedAt,
          m.acceptedBy ?? null,
        );
        m.envelope.rcptTo.forEach((a, i) => this.insertRcpt.run(m.id, i, a));
        this.insertBody.run(m.id, m.data);
      }
    });
  }

  list(state?: QueueState): QueuedMessage[] {
    const rows = state
      ? this.db.prepare<[string], MessageRow>(`${SELECT} WHERE state = ? ORDER BY received_at, id`).all(state)
      : this.db.prepare<[], MessageRow>(`${SELECT} ORDER BY received_at, id`).all();
    return rows.map(toMessage);
  }

  get(id: string): QueuedMessage | undefined {
    const row = this.db.prepare<[string], MessageRow>(`${SELECT} WHERE id = ?`).get(id);
    return row && toMessage(row);
  }

  body(id: string): Buffer | undefined {
    const row = this.db.prepare<[string], { data: Buffer }>('SELECT data FROM message_bodies WHERE message_id = ?').get(id);
    return row?.data;
  }

  count(): number {
    return (this.db.prepare(MESSAGE_COUNT).get() as { n: number }).n;
  }

  /** Messages per spool state (metrics gauge, read at scrape time). */
  depth(): Record<string, number> {
    const rows = this.db.prepare<[], { state: string; n: number }>(MESSAGES_BY_STATE).all();
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  }
}
