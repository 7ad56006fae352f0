import { PRINCIPALS_WAITING } from '../sql.js';
import { DAY, HOUR, type QuotaDecision, type Usage } from '../../domain/limits.js';
import type { PrincipalRef } from '../../domain/types.js';
import type { LimitStore } from '../index.js';
import type { LimitOverride } from '../limits.js';
import { dropsCache, type PgPolicyCache } from './cache.js';
import type { Pg } from './pg.js';
import { lockAll } from './shared.js';

const MINUTE = 60_000;

/**
 * The quota ledger and per-principal overrides. A reservation is one transaction holding the
 * principal's advisory lock from before the read until the commit, so two nodes cannot both
 * see room for the last message. Inside store.tx the ledger verbs are part of that transaction
 * (SQLite refuses them there), the principal's lock held until it ends.
 */
export class PgLimitRepo implements LimitStore {
  /** The admin's override for a principal; through the policy cache when there is one. */
  readonly override: (principal: PrincipalRef) => Promise<LimitOverride | undefined>;

  constructor(
    private readonly db: Pg,
    cache?: PgPolicyCache,
  ) {
    const override = async (principal: PrincipalRef): Promise<LimitOverride | undefined> => {
      const r = await this.db.one<{ messages_per_hour: number | null; recipients_per_hour: number | null; recipients_per_day: number | null }>(
        'SELECT messages_per_hour, recipients_per_hour, recipients_per_day FROM principal_limits WHERE principal_ref = $1',
        [principal],
      );
      return r && { messagesPerHour: r.messages_per_hour, recipientsPerHour: r.recipients_per_hour, recipientsPerDay: r.recipients_per_day };
    };
    this.override = cache ? cache.table(override) : override;
    dropsCache(this, cache, ['setOverride']);
  }

  /**
   * Reads usage and records one message if `decide` (policy's pure decision) admits it, as
   * one transaction serialized per principal.
   */
  async reserve(principal: PrincipalRef, recipients: number, now: number, decide: (usage: Usage) => QuotaDecision): Promise<QuotaDecision> {
    return this.db.tx(async () => {
      await lockAll(this.db, [`quota ${principal}`]);
      const d = decide(await this.usage(principal, now));
      if (d.admit) {
        // Both rows in one statement: one round trip less while the principal's lock is held.
        await this.db.run(
          `WITH b AS (
             INSERT INTO quota_buckets (principal_ref, minute, messages, recipients) VALUES ($1, $2, 1, $3)
             ON CONFLICT (principal_ref, minute) DO UPDATE SET messages = quota_buckets.messages + 1, recipients = quota_buckets.recipients + excluded.recipients
           )
           INSERT INTO quota_last (principal_ref, at) VALUES ($1, $4) ON CONFLICT (principal_ref) DO UPDATE SET at = excluded.at`,
          [principal, Math.floor(now / MINUTE), recipients, now],
        );
      }
      return d;
    });
  }

  /** Windows slide by whole minutes: a bucket counts while its first minute is inside the window. */
  async usage(principal: PrincipalRef, now: number): Promise<Usage> {
    const r = (await this.db.one<{ mh: number | null; rh: number | null; rd: number | null; oldest: number | null; last: number | null }>(
      `SELECT SUM(CASE WHEN minute > $2 THEN messages END) AS mh,
              SUM(CASE WHEN minute > $2 THEN recipients END) AS rh,
              SUM(recipients) AS rd,
              MIN(CASE WHEN minute > $2 THEN minute END) AS oldest,
              (SELECT at FROM quota_last WHERE principal_ref = $1) AS last
       FROM quota_buckets WHERE principal_ref = $1 AND minute > $3`,
      [principal, Math.floor((now - HOUR) / MINUTE), Math.floor((now - DAY) / MINUTE)],
    ))!;
    return {
      messagesHour: r.mh ?? 0,
      recipientsHour: r.rh ?? 0,
      recipientsDay: r.rd ?? 0,
      lastAt: r.last !== null && r.last > now - DAY ? r.last : null,
      oldestHourAt: r.oldest === null ? null : r.oldest * MINUTE,
    };
  }

  /** Changes only the figures given (null clears one), in one statement: concurrent changes of different figures both stay. */
  async setOverride(principal: PrincipalRef, o: Partial<LimitOverride>, now: number): Promise<void> {
    const given = (v: number | null | undefined) => v !== undefined;
    await this.db.run(
      `INSERT INTO principal_limits (principal_ref, messages_per_hour, recipients_per_hour, recipients_per_day, updated_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (principal_ref) DO UPDATE SET
         messages_per_hour = CASE WHEN $6 THEN excluded.messages_per_hour ELSE principal_limits.messages_per_hour END,
         recipients_per_hour = CASE WHEN $7 THEN excluded.recipients_per_hour ELSE principal_limits.recipients_per_hour END,
         recipients_per_day = CASE WHEN $8 THEN excluded.recipients_per_day ELSE principal_limits.recipients_per_day END,
         updated_at = excluded.updated_at`,
      [
        principal,
        o.messagesPerHour ?? null,
        o.recipientsPerHour ?? null,
        o.recipientsPerDay ?? null,
        now,
        given(o.messagesPerHour),
        given(o.recipientsPerHour),
        given(o.recipientsPerDay),
      ],
    );
  }

  /** The message of this principal that has waited longest. */
  async oldestWaiting(principal: PrincipalRef): Promise<{ id: string; rcpts: string[] } | undefined> {
    const r = await this.db.one<{ id: string; rcpts: string[] | null }>(
      `SELECT m.id, (SELECT json_agg(r.address ORDER BY r.position) FROM recipients r WHERE r.message_id = m.id) AS rcpts
       FROM messages m WHERE m.principal_ref = $1 AND m.state = 'waiting-quota' ORDER BY m.received_at, m.id COLLATE "C" LIMIT 1`,
      [principal],
    );
    return r && { id: r.id, rcpts: r.rcpts ?? [] };
  }

  /** Hands a waiting message to delivery; false if it is no longer waiting. */
  async promote(id: string, now: number): Promise<boolean> {
    return (await this.db.run(`UPDATE messages SET state = 'queued', next_attempt_at = $1, held_at = NULL WHERE id = $2 AND state = 'waiting-quota'`, [now, id])) === 1;
  }

  /** Messages and recipients waiting for quota. */
  async waiting(principal: PrincipalRef): Promise<{ messages: number; recipients: number }> {
    const r = (await this.db.one<{ m: number; r: number }>(
      `SELECT COUNT(*) AS m, (SELECT COUNT(*) FROM recipients WHERE message_id IN
         (SELECT id FROM messages WHERE principal_ref = $1 AND state = 'waiting-quota')) AS r
       FROM messages WHERE principal_ref = $1 AND state = 'waiting-quota'`,
      [principal],
    ))!;
    return { messages: r.m, recipients: r.r };
  }

  /** Principals with mail waiting for quota, active ones only: a suspended account's mail never drains. */
  async principalsWaiting(): Promise<Array<{ ref: PrincipalRef; kind: 'user' | 'device'; name: string }>> {
    const rows = await this.db.q<{ ref: number; kind: 'user' | 'device'; name: string }>(PRINCIPALS_WAITING);
    return rows.map((r) => ({ ...r, ref: r.ref as PrincipalRef }));
  }

  async holdOne(id: string, reason: string, now: number): Promise<boolean> {
    return (
      (await this.db.run(
        `UPDATE messages SET state = 'held', held_at = $1, score = COALESCE(score, 0),
           reasons = json_build_array(json_build_object('id', 'over_limits', 'weight', 0, 'detail', $2::text))::text
         WHERE id = $3 AND state = 'waiting-quota'`,
        [now, reason, id],
      )) === 1
    );
  }

  /**
   * Moves a principal's waiting mail to held, with a reason, so an admin decides what of it
   * goes out (postern quarantine).
   */
  holdWaiting(principal: PrincipalRef, reason: string, now: number): Promise<number> {
    return this.db.run(
      `UPDATE messages SET state = 'held', held_at = $1, score = COALESCE(score, 0),
         reasons = json_build_array(json_build_object('id', 'principal_suspended', 'weight', 0, 'detail', $2::text))::text
       WHERE principal_ref = $3 AND state = 'waiting-quota'`,
      [now, reason, principal],
    );
  }

  /** Ledger rows older than the longest window count for nothing. */
  async purge(now: number): Promise<number> {
    const stale = await this.db.run('DELETE FROM quota_buckets WHERE minute <= $1', [Math.floor((now - DAY) / MINUTE)]);
    await this.db.run('DELETE FROM quota_last WHERE at <= $1', [now - DAY]);
    return stale;
  }
}
