import { createHash, randomBytes } from 'node:crypto';
import type { AuthAttemptStore, LeaseStore } from '../index.js';
import type { CounterSpec, CounterState } from '../shared.js';
import type { Pg } from './pg.js';

/**
 * A 64-bit advisory lock key for `name`, computed here (not with hashtextextended) so that
 * it is exact in JavaScript and lockAll can order keys. Two names sharing a key only
 * serialize more than needed.
 */
export function lockKey(name: string): bigint {
  return createHash('sha256').update(`postern ${name}`).digest().readBigInt64BE(0);
}

/**
 * Takes the transaction-scoped advisory locks for `names`, each once and in ascending key
 * order, so that two transactions locking overlapping sets cannot deadlock. Inside db.tx.
 */
export async function lockAll(db: Pg, names: string[]): Promise<void> {
  const keys = [...new Set(names.map(lockKey))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const k of keys) await db.q('SELECT pg_advisory_xact_lock($1::bigint)', [k.toString()]);
}

/**
 * The guessing brake's counters. Every reserve and settle is one transaction that first takes
 * an advisory lock per counter key, so nodes sharing the database see one count: the check and
 * the reservation cannot be split by another's. Called inside store.tx, a verb is part of that
 * transaction (unlike SQLite, which refuses it): it commits or rolls back with it, and its
 * locks are held until then.
 */
export class PgAuthAttemptRepo implements AuthAttemptStore {
  constructor(private readonly db: Pg) {}

  async reserve(counters: CounterSpec[], now: number, leaseUntil: number, decide: (states: CounterState[]) => unknown): Promise<{ ids: number[] } | { refused: unknown }> {
    return this.db.tx(async () => {
      await lockAll(this.db, counters.map((c) => `auth ${c.key}`));
      const states: CounterState[] = [];
      for (const c of counters) states.push(await this.read(c.key, now));
      const refused = decide(states);
      if (refused !== null) return { refused };
      const ids: number[] = [];
      for (const c of counters) {
        ids.push((await this.db.one<{ id: number }>(`INSERT INTO auth_attempts (key, state, expires) VALUES ($1, 'inflight', $2) RETURNING id`, [c.key, leaseUntil]))!.id);
      }
      return { ids };
    });
  }

  async settle(ids: number[], outcome: 'ok' | 'fail' | 'void', counters: CounterSpec[], clearOnOk: string[], now: number, windowEnd: number, lockUntil: number): Promise<string[]> {
    return this.db.tx(async () => {
      await lockAll(this.db, [...counters.map((c) => c.key), ...(outcome === 'ok' ? clearOnOk : [])].map((k) => `auth ${k}`));
      const locked: string[] = [];
      if (outcome !== 'fail') {
        await this.db.run('DELETE FROM auth_attempts WHERE id = ANY($1::bigint[])', [ids]);
        if (outcome === 'ok') for (const key of clearOnOk) await this.clear(key);
        return locked;
      }
      await this.db.run(`UPDATE auth_attempts SET state = 'failed', expires = $1 WHERE id = ANY($2::bigint[]) AND state = 'inflight'`, [windowEnd, ids]);
      for (const c of counters) {
        if ((await this.read(c.key, now)).failures < c.max) continue;
        await this.db.run('INSERT INTO auth_locks (key, until) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET until = excluded.until', [c.key, lockUntil]);
        await this.clear(c.key);
        locked.push(c.key);
      }
      return locked;
    });
  }

  private async clear(key: string): Promise<void> {
    await this.db.run(`DELETE FROM auth_attempts WHERE key = $1 AND state = 'failed'`, [key]);
  }

  /** A counter's state at `now`, dropping what has lapsed on it (inside the caller's transaction). */
  private async read(key: string, now: number): Promise<CounterState> {
    await this.db.run('DELETE FROM auth_attempts WHERE key = $1 AND expires <= $2', [key, now]);
    const s = (await this.db.one<{ failed: number; inflight: number; until: number | null }>(
      `SELECT COUNT(*) FILTER (WHERE state = 'failed') AS failed, COUNT(*) FILTER (WHERE state = 'inflight') AS inflight,
              (SELECT until FROM auth_locks WHERE key = $1 AND until > $2) AS until
       FROM auth_attempts WHERE key = $1 AND expires > $2`,
      [key, now],
    ))!;
    return { key, lockedUntil: s.until, failures: s.failed, inflight: s.inflight };
  }

  async locks(keys: string[], now: number): Promise<Array<{ key: string; until: number }>> {
    const rows = await this.db.q<{ key: string; until: number }>('SELECT key, until FROM auth_locks WHERE key = ANY($1::text[]) AND until > $2', [keys, now]);
    const until = new Map(rows.map((r) => [r.key, r.until]));
    return keys.flatMap((key) => {
      const u = until.get(key);
      return u === undefined ? [] : [{ key, until: u }];
    });
  }

  async prune(now: number): Promise<void> {
    await this.db.run('DELETE FROM auth_attempts WHERE expires <= $1', [now]);
    await this.db.run('DELETE FROM auth_locks WHERE until <= $1', [now]);
  }
}

/**
 * Named leases shared by every node: take() is one statement (an upsert that changes the row
 * only when the lease is free or already the taker's), so of two nodes asking at once exactly
 * one gets it. Inside store.tx, part of that transaction (see PgAuthAttemptRepo).
 */
export class PgLeaseRepo implements LeaseStore {
  constructor(private readonly db: Pg) {}

  async take(name: string, owner: string, now: number, until: number): Promise<boolean> {
    const r = await this.db.one<{ owner: string }>(
      `INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
       ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
       WHERE leases.until <= $4 OR leases.owner = excluded.owner
       RETURNING owner`,
      [name, owner, until, now],
    );
    return r !== undefined;
  }

  async give(name: string, owner: string): Promise<void> {
    await this.db.run('DELETE FROM leases WHERE name = $1 AND owner = $2', [name, owner]);
  }

  firstInBurst(name: string, now: number, until: number): Promise<boolean> {
    return this.take(name, `burst ${randomBytes(8).toString('hex')}`, now, until);
  }
}
