import type { Db } from './db.js';
import { PRINCIPALS_WAITING, PROMOTE, RCPTS_JSON } from './sql.js';
import type { PolicyCache } from './policy-cache.js';
import { DAY, HOUR, type QuotaDecision, type Usage } from '../domain/limits.js';
import type { PrincipalRef } from '../domain/types.js';

const MINUTE = 60_000;

export interface LimitOverride {
  messagesPerHour: number | null;
  recipientsPerHour: number | null;
  recipientsPerDay: number | null;
}

/** The quota ledger and per-principal overrides. Every decision is one IMMEDIATE transaction. */
export class LimitRepo {
  private readonly usageStmt;
  private readonly lastStmt;
  private readonly addBucket;
  private readonly setLast;
  private readonly overrideStmt;
  private readonly waitingStmt;
  private readonly oldestStmt;
  private readonly promoteStmt;
  private readonly ledgerDb: Db;
  /**
   * Reads usage and records one message if `decide` (policy's pure decision) admits it, as
   * one IMMEDIATE transaction: it takes the write lock before reading, so two processes
   * sharing the database cannot both see room for the last message.
   */
  readonly reserve: (principal: PrincipalRef, recipients: number, now: number, decide: (usage: Usage) => QuotaDecision) => QuotaDecision;

  /**
   * `db` is the main connection (overrides, which the CLI audits in the same transaction, and
   * the spool's states); `ledger` the synchronous=NORMAL one for the usage buckets.
   */
  /** The admin's override for a principal; cached (shared, frozen) when the store has a PolicyCache. */
  readonly override: (principal: PrincipalRef) => LimitOverride | undefined;

  constructor(
    private readonly db: Db,
    ledger: Db = db,
    cache?: PolicyCache,
  ) {
    // Windows slide by whole minutes: a bucket counts while its first minute is inside the
    // window, so usage leaves the window up to a minute early, never late.
    this.usageStmt = ledger.prepare<{ p: number; hour: number; day: number }, { mh: number | null; rh: number | null; rd: number | null; oldest: number | null }>(
      `SELECT SUM(CASE WHEN minute > @hour THEN messages END) AS mh,
              SUM(CASE WHEN minute > @hour THEN recipients END) AS rh,
              SUM(recipients) AS rd,
              MIN(CASE WHEN minute > @hour THEN minute END) AS oldest
       FROM quota_buckets WHERE principal_ref = @p AND minute > @day`,
    );
    this.lastStmt = ledger.prepare<[number], { at: number }>('SELECT at FROM quota_last WHERE principal_ref = ?');
    this.addBucket = ledger.prepare(
      `INSERT INTO quota_buckets (principal_ref, minute, messages, recipients) VALUES (?, ?, 1, ?)
       ON CONFLICT (principal_ref, minute) DO UPDATE SET messages = messages + 1, recipients = recipients + excluded.recipients`,
    );
    this.setLast = ledger.prepare('INSERT INTO quota_last (principal_ref, at) VALUES (?, ?) ON CONFLICT (principal_ref) DO UPDATE SET at = excluded.at');
    this.overrideStmt = db.prepare<[number], { messages_per_hour: number | null; recipients_per_hour: number | null; recipients_per_day: number | null }>(
      'SELECT messages_per_hour, recipients_per_hour, recipients_per_day FROM principal_limits WHERE principal_ref = ?',
    );
    this.waitingStmt = db.prepare<{ p: number }, { m: number; r: number | null }>(
      `SELECT COUNT(*) AS m, (SELECT COUNT(*) FROM recipients WHERE message_id IN
         (SELECT id FROM messages WHERE principal_ref = @p AND state = 'waiting-quota')) AS r
       FROM messages WHERE principal_ref = @p AND state = 'waiting-quota'`,
    );
    this.oldestStmt = db.prepare<[number], { id: string; rcpts: string }>(
      `SELECT m.id, ${RCPTS_JSON} AS rcpts
       FROM messages m WHERE m.principal_ref = ? AND m.state = 'waiting-quota' ORDER BY m.received_at, m.id LIMIT 1`,
    );
    this.ledgerDb = ledger;
    const override = (principal: PrincipalRef): LimitOverride | undefined => {
      const r = this.overrideStmt.get(principal);
      return r && { messagesPerHour: r.messages_per_hour, recipientsPerHour: r.recipients_per_hour, recipientsPerDay: r.recipients_per_day };
    };
    this.override = cache ? cache.table(override) : override;
    this.promoteStmt = db.prepare(PROMOTE);
    const reserveTx = ledger.transaction((principal: PrincipalRef, recipients: number, now: number, decide: (usage: Usage) => QuotaDecision) => {
      const d = decide(this.usage(principal, now));
      if (d.admit) {
        this.addBucket.run(principal, Math.floor(now / MINUTE), recipients);
        this.setLast.run(principal, now);
      }
      return d;
    });
    this.reserve = (...a) => reserveTx.immediate(...a);
  }

  usage(principal: PrincipalRef, now: number): Usage {
    const r = this.usageStmt.get({ p: principal, hour: Math.floor((now - HOUR) / MINUTE), day: Math.floor((now - DAY) / MINUTE) })!;
    const last = this.lastStmt.get(principal)?.at ?? null;
    return {
      messagesHour: r.mh ?? 0,
      recipientsHour: r.rh ?? 0,
      recipientsDay: r.rd ?? 0,
      lastAt: last !== null && last > now - DAY ? last : null,
      oldestHourAt: r.oldest === null ? null : r.oldest * MINUTE,
    };
  }


  setOverride(principal: PrincipalRef, o: Partial<LimitOverride>, now: number): void {
    const cur = this.override(principal) ?? { messagesPerHour: null, recipientsPerHour: null, recipientsPerDay: null };
    const next = { ...cur, ...o };
    this.db
      .prepare(
        `INSERT INTO principal_limits (principal_ref, messages_per_hour, recipients_per_hour, recipients_per_day, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (principal_ref) DO UPDATE SET messages_per_hour = excluded.messages_per_hour, recipients_per_hour = excluded.recipients_per_hour,
           recipients_per_day = excluded.recipients_per_day, updated_at = excluded.updated_at`,
      )
      .run(principal, next.messagesPerHour, next.recipientsPerHour, next.recipientsPerDay, now);
  }

  /** The message of this principal that has waited longest. */
  oldestWaiting(principal: PrincipalRef): { id: string; rcpts: string[] } | undefined {
    const r = this.oldestStmt.get(principal);
    return r && { id: r.id, rcpts: JSON.parse(r.rcpts) as string[] };
  }

  /** Hands a waiting message to delivery; false if it is no longer waiting. */
  promote(id: string, now: number): boolean {
    return this.promoteStmt.run(now, id, 'waiting-quota').changes === 1;
  }

  /** Messages and recipients waiting for quota. */
  waiting(principal: PrincipalRef): { messages: number; recipients: number } {
    const r = this.waitingStmt.get({ p: principal })!;
    return { messages: r.m, recipients: r.r ?? 0 };
  }

  /** Principals with mail waiting for quota, active ones only: a suspended account's mail never drains. */
  principalsWaiting(): Array<{ ref: PrincipalRef; kind: 'user' | 'device'; name: string }> {
    return this.db
      .prepare<[], { ref: number; kind: 'user' | 'device'; name: string }>(PRINCIPALS_WAITING)
      .all()
      .map((r) => ({ ...r, ref: r.ref as PrincipalRef }));
  }

  holdOne(id: string, reason: string, now: number): boolean {
    return (
      this.db
        .prepare(
          `UPDATE messages SET state = 'held', held_at = ?, score = COALESCE(score, 0),
             reasons = json_array(json_object('id', 'over_limits', 'weight', 0, 'detail', ?))
           WHERE id = ? AND state = 'waiting-quota'`,
        )
        .run(now, reason, id).changes === 1
    );
  }

  /**
   * Moves a principal's waiting mail to held, with a reason, so an admin decides what of it
   * goes out (postern quarantine). Used when the principal is suspended: a stolen account's
   * burst must not keep trickling out, nor go out all at once after a reset.
   */
  holdWaiting(principal: PrincipalRef, reason: string, now: number): number {
    return this.db
      .prepare(
        `UPDATE messages SET state = 'held', held_at = ?, score = COALESCE(score, 0),
           reasons = json_array(json_object('id', 'principal_suspended', 'weight', 0, 'detail', ?))
         WHERE principal_ref = ? AND state = 'waiting-quota'`,
      )
      .run(now, reason, principal).changes;
  }

  /** Ledger rows older than the longest window count for nothing. */
  purge(now: number): number {
    const stale = this.ledgerDb.prepare('DELETE FROM quota_buckets WHERE minute <= ?').run(Math.floor((now - DAY) / MINUTE)).changes;
    this.ledgerDb.prepare('DELETE FROM quota_last WHERE at <= ?').run(now - DAY);
    return stale;
  }
}
