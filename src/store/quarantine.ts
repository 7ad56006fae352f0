import { AuditRepo, type AuditEntry } from './audit.js';
import type { Db } from './db.js';
import { labelOf } from './principals.js';
import { DELETE_MESSAGE, PROMOTE, RCPT_COUNT, RCPTS_JSON } from './sql.js';
import type { PrincipalRef, QueueState, ScoreReason } from '../domain/types.js';

/** A message waiting for a decision (held, or waiting for quota), as the CLI shows it. */
export interface QuarantinedMessage {
  id: string;
  state: QueueState;
  mailFrom: string;
  principal: string | null;
  rcptTo: string[];
  size: number;
  receivedAt: number;
  heldAt: number | null;
  score: number | null;
  reasons: ScoreReason[];
  /** The header section (at most the first 64 KiB), for From: and Subject: in listings. */
  header: Buffer;
}

export type DecisionAction = 'released' | 'deleted' | 'expired';

export interface Decision {
  messageId: string;
  action: DecisionAction;
  at: number;
  actor: string;
  reason: string | null;
}

export interface Actor {
  actor: string;
  reason: string | null;
  now: number;
}

/** What a release, delete or expiry acted on: enough for the log line and the audit detail. */
export interface DecidedMessage {
  id: string;
  state: QueueState;
  mailFrom: string;
  principal: string | null;
  principalRef: PrincipalRef | null;
  recipients: number;
  score: number | null;
}

export class QuarantineError extends Error {}
export class NotFoundError extends QuarantineError {}
/** Released, deleted or expired before: says by whom and when, so nothing is queued twice. */
export class AlreadyDecidedError extends QuarantineError {
  constructor(readonly decision: Decision) {
    super(`message ${decision.messageId} was already ${decision.action} on ${new Date(decision.at).toISOString()} by ${decision.actor}`);
  }
}
/** In the spool but queued for delivery: not quarantine's to release or delete. */
export class NotQuarantinedError extends QuarantineError {
  constructor(
    readonly id: string,
    readonly state: QueueState,
  ) {
    super(`message ${id} is ${state}, not held`);
  }
}

export interface Row {
  id: string;
  state: QueueState;
  mail_from: string;
  principal: string | null;
  rcpts: string;
  size: number;
  received_at: number;
  held_at: number | null;
  score: number | null;
  reasons: string | null;
  header: Buffer;
}

const SELECT = `SELECT m.id, m.state, m.mail_from, ${labelOf('m.principal_ref')} AS principal, m.size, m.received_at, m.held_at, m.score, m.reasons,
  ${RCPTS_JSON} AS rcpts,
  (SELECT substr(data, 1, 65536) FROM message_bodies b WHERE b.message_id = m.id) AS header
  FROM messages m`;

function headerOf(prefix: Buffer | null): Buffer {
  if (!prefix) return Buffer.alloc(0);
  const i = prefix.indexOf('\r\n\r\n');
  return i === -1 ? prefix : prefix.subarray(0, i + 2);
}

export const toMessage = (r: Row): QuarantinedMessage => ({
  id: r.id,
  state: r.state,
  mailFrom: r.mail_from,
  principal: r.principal,
  rcptTo: JSON.parse(r.rcpts) as string[],
  size: r.size,
  receivedAt: r.received_at,
  heldAt: r.held_at,
  score: r.score,
  reasons: r.reasons ? (JSON.parse(r.reasons) as ScoreReason[]) : [],
  header: headerOf(r.header),
});

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

/**
 * The quarantine's verbs on the spool (Postfix's postsuper -H / -d): release and delete move
 * a message out of a waiting state exactly once, with the tombstone and the audit row in the
 * same transaction as the change.
 */
/** The message row a decision reads. */
export interface DecisionRow {
  state: QueueState;
  mail_from: string;
  principal: string | null;
  principal_ref: PrincipalRef | null;
  n: number;
  score: number | null;
}

/** Both engines: what a decision returns, and its audit row. */
export function decided(id: string, m: DecisionRow, action: DecisionAction, by: Actor): { out: DecidedMessage; audit: Omit<AuditEntry, 'id'> } {
  // The label "user:alice" split as the log names principals: the name, and its kind.
  const colon = m.principal?.indexOf(':') ?? -1;
  return {
    out: { id, state: m.state, mailFrom: m.mail_from, principal: m.principal, principalRef: m.principal_ref, recipients: m.n, score: m.score },
    audit: {
      at: by.now,
      actor: by.actor,
      action: `quarantine.${action === 'released' ? 'release' : action === 'deleted' ? 'delete' : 'expire'}`,
      target: `message:${id}`,
      detail: { state: m.state, from: m.mail_from, principal: m.principal && m.principal.slice(colon + 1), principal_kind: m.principal && m.principal.slice(0, colon), recipients: m.n, score: m.score },
      reason: by.reason,
    },
  };
}

export class QuarantineRepo {
  readonly release: (id: string, by: Actor) => DecidedMessage;
  readonly delete: (id: string, by: Actor) => DecidedMessage;
  readonly expire: (heldBefore: number, by: Actor) => DecidedMessage[];

  /** `audit` writes on the same connection, so its row is part of each decision's transaction. */
  constructor(
    private readonly db: Db,
    audit: AuditRepo = new AuditRepo(db),
  ) {
    const decide = (id: string, action: DecisionAction, by: Actor, allowed: (s: QueueState) => boolean): DecidedMessage => {
      const m = db
        .prepare<[string], { id: string; state: QueueState; mail_from: string; principal: string | null; principal_ref: PrincipalRef | null; n: number; score: number | null }>(
          `SELECT id, state, mail_from, ${labelOf('principal_ref')} AS principal, principal_ref, score, ${RCPT_COUNT} AS n FROM messages m WHERE id = ?`,
        )
        .get(id);
      const earlier = this.decision(id);
      if (earlier) throw new AlreadyDecidedError(earlier);
      if (!m) throw new NotFoundError(`no such message: ${id}`);
      if (!allowed(m.state)) throw new NotQuarantinedError(id, m.state);
      db.prepare('INSERT INTO quarantine_decisions (message_id, action, at, actor, reason) VALUES (?, ?, ?, ?, ?)').run(id, action, by.now, by.actor, by.reason);
      const d = decided(id, m, action, by);
      audit.record(d.audit);
      return d.out;
    };
    const waiting = (s: QueueState) => s !== 'queued';

    this.release = db.transaction((id: string, by: Actor) => {
      const m = decide(id, 'released', by, waiting);
      // Untouched: only the state and schedule change, never message_bodies.
      db.prepare(PROMOTE).run(by.now, id, m.state);
      // An admin vouched for these recipients: later mail to them is not "to a new domain".
      if (m.principalRef !== null) {
        const rcpts = db.prepare<[string], { rcpts: string }>(`SELECT ${RCPTS_JSON} AS rcpts FROM messages m WHERE id = ?`).get(id)!;
        this.addDomains(m.principalRef, (JSON.parse(rcpts.rcpts) as string[]).map(domainOf), by.now);
      }
      return m;
    });

    this.delete = db.transaction((id: string, by: Actor) => {
      const m = decide(id, 'deleted', by, waiting);
      db.prepare(DELETE_MESSAGE).run(id);
      return m;
    });

    this.expire = db.transaction((heldBefore: number, by: Actor) => {
      const ids = db
        .prepare<[number], { id: string }>(`SELECT id FROM messages WHERE state = 'held' AND held_at <= ? ORDER BY held_at, id`)
        .all(heldBefore)
        .map((r) => r.id);
      return ids.map((id) => {
        const m = decide(id, 'expired', by, (s) => s === 'held');
        db.prepare(DELETE_MESSAGE).run(id);
        return m;
      });
    });
  }

  /** Messages in any waiting state (held, waiting-quota), oldest first; optionally one principal's. */
  list(filter: { states?: QueueState[]; principal?: PrincipalRef } = {}): QuarantinedMessage[] {
    const states = filter.states ?? ['held'];
    const where = [`m.state IN (${states.map(() => '?').join(', ')})`];
    const params: unknown[] = [...states];
    if (filter.principal !== undefined) {
      where.push('m.principal_ref = ?');
      params.push(filter.principal);
    }
    return this.db
      .prepare<unknown[], Row>(`${SELECT} WHERE ${where.join(' AND ')} ORDER BY m.received_at, m.id`)
      .all(...params)
      .map(toMessage);
  }

  get(id: string): QuarantinedMessage | undefined {
    const r = this.db.prepare<[string], Row>(`${SELECT} WHERE m.id = ?`).get(id);
    return r && toMessage(r);
  }

  decision(id: string): Decision | undefined {
    const r = this.db
      .prepare<[string], { message_id: string; action: DecisionAction; at: number; actor: string; reason: string | null }>('SELECT * FROM quarantine_decisions WHERE message_id = ?')
      .get(id);
    return r && { messageId: r.message_id, action: r.action, at: r.at, actor: r.actor, reason: r.reason };
  }

  /** Tombstones only need to outlive the mistakes they guard against (a repeated command). */
  pruneDecisions(before: number): number {
    return this.db.prepare('DELETE FROM quarantine_decisions WHERE at < ?').run(before).changes;
  }

  /** Of these domains, the ones the principal has never sent to. */
  newDomains(principal: PrincipalRef, domains: string[]): string[] {
    const known = this.db.prepare<[number, string], { n: number }>('SELECT COUNT(*) AS n FROM principal_domains WHERE principal_ref = ? AND domain = ?');
    return [...new Set(domains.map((d) => d.toLowerCase()))].filter((d) => known.get(principal, d)!.n === 0);
  }

  addDomains(principal: PrincipalRef, domains: string[], now: number): void {
    const ins = this.db.prepare('INSERT OR IGNORE INTO principal_domains (principal_ref, domain, first_at) VALUES (?, ?, ?)');
    this.db.transaction(() => {
      for (const d of new Set(domains.map((x) => x.toLowerCase()))) ins.run(principal, d, now);
    })();
  }
}
