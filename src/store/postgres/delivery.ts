import type { PrincipalRef, QueueState } from '../../domain/types.js';
import {
  adminHoldReasons,
  changed,
  ClaimLostError,
  deletionAudit,
  MessageNotFoundError,
  MessageStateError,
  toJob,
  toRcpt,
  type AttemptRecord,
  type ChangedMessage,
  type ChangedRow,
  type DeliveryJob,
  type JobRow,
  type RcptRow,
  type RecipientState,
} from '../delivery.js';
import type { DeliveryStore } from '../index.js';
import { labelOf } from '../principals.js';
import type { Actor } from '../quarantine.js';
import type { Pg } from './pg.js';
import { PG_PROMOTE } from './queue.js';

/** Recipients that still need something: delivery (pending) or a report (failed, not yet reported). */
const OPEN_COUNT = `SELECT COUNT(*) AS n FROM recipients WHERE message_id = $1 AND (status = 'pending' OR dsn_done = 0)`;

/**
 * The delivery side of the spool on PostgreSQL (port of DeliveryRepo), for several nodes
 * sharing one database: a claim is taken with FOR UPDATE SKIP LOCKED, so two nodes claiming
 * at once never take the same message and never wait for each other.
 */
export class PgDeliveryRepo implements DeliveryStore {
  constructor(private readonly db: Pg) {}

  /**
   * Claims up to `limit` queued messages that are due and not claimed by a live owner (held
   * and waiting-quota never are), for `owner` until `until`. Returns their ids. One statement:
   * rows another node is claiming (or a CLI change holds) are skipped, not waited for; a row
   * another node claimed and committed meanwhile is checked again and left out.
   */
  async claimDue(owner: string, now: number, until: number, limit: number): Promise<string[]> {
    const rows = await this.db.q<{ id: string }>(
      `WITH due AS (
         SELECT id FROM messages WHERE state = 'queued' AND next_attempt_at <= $3
           AND (claim_until IS NULL OR claim_until <= $3)
         ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
       UPDATE messages m SET claim_owner = $1, claim_until = $2 FROM due WHERE m.id = due.id
       RETURNING m.id`,
      [owner, until, now, limit],
    );
    return rows.map((r) => r.id);
  }

  /** Extends this owner's claims (a lease is renewed while the attempt runs). */
  async renewClaims(ids: string[], owner: string, until: number): Promise<void> {
    if (ids.length === 0) return;
    await this.db.run('UPDATE messages SET claim_until = $1 WHERE id = ANY($2::text[]) AND claim_owner = $3', [until, ids, owner]);
  }

  /** Gives a claim back once the attempt's outcome is committed (or nothing was attempted). */
  async releaseClaim(id: string, owner: string): Promise<void> {
    await this.db.run('UPDATE messages SET claim_owner = NULL, claim_until = NULL WHERE id = $1 AND claim_owner = $2', [id, owner]);
  }

  /**
   * When the earliest queued message becomes due, or null with nothing queued. A message
   * claimed elsewhere is due again when its claim would lapse. (SQLite's MAX(a, b) is NULL
   * when a is; GREATEST is not: a queued message without a next attempt is left out here.)
   */
  async nextDueAt(): Promise<number | null> {
    const r = await this.db.one<{ t: number | null }>(
      `SELECT MIN(GREATEST(next_attempt_at, COALESCE(claim_until, 0))) AS t FROM messages WHERE state = 'queued' AND next_attempt_at IS NOT NULL`,
    );
    return r?.t ?? null;
  }

  /** One statement, so the message and its recipients are read as of one moment. */
  async job(id: string): Promise<DeliveryJob | undefined> {
    const m = await this.db.one<{
      recipients: RcptRow[];
    } & JobRow>(
      `SELECT m.id, m.state, m.mail_from, p.id AS ref, p.kind, p.name, m.received_at, m.attempts, m.next_attempt_at,
         (SELECT COALESCE(json_agg(json_build_object('position', r.position, 'address', r.address, 'status', r.status, 'attempts', r.attempts,
                   'last_attempt_at', r.last_attempt_at, 'last_error', r.last_error, 'status_code', r.status_code, 'remote_mta', r.remote_mta,
                   'last_tls', r.last_tls, 'dsn_done', r.dsn_done) ORDER BY r.position), '[]'::json)
          FROM recipients r WHERE r.message_id = m.id) AS recipients
       FROM messages m LEFT JOIN principals p ON p.id = m.principal_ref WHERE m.id = $1`,
      [id],
    );
    return m && toJob(m, () => m.recipients);
  }

  async recipients(id: string): Promise<RecipientState[]> {
    return (await this.db.q<RcptRow>('SELECT * FROM recipients WHERE message_id = $1 ORDER BY position', [id])).map(toRcpt);
  }

  /**
   * Writes the outcomes of several attempts in one transaction, and removes each message left
   * with nothing to do. Returns the ids removed (as SQLite does, also one that was already
   * gone). The claim ends in the same commit as the attempt's outcome.
   */
  async recordAttempts(batch: AttemptRecord[]): Promise<Set<string>> {
    return this.db.tx(async () => {
      const removed = new Set<string>();
      for (const a of batch) {
        // The message first (then its recipients), the order every writer takes its locks in.
        const m = await this.db.one<{ claim_owner: string | null }>('SELECT claim_owner FROM messages WHERE id = $1 FOR UPDATE', [a.id]);
        if (a.owner !== undefined && m && m.claim_owner !== a.owner) throw new ClaimLostError(`message ${a.id} is claimed by another process now`);
        for (const u of a.updates) {
          // Nothing to report for a delivered recipient: its dsn_done is set at once.
          await this.db.run(
            `UPDATE recipients SET status = $1, last_error = $2, status_code = $3, remote_mta = $4, last_tls = $9,
               attempts = attempts + 1, last_attempt_at = $5, dsn_done = $6 WHERE message_id = $7 AND position = $8`,
            [u.status, u.error, u.statusCode, u.remoteMta, a.now, u.status === 'failed' ? 0 : 1, a.id, u.position, u.tls ? JSON.stringify(u.tls) : null],
          );
          if (a.principal !== null && u.remoteVerdict) {
            await this.db.run('INSERT INTO delivery_outcomes (principal_ref, at, rejected) VALUES ($1, $2, $3)', [a.principal, a.now, u.remoteVerdict === 'rejected' ? 1 : 0]);
          }
        }
        // A message an admin held while this attempt ran stays held, with no next attempt.
        await this.db.run(
          `UPDATE messages SET attempts = attempts + 1, next_attempt_at = CASE WHEN state = 'queued' THEN $1::bigint END, claim_owner = NULL, claim_until = NULL WHERE id = $2`,
          [a.nextAttemptAt, a.id],
        );
        if ((await this.db.one<{ n: number }>(OPEN_COUNT, [a.id]))!.n === 0) {
          await this.db.deleteMessage(a.id);
          removed.add(a.id);
        }
      }
      return removed;
    });
  }

  /**
   * Marks failures as reported and removes the message once nothing is left to do for it:
   * every recipient final and every failure reported (RFC 5321 6.1).
   */
  async finish(id: string, reported: number[]): Promise<boolean> {
    return this.db.tx(async () => {
      if (reported.length > 0) await this.db.run('UPDATE recipients SET dsn_done = 1 WHERE message_id = $1 AND position = ANY($2::int[])', [id, reported]);
      if ((await this.db.one<{ n: number }>(OPEN_COUNT, [id]))!.n > 0) return false;
      await this.db.deleteMessage(id);
      return true;
    });
  }

  /** Deletes a message in any state, with its audit row in the same transaction. */
  async deleteAudited(id: string, audit: Actor): Promise<void> {
    await this.db.tx(async () => {
      const m = await this.db.one<{ state: string; mail_from: string; n: number }>(
        `SELECT m.state, m.mail_from, (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id) AS n FROM messages m WHERE m.id = $1 FOR UPDATE OF m`,
        [id],
      );
      if (!m) throw new MessageNotFoundError(id);
      await this.db.deleteMessage(id);
      await this.db.audit(deletionAudit(id, m, audit));
    });
  }

  /** Every message in the spool, deleted in one transaction with an audit row each; their ids, oldest first. */
  async deleteAll(audit: Actor): Promise<string[]> {
    return this.db.tx(async () => {
      // Locked first: a message another node is changing is waited for, not deleted half-way.
      const all = await this.db.q<{ id: string; state: string; mail_from: string; n: number }>(
        `SELECT m.id, m.state, m.mail_from, (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id) AS n
         FROM messages m ORDER BY m.received_at, m.id COLLATE "C" FOR UPDATE OF m`,
      );
      for (const m of all) {
        await this.db.deleteMessage(m.id);
        await this.db.audit(deletionAudit(m.id, m, audit));
      }
      return all.map((m) => m.id);
    });
  }

  /** The message row, locked for the change; refused unless in one of `allowed`. Inside the caller's transaction. */
  private async changing(id: string, allowed: QueueState[]): Promise<ChangedRow> {
    const m = await this.db.one<ChangedRow>(
      `SELECT m.id, m.state, m.mail_from, ${labelOf('m.principal_ref')} AS principal, m.claim_owner, m.claim_until,
         (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id) AS n
       FROM messages m WHERE m.id = $1 FOR UPDATE OF m`,
      [id],
    );
    if (!m) throw new MessageNotFoundError(id);
    if (!allowed.includes(m.state)) throw new MessageStateError(id, m.state);
    return m;
  }

  /** An admin's hold: see DeliveryRepo.hold. The claim of an attempt under way is kept. */
  async hold(id: string, by: Actor): Promise<ChangedMessage> {
    return this.db.tx(async () => {
      const m = await this.changing(id, ['queued', 'waiting-quota']);
      await this.db.run(`UPDATE messages SET state = 'held', held_at = $1, next_attempt_at = NULL, reasons = $2 WHERE id = $3`, [by.now, adminHoldReasons(by), id]);
      await this.db.run('DELETE FROM quarantine_decisions WHERE message_id = $1', [id]);
      const c = changed(m, 'queue.hold', by);
      await this.db.audit(c.audit);
      return c.out;
    });
  }

  /** A message waiting for quota to delivery now, outside the rate limit: see DeliveryRepo.ignoreQuota. */
  async ignoreQuota(id: string, by: Actor): Promise<ChangedMessage> {
    return this.db.tx(async () => {
      const m = await this.changing(id, ['waiting-quota']);
      await this.db.run(PG_PROMOTE, [by.now, id, m.state]);
      const c = changed(m, 'queue.ignore-quota', by);
      await this.db.audit(c.audit);
      return c.out;
    });
  }

  /** Moves a message's next attempt without counting one (an attempt that broke locally). */
  async postpone(id: string, at: number): Promise<void> {
    await this.db.run(`UPDATE messages SET next_attempt_at = $1 WHERE id = $2 AND state = 'queued'`, [at, id]);
  }

  /**
   * Makes queued messages due now ("try now"); returns how many. Held ones stay held. Counted
   * per id named, as SQLite's one UPDATE per id does (an id named twice counts twice).
   */
  async retry(ids: string[] | 'all', now: number): Promise<number> {
    if (ids === 'all') return this.db.run(`UPDATE messages SET next_attempt_at = $1 WHERE state = 'queued'`, [now]);
    if (ids.length === 0) return 0;
    const hit = new Set(
      (await this.db.q<{ id: string }>(`UPDATE messages SET next_attempt_at = $1 WHERE state = 'queued' AND id = ANY($2::text[]) RETURNING id`, [now, ids])).map((r) => r.id),
    );
    return ids.filter((id) => hit.has(id)).length;
  }

  /** Final remote verdicts for a principal since a time: the rejection rate's numerator and denominator. */
  async outcomeCounts(principal: PrincipalRef, since: number): Promise<{ total: number; rejected: number }> {
    const row = (await this.db.one<{ total: number; rejected: number | null }>(
      'SELECT COUNT(*) AS total, SUM(rejected) AS rejected FROM delivery_outcomes WHERE principal_ref = $1 AND at >= $2',
      [principal, since],
    ))!;
    return { total: row.total, rejected: row.rejected ?? 0 };
  }

  async pruneOutcomes(before: number): Promise<void> {
    await this.db.run('DELETE FROM delivery_outcomes WHERE at < $1', [before]);
  }
}
