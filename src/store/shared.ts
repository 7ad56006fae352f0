import { randomBytes } from 'node:crypto';
import type { Db } from './db.js';

/** One counter of the guessing brake, as the throttle asks the store to apply it. */
export interface CounterSpec {
  key: string;
  max: number;
}

/** What the store found for a counter inside the reserving transaction. */
export interface CounterState {
  key: string;
  /** A lock in force, or null. */
  lockedUntil: number | null;
  failures: number;
  inflight: number;
}

/**
 * The guessing brake's state (auth_attempts, auth_locks), on the synchronous=NORMAL
 * connection: a power cut may forget the last failures, which costs an attacker nothing they
 * could not get by waiting. Every verb is one IMMEDIATE transaction, so processes sharing the
 * database see one count: the check and the reservation cannot be split by another's.
 */
export class AuthAttemptRepo {
  private readonly stateStmt;
  private readonly lockStmt;
  private readonly insertStmt;
  private readonly pruneKeyStmt;

  /**
   * Reads the counters and, if `decide` returns null (nothing refuses), reserves one attempt on
   * every counter with a lease until `leaseUntil`; returns the ids reserved, or what `decide`
   * said.
   */
  readonly reserve: (counters: CounterSpec[], now: number, leaseUntil: number, decide: (states: CounterState[]) => unknown) => { ids: number[] } | { refused: unknown };
  /**
   * Ends a reservation: 'fail' turns it into a failure counted until `windowEnd` and locks
   * each counter that reached its max until `lockUntil`; 'ok' and 'void' drop it ('ok' also
   * clears the failures of the counters named in `clearOnOk`). Returns the keys locked now.
   */
  readonly settle: (ids: number[], outcome: 'ok' | 'fail' | 'void', counters: CounterSpec[], clearOnOk: string[], now: number, windowEnd: number, lockUntil: number) => string[];

  constructor(private readonly db: Db) {
    this.stateStmt = db.prepare<[string, number], { failed: number; inflight: number }>(
      `SELECT COALESCE(SUM(state = 'failed'), 0) AS failed, COALESCE(SUM(state = 'inflight'), 0) AS inflight
       FROM auth_attempts WHERE key = ? AND expires > ?`,
    );
    this.lockStmt = db.prepare<[string, number], { until: number }>('SELECT until FROM auth_locks WHERE key = ? AND until > ?');
    this.insertStmt = db.prepare(`INSERT INTO auth_attempts (key, state, expires) VALUES (?, 'inflight', ?)`);
    this.pruneKeyStmt = db.prepare('DELETE FROM auth_attempts WHERE key = ? AND expires <= ?');
    const failStmt = db.prepare(`UPDATE auth_attempts SET state = 'failed', expires = ? WHERE id = ? AND state = 'inflight'`);
    const dropStmt = db.prepare('DELETE FROM auth_attempts WHERE id = ?');
    const clearStmt = db.prepare(`DELETE FROM auth_attempts WHERE key = ? AND state = 'failed'`);
    const setLock = db.prepare('INSERT INTO auth_locks (key, until) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET until = excluded.until');

    const reserve = db.transaction((counters: CounterSpec[], now: number, leaseUntil: number, decide: (s: CounterState[]) => unknown) => {
      const states = counters.map((c) => this.read(c.key, now));
      const refused = decide(states);
      if (refused !== null) return { refused };
      return { ids: counters.map((c) => Number(this.insertStmt.run(c.key, leaseUntil).lastInsertRowid)) };
    });
    this.reserve = (counters, now, leaseUntil, decide) => reserve.immediate(counters, now, leaseUntil, decide);

    const settle = db.transaction((ids: number[], outcome: 'ok' | 'fail' | 'void', counters: CounterSpec[], clearOnOk: string[], now: number, windowEnd: number, lockUntil: number) => {
      const locked: string[] = [];
      if (outcome !== 'fail') {
        for (const id of ids) dropStmt.run(id);
        if (outcome === 'ok') for (const key of clearOnOk) clearStmt.run(key);
        return locked;
      }
      for (const id of ids) failStmt.run(windowEnd, id);
      for (const c of counters) {
        if (this.read(c.key, now).failures < c.max) continue;
        setLock.run(c.key, lockUntil);
        clearStmt.run(c.key);
        locked.push(c.key);
      }
      return locked;
    });
    this.settle = (...a) => settle.immediate(...a);
  }

  private read(key: string, now: number): CounterState {
    this.pruneKeyStmt.run(key, now);
    const s = this.stateStmt.get(key, now)!;
    return { key, lockedUntil: this.lockStmt.get(key, now)?.until ?? null, failures: s.failed, inflight: s.inflight };
  }

  /** The locks in force on these counters (no reservation: a read). */
  locks(keys: string[], now: number): Array<{ key: string; until: number }> {
    return keys.flatMap((key) => {
      const row = this.lockStmt.get(key, now);
      return row ? [{ key, until: row.until }] : [];
    });
  }

  /** Drops what has lapsed everywhere (counters of clients never seen again). */
  prune(now: number): void {
    this.db.prepare('DELETE FROM auth_attempts WHERE expires <= ?').run(now);
    this.db.prepare('DELETE FROM auth_locks WHERE until <= ?').run(now);
  }
}

/**
 * Named leases shared by every process: "one at a time" and "once per burst". take() is one
 * statement (an upsert that changes the row only when the lease is free or already the
 * taker's), so of two processes asking at once exactly one gets it.
 */
export class LeaseRepo {
  private readonly takeStmt;
  private readonly giveStmt;

  constructor(db: Db) {
    this.takeStmt = db.prepare<[string, string, number, number], { owner: string }>(
      `INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
       WHERE leases.until <= ? OR leases.owner = excluded.owner
       RETURNING owner`,
    );
    this.giveStmt = db.prepare('DELETE FROM leases WHERE name = ? AND owner = ?');
  }

  /** Takes (or renews) the lease until `until` if it is free at `now` or already `owner`'s. */
  take(name: string, owner: string, now: number, until: number): boolean {
    return this.takeStmt.get(name, owner, until, now) !== undefined;
  }

  give(name: string, owner: string): void {
    this.giveStmt.run(name, owner);
  }

  /**
   * "Once per burst": true for the first caller, by any process, until `until`; false for
   * every caller after it within the burst, the first one included.
   */
  firstInBurst(name: string, now: number, until: number): boolean {
    return this.take(name, `burst ${randomBytes(8).toString('hex')}`, now, until);
  }
}

/**
 * A name for this process in claims and leases, unique to this start: the host for the
 * admin, the pid, and a nonce so that a restarted process with a recycled pid is another owner.
 */
export function processOwner(hostname: string): string {
  return `${hostname}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

/** The node named in a claim owner made by processOwner. */
export const ownerNode = (owner: string): string => owner.split(':').slice(0, -2).join(':') || owner;
