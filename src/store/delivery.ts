import type { PrincipalName, PrincipalRef, QueueState } from '../domain/types.js';
import { AuditRepo, type AuditEntry } from './audit.js';
import type { Db } from './db.js';
import { labelOf } from './principals.js';
import type { Actor } from './quarantine.js';
import { DELETE_MESSAGE, PROMOTE, RCPT_COUNT } from './sql.js';

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

export interface RecipientState {
  position: number;
  address: string;
  status: RecipientStatus;
  attempts: number;
  lastAttemptAt: number | null;
  lastError: string | null;
  statusCode: string | null;
  remoteMta: string | null;
  /** The TLS of the last attempt (see DeliveryTls); null before any connection. */
  lastTls: DeliveryTls | null;
  dsnDone: boolean;
}

/** The TLS of one delivery: the protocol (null: none), whether the certificate was verified, and the policy that decided. */
export interface DeliveryTls {
  version: string | null;
  verified: boolean;
  policy: 'none' | 'opportunistic' | 'mta-sts' | 'dane' | 'manual';
}

/** What delivery needs of a message: its envelope, provenance and progress. */
export interface DeliveryJob {
  id: string;
  mailFrom: string;
  /** Who submitted it; null for Postern's own notices and DSNs. */
  principal: PrincipalName | null;
  receivedAt: number;
  attempts: number;
  nextAttemptAt: number | null;
  recipients: RecipientState[];
}

/** The outcome of one attempt for one recipient, as it is written down. */
export interface RecipientUpdate {
  position: number;
  status: RecipientStatus;
  error: string | null;
  statusCode: string | null;
  remoteMta: string | null;
  /** The attempt's TLS; null when no connection was made (routing, MTA-STS refusals). */
  tls?: DeliveryTls | null;
  /** A final verdict from a remote server (2xx or 5xx): counted for reputation. */
  remoteVerdict?: 'accepted' | 'rejected';
}

export interface RcptRow {
  position: number;
  address: string;
  status: RecipientStatus;
  attempts: number;
  last_attempt_at: number | null;
  last_error: string | null;
  status_code: string | null;
  remote_mta: string | null;
  last_tls: string | null;
  dsn_done: number;
}

export const toRcpt = (r: RcptRow): RecipientState => ({
  position: r.position,
  address: r.address,
  status: r.status,
  attempts: r.attempts,
  lastAttemptAt: r.last_attempt_at,
  lastError: r.last_error,
  statusCode: r.status_code,
  remoteMta: r.remote_mta,
  lastTls: r.last_tls ? (JSON.parse(r.last_tls) as DeliveryTls) : null,
  dsnDone: r.dsn_done === 1,
});

/** One attempt's outcome for one message, as recordAttempts writes it. */
export interface AttemptRecord {
  id: string;
  updates: RecipientUpdate[];
  now: number;
  /** null when no recipient is left pending. */
  nextAttemptAt: number | null;
  principal: PrincipalRef | null;
  /**
   * The claimant that made the attempt: its outcome is written only while the message is
   * still claimed by it. A claim that lapsed and was taken by another node makes the late
   * outcome a ClaimLostError, so it can never undo what the new claimant records.
   */
  owner?: string;
}

/** The message's claim was taken over (it lapsed) before this attempt's outcome was written. */
export class ClaimLostError extends Error {
  override name = 'ClaimLostError';
}

export class MessageNotFoundError extends Error {}

/** In the spool, but in a state the change does not apply to (a hold of held mail, a quota skip of queued mail). */
export class MessageStateError extends Error {
  constructor(
    readonly id: string,
    readonly state: QueueState,
  ) {
    super(`message ${id} is ${state}`);
  }
}

/** The reason id an admin's hold gives a message (quarantine list shows it; quarantine release ends it). */
export const ADMIN_HOLD = 'admin-hold';

/** A message as an admin's change found it: what the CLI reports and the audit row records. */
export interface ChangedMessage {
  id: string;
  /** The state before the change. */
  state: QueueState;
  mailFrom: string;
  /** "user:alice"; null for Postern's own notices and DSNs. */
  principal: string | null;
  recipients: number;
  /** The delivery claim at the time: a hold does not recall an attempt already under way. */
  claimOwner: string | null;
  claimUntil: number | null;
}

/** Both engines: the message row an admin's change reads. */
export interface ChangedRow {
  id: string;
  state: QueueState;
  mail_from: string;
  principal: string | null;
  n: number;
  claim_owner: string | null;
  claim_until: number | null;
}

/** Both engines: the row as the CLI sees it, and the audit row of `action` (queue.hold, queue.ignore-quota). */
export function changed(m: ChangedRow, action: string, by: Actor): { out: ChangedMessage; audit: Omit<AuditEntry, 'id'> } {
  return {
    out: { id: m.id, state: m.state, mailFrom: m.mail_from, principal: m.principal, recipients: m.n, claimOwner: m.claim_owner, claimUntil: m.claim_until },
    audit: {
      at: by.now,
      actor: by.actor,
      action,
      target: `message:${m.id}`,
      detail: { state: m.state, from: m.mail_from, ...principalOf(m.principal), recipients: m.n },
      reason: by.reason,
    },
  };
}

/** The label "user:alice" as the log and the audit details name principals: the name, and its kind. */
function principalOf(label: string | null): { principal: string | null; principal_kind: string | null } {
  if (label === null) return { principal: null, principal_kind: null };
  const colon = label.indexOf(':');
  return { principal: label.slice(colon + 1), principal_kind: label.slice(0, colon) };
}

/**
 * Both engines: the reasons an admin's hold leaves on the message, replacing the score's (the
 * hold is why it waits now; quarantine list shows the top reasons by weight).
 */
export const adminHoldReasons = (by: Actor): string =>
  JSON.stringify([{ id: ADMIN_HOLD, weight: 0, detail: `by ${by.actor}${by.reason ? `: ${by.reason}` : ''}` }]);

/** Both engines: the audit row of a deletion by an admin (queue delete). */
export const deletionAudit = (id: string, m: { state: string; mail_from: string; n: number }, by: Actor): Omit<AuditEntry, 'id'> => ({
  at: by.now,
  actor: by.actor,
  action: 'queue.delete',
  target: `message:${id}`,
  detail: { state: m.state, from: m.mail_from, recipients: m.n },
  reason: by.reason,
});

/** A message row as job() reads it, with its principal joined. */
export interface JobRow {
  id: string;
  state: string;
  mail_from: string;
  ref: number | null;
  kind: 'user' | 'device' | null;
  name: string | null;
  received_at: number;
  attempts: number;
  next_attempt_at: number | null;
}

/** Both engines: a message as delivery needs it, or undefined once it is no longer queued. */
export function toJob(m: JobRow, recipients: () => RcptRow[]): DeliveryJob | undefined {
  // A message held or deleted by the CLI since it was picked is left alone.
  if (m.state !== 'queued') return undefined;
  return {
    id: m.id,
    mailFrom: m.mail_from,
    principal: m.ref === null ? null : { ref: m.ref as PrincipalRef, kind: m.kind!, name: m.name! },
    receivedAt: m.received_at,
    attempts: m.attempts,
    nextAttemptAt: m.next_attempt_at,
    recipients: recipients().map(toRcpt),
  };
}

/**
 * The delivery side of the spool (Postfix's qmgr view of the queue): which messages are due,
 * what each recipient's state is, and the verbs that move them on. The scheduler keeps nothing
 * it cannot rebuild from here, which is what makes kill -9 between attempts harmless.
 */
export class DeliveryRepo {
  private readonly claimStmt;
  private readonly rcptStmt;
  private readonly nextDueStmt;
  private readonly jobStmt;
  private readonly updateRcpt;
  private readonly updateMsg;
  private readonly insertOutcome;
  /**
   * Writes the outcomes of several attempts in one transaction (group commit, as
   * the spool does for accepts), and removes each message left with nothing to do. Returns
   * the ids removed. With synchronous=FULL an fsync per attempt would cap delivery at the
   * disk's fsync rate and stall the event loop that submission shares.
   */
  readonly recordAttempts: (batch: AttemptRecord[]) => Set<string>;
  readonly finish: (id: string, reported: number[]) => boolean;
  readonly deleteAudited: (id: string, audit: Actor) => void;
  /**
   * Every message in the spool, deleted in one transaction with an audit row each (as
   * deleteAudited writes them); returns their ids, oldest first.
   */
  readonly deleteAll: (audit: Actor) => string[];
  /**
   * An admin's hold (postsuper -h): a queued or waiting message goes to held with the reason
   * admin-hold, for `quarantine release` to end. An attempt already under way is not recalled:
   * it keeps its claim, so its outcome is still written (what it delivered stays delivered;
   * a message with nothing left to do is removed) and no further attempt starts. A tombstone
   * of an earlier release goes, so that the new hold can be released. Audited as queue.hold.
   * MessageNotFoundError, or MessageStateError for a message already held.
   */
  readonly hold: (id: string, by: Actor) => ChangedMessage;
  /**
   * Hands a message waiting for quota to delivery now, outside the rate limit (and not
   * counted in the ledger, as a quarantine release is not). Audited as queue.ignore-quota.
   * MessageNotFoundError, or MessageStateError for one that is not waiting-quota.
   */
  readonly ignoreQuota: (id: string, by: Actor) => ChangedMessage;

  /**
   * db: the spool's connection (every write fsynced, wal-sync.ts) for reads and CLI changes; fast: a second
   * connection with synchronous=NORMAL for attempt outcomes (see openStore).
   */
  constructor(
    private readonly db: Db,
    private readonly fast: Db = db,
    /** On `db`, so an audited change and its audit row are one transaction. */
    auditRepo: AuditRepo = new AuditRepo(db),
  ) {
    // One statement, so the claim is atomic under SQLite's write lock: no other process can
    // take the same rows between the choice and the mark. Index order only
    // (messages_state_next): no sort of everything due at each scan.
    this.claimStmt = fast.prepare<[string, number, number, number, number], { id: string }>(
      `UPDATE messages SET claim_owner = ?, claim_until = ?
       WHERE id IN (SELECT id FROM messages WHERE state = 'queued' AND next_attempt_at <= ?
                    AND (claim_until IS NULL OR claim_until <= ?) ORDER BY next_attempt_at LIMIT ?)
       RETURNING id`,
    );
    // A message claimed elsewhere is due again when its claim would lapse.
    this.nextDueStmt = db.prepare<[], { t: number | null }>(
      `SELECT MIN(MAX(next_attempt_at, COALESCE(claim_until, 0))) AS t FROM messages WHERE state = 'queued'`,
    );
    this.jobStmt = db.prepare<[string], JobRow>(
      `SELECT m.id, m.state, m.mail_from, p.id AS ref, p.kind, p.name, m.received_at, m.attempts, m.next_attempt_at
       FROM messages m LEFT JOIN principals p ON p.id = m.principal_ref WHERE m.id = ?`,
    );
    this.rcptStmt = db.prepare<[string], RcptRow>('SELECT * FROM recipients WHERE message_id = ? ORDER BY position');
    this.updateRcpt = fast.prepare(
      `UPDATE recipients SET status = ?, last_error = ?, status_code = ?, remote_mta = ?, last_tls = ?,
         attempts = attempts + 1, last_attempt_at = ?, dsn_done = ? WHERE message_id = ? AND position = ?`,
    );
    // The claim ends in the same commit as the attempt's outcome: a process killed right after
    // it leaves nothing claimed, and no other process can take the message before it.
    // A message an admin held while this attempt ran stays held, with no next attempt.
    this.updateMsg = fast.prepare(
      `UPDATE messages SET attempts = attempts + 1, next_attempt_at = CASE WHEN state = 'queued' THEN ? END, claim_owner = NULL, claim_until = NULL WHERE id = ?`,
    );
    this.insertOutcome = fast.prepare('INSERT INTO delivery_outcomes (principal_ref, at, rejected) VALUES (?, ?, ?)');

    const openCount = fast.prepare<[string], { n: number }>(
      `SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND (status = 'pending' OR dsn_done = 0)`,
    );
    const deleteMsg = fast.prepare(DELETE_MESSAGE);
    const claimOwner = fast.prepare<[string], { claim_owner: string | null }>('SELECT claim_owner FROM messages WHERE id = ?');
    this.recordAttempts = fast.transaction((batch: AttemptRecord[]) => {
      const removed = new Set<string>();
      for (const a of batch) {
        if (a.owner !== undefined) {
          const m = claimOwner.get(a.id);
          if (m && m.claim_owner !== a.owner) throw new ClaimLostError(`message ${a.id} is claimed by another process now`);
        }
        for (const u of a.updates) {
          // Nothing to report for a delivered recipient: its dsn_done is set at once.
          this.updateRcpt.run(u.status, u.error, u.statusCode, u.remoteMta, u.tls ? JSON.stringify(u.tls) : null, a.now, u.status === 'failed' ? 0 : 1, a.id, u.position);
          if (a.principal !== null && u.remoteVerdict) this.insertOutcome.run(a.principal, a.now, u.remoteVerdict === 'rejected' ? 1 : 0);
        }
        this.updateMsg.run(a.nextAttemptAt, a.id);
        if (openCount.get(a.id)!.n === 0) {
          deleteMsg.run(a.id);
          removed.add(a.id);
        }
      }
      return removed;
    });

    // Marks failures as reported and removes the message once nothing is left to do for it:
    // every recipient final and every failure reported (RFC 5321 6.1: the message is ours
    // until then).
    this.finish = fast.transaction((id: string, reported: number[]) => {
      const mark = fast.prepare('UPDATE recipients SET dsn_done = 1 WHERE message_id = ? AND position = ?');
      for (const p of reported) mark.run(id, p);
      if (openCount.get(id)!.n > 0) return false;
      deleteMsg.run(id);
      return true;
    });

    this.deleteAudited = db.transaction((id: string, audit: Actor) => {
      const m = db
        .prepare<[string], { state: string; mail_from: string; n: number }>(
          `SELECT state, mail_from, ${RCPT_COUNT} AS n FROM messages m WHERE id = ?`,
        )
        .get(id);
      if (!m) throw new MessageNotFoundError(id);
      db.prepare(DELETE_MESSAGE).run(id);
      auditRepo.record(deletionAudit(id, m, audit));
    });

    this.deleteAll = db.transaction((audit: Actor) => {
      const all = db
        .prepare<[], { id: string; state: string; mail_from: string; n: number }>(`SELECT id, state, mail_from, ${RCPT_COUNT} AS n FROM messages m ORDER BY received_at, id`)
        .all();
      const del = db.prepare(DELETE_MESSAGE);
      for (const m of all) {
        del.run(m.id);
        auditRepo.record(deletionAudit(m.id, m, audit));
      }
      return all.map((m) => m.id);
    });

    const changedRow = db.prepare<[string], ChangedRow>(
      `SELECT m.id, m.state, m.mail_from, ${labelOf('m.principal_ref')} AS principal, m.claim_owner, m.claim_until, ${RCPT_COUNT} AS n FROM messages m WHERE m.id = ?`,
    );
    const find = (id: string, allowed: QueueState[]): ChangedRow => {
      const m = changedRow.get(id);
      if (!m) throw new MessageNotFoundError(id);
      if (!allowed.includes(m.state)) throw new MessageStateError(id, m.state);
      return m;
    };
    this.hold = db.transaction((id: string, by: Actor) => {
      const m = find(id, ['queued', 'waiting-quota']);
      db.prepare(`UPDATE messages SET state = 'held', held_at = ?, next_attempt_at = NULL, reasons = ? WHERE id = ?`).run(by.now, adminHoldReasons(by), id);
      db.prepare('DELETE FROM quarantine_decisions WHERE message_id = ?').run(id);
      const c = changed(m, 'queue.hold', by);
      auditRepo.record(c.audit);
      return c.out;
    });
    this.ignoreQuota = db.transaction((id: string, by: Actor) => {
      const m = find(id, ['waiting-quota']);
      db.prepare(PROMOTE).run(by.now, id, m.state);
      const c = changed(m, 'queue.ignore-quota', by);
      auditRepo.record(c.audit);
      return c.out;
    });
  }

  /**
   * Claims up to `limit` queued messages that are due and not claimed by a live owner (held
   * and waiting-quota never are), for `owner` until `until`. Returns their ids.
   */
  claimDue(owner: string, now: number, until: number, limit: number): string[] {
    return this.claimStmt.all(owner, until, now, now, limit).map((r) => r.id);
  }

  /** Extends this owner's claims (a lease is renewed while the attempt runs). */
  renewClaims(ids: string[], owner: string, until: number): void {
    const stmt = this.fast.prepare('UPDATE messages SET claim_until = ? WHERE id = ? AND claim_owner = ?');
    this.fast.transaction(() => {
      for (const id of ids) stmt.run(until, id, owner);
    })();
  }

  /** Gives a claim back once the attempt's outcome is committed (or nothing was attempted). */
  releaseClaim(id: string, owner: string): void {
    this.fast.prepare('UPDATE messages SET claim_owner = NULL, claim_until = NULL WHERE id = ? AND claim_owner = ?').run(id, owner);
  }

  /** When the earliest queued message becomes due, or null with nothing queued. */
  nextDueAt(): number | null {
    return this.nextDueStmt.get()?.t ?? null;
  }

  job(id: string): DeliveryJob | undefined {
    const m = this.jobStmt.get(id);
    return m && toJob(m, () => this.rcptStmt.all(id));
  }

  recipients(id: string): RecipientState[] {
    return this.rcptStmt.all(id).map(toRcpt);
  }

  /** Moves a message's next attempt without counting one (an attempt that broke locally). */
  postpone(id: string, at: number): void {
    this.fast.prepare(`UPDATE messages SET next_attempt_at = ? WHERE id = ? AND state = 'queued'`).run(at, id);
  }

  /** Makes queued messages due now ("try now"); returns how many. Held ones stay held. */
  retry(ids: string[] | 'all', now: number): number {
    if (ids === 'all') {
      return this.db.prepare(`UPDATE messages SET next_attempt_at = ? WHERE state = 'queued'`).run(now).changes;
    }
    const stmt = this.db.prepare(`UPDATE messages SET next_attempt_at = ? WHERE state = 'queued' AND id = ?`);
    let n = 0;
    this.db.transaction(() => {
      for (const id of ids) n += stmt.run(now, id).changes;
    })();
    return n;
  }

  /** Final remote verdicts for a principal since a time: the rejection rate's numerator and denominator. */
  outcomeCounts(principal: PrincipalRef, since: number): { total: number; rejected: number } {
    const row = this.db
      .prepare<[number, number], { total: number; rejected: number | null }>(
        'SELECT COUNT(*) AS total, SUM(rejected) AS rejected FROM delivery_outcomes WHERE principal_ref = ? AND at >= ?',
      )
      .get(principal, since)!;
    return { total: row.total, rejected: row.rejected ?? 0 };
  }

  pruneOutcomes(before: number): void {
    this.db.prepare('DELETE FROM delivery_outcomes WHERE at < ?').run(before);
  }
}
