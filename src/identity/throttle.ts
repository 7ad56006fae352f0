import type { Clock } from '../domain/clock.js';
import { clientKey } from '../policy/client.js';
import type { CounterSpec, CounterState } from '../store/shared.js';

export interface ThrottleConfig {
  /** Failures from one client address within the window before it is locked out. */
  maxPerIp: number;
  /** Failures for one username from one address within the window. */
  maxPerUserIp: number;
  /** Failures for one username from all addresses together within the window. */
  maxPerUser: number;
  windowMs: number;
  lockoutMs: number;
}

/** Where the counters live: the store, shared by every process on the database. */
export interface AttemptStore {
  /** `decide`'s non-null answer comes back as `refused`. */
  reserve(counters: CounterSpec[], now: number, leaseUntil: number, decide: (states: CounterState[]) => unknown): Promise<{ ids: number[] } | { refused: unknown }>;
  settle(ids: number[], outcome: Settlement, counters: CounterSpec[], clearOnOk: string[], now: number, windowEnd: number, lockUntil: number): Promise<string[]>;
  locks(keys: string[], now: number): Promise<Array<{ key: string; until: number }>>;
}

/** What refused an attempt: the client's address (or this username from it), or the username everywhere. */
export type ThrottleScope = 'address' | 'username';

interface Limit extends CounterSpec {
  scope: ThrottleScope;
  /** The (username, address) counter, which a success clears. */
  clearedBySuccess: boolean;
}

/** A reserved attempt; settle() it exactly once with what verification found. */
export interface Attempt {
  readonly limits: readonly Limit[];
  readonly ids: readonly number[];
}

export type Admission = { ok: true; attempt: Attempt } | { ok: false; scope: ThrottleScope; until: number | null };

/** ok: the login succeeded; fail: a 535; void: nothing was decided (busy, local error). */
export type Settlement = 'ok' | 'fail' | 'void';

/** An attempt in flight holds its place this long at most: a process that died mid-verification frees it then. */
const INFLIGHT_LEASE_MS = 60_000;
/** How often an attempt waiting on another process's attempts in flight looks again (no cross-process wake-up in SQLite). */
const POLL_MS = 50;

type Verdict = { full: string } | { refused: Extract<Admission, { ok: false }> };

/**
 * Password-guessing brake. It counts an attempt when it starts, before the password is
 * verified: an attempt in flight holds a place like a failure does, so fifty parallel guesses
 * against a limit of five get five argon2 verifications, not fifty (count before you spend).
 *
 * Three counters: per client address, per (username, address), and per username across all
 * addresses. The first two lock the client out. The third stops a botnet guessing one
 * account from many addresses, but it never locks the owner out: it is not applied to a
 * client inside the user's own networks (the caller says so), it only answers 454, and it
 * never suspends anyone; a guess is not a compromise. It is counted the same way for names
 * that do not exist, so its 454 says nothing about which names do. IPv6 clients count per
 * /64 (clientKey), the unit one host can hold.
 *
 * The counters live in the store, each check-and-reserve one transaction: processes sharing
 * the database share one count, and memory does not grow with the addresses that spray.
 */
export class AuthThrottle {
  /** Attempts of this process waiting for one in flight on a full counter to end. */
  private readonly waiters = new Map<string, Array<() => void>>();
  /** This process's attempts in flight per counter: while there are some, a settle here wakes the waiters. */
  private readonly local = new Map<string, number>();

  constructor(
    private readonly cfg: ThrottleConfig,
    private readonly clock: Clock,
    private readonly store: AttemptStore,
  ) {}

  private limits(ip: string, username: string): Limit[] {
    const net = clientKey(ip);
    const name = username.toLowerCase();
    return [
      { key: `ip ${net}`, max: this.cfg.maxPerIp, scope: 'address', clearedBySuccess: false },
      { key: `user ${name} ${net}`, max: this.cfg.maxPerUserIp, scope: 'address', clearedBySuccess: true },
      { key: `name ${name}`, max: this.cfg.maxPerUser, scope: 'username', clearedBySuccess: false },
    ];
  }

  private static specs(limits: readonly Limit[]): CounterSpec[] {
    return limits.map(({ key, max }) => ({ key, max }));
  }

  /**
   * Reserves an attempt, or says why there is none. `trusted` is asked only once the
   * username's own limit is reached: true when the client is inside the user's networks,
   * where that limit does not apply.
   *
   * A counter that is full only because of attempts still in flight is not a lockout: this
   * attempt waits for them to end and is judged again, so fifty right passwords at once
   * (a fleet of devices behind one address) are verified five at a time rather than refused,
   * while fifty guesses meet the lock the first five failures set.
   */
  async admit(ip: string, username: string, trusted: () => boolean): Promise<Admission> {
    const limits = this.limits(ip, username);
    for (;;) {
      const now = this.clock.now();
      const r = (await this.store.reserve(AuthThrottle.specs(limits), now, now + INFLIGHT_LEASE_MS, (states) => AuthThrottle.judge(limits, states, trusted, true))) as { ids: number[] } | { refused: Verdict };
      if ('ids' in r) {
        for (const { key } of limits) this.local.set(key, (this.local.get(key) ?? 0) + 1);
        return { ok: true, attempt: { limits, ids: r.ids } };
      }
      if ('refused' in r.refused) return r.refused.refused;
      await this.wait(r.refused.full);
    }
  }

  /**
   * A login that needs no verification (the credential cache vouched for it) reserves
   * nothing and waits for nothing; only a lock stops it, exactly as it stops any attempt.
   */
  async lock(ip: string, username: string, trusted: () => boolean): Promise<Extract<Admission, { ok: false }> | null> {
    const limits = this.limits(ip, username);
    const locks = new Map((await this.store.locks(limits.map((l) => l.key), this.clock.now())).map((l) => [l.key, l.until]));
    const states = limits.map((l) => ({ key: l.key, lockedUntil: locks.get(l.key) ?? null, failures: 0, inflight: 0 }));
    const v = AuthThrottle.judge(limits, states, trusted, false);
    return v && 'refused' in v ? v.refused : null;
  }

  /** null: room for one more; refused: a lock (or the username's limit) says no; full: attempts in flight fill a counter. */
  private static judge(limits: readonly Limit[], states: CounterState[], trusted: () => boolean, counting: boolean): Verdict | null {
    for (const [i, { max, scope, key }] of limits.entries()) {
      const s = states[i]!;
      const until = s.lockedUntil;
      if (until === null && (!counting || s.failures + s.inflight < max)) continue;
      if (scope === 'username' && trusted()) continue;
      if (until === null && s.failures < max) return { full: key };
      return { refused: { ok: false, scope, until } };
    }
    return null;
  }

  private wait(key: string): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      // Woken when an attempt of this process on the key ends. Another process's attempts
      // end unseen, so with none of ours in flight the counter is looked at again after a
      // short while (only then: fifty waiters polling would be fifty transactions a tick).
      const timer = (this.local.get(key) ?? 0) > 0 ? undefined : setTimeout(done, POLL_MS);
      const list = this.waiters.get(key) ?? [];
      list.push(done);
      this.waiters.set(key, list);
    });
  }

  /** Ends an attempt. Returns the scopes this failure just locked (for the log). */
  async settle(attempt: Attempt, outcome: Settlement): Promise<ThrottleScope[]> {
    const now = this.clock.now();
    try {
      const locked = await this.store.settle(
        [...attempt.ids],
        outcome,
        AuthThrottle.specs(attempt.limits),
        attempt.limits.filter((l) => l.clearedBySuccess).map((l) => l.key),
        now,
        now + this.cfg.windowMs,
        now + this.cfg.lockoutMs,
      );
      return [...new Set(attempt.limits.filter((l) => locked.includes(l.key)).map((l) => l.scope))];
    } finally {
      // Woken whatever happened: a waiter must never wait on an attempt that is over.
      for (const { key } of attempt.limits) {
        const n = (this.local.get(key) ?? 1) - 1;
        if (n > 0) this.local.set(key, n);
        else this.local.delete(key);
        const waiting = this.waiters.get(key);
        if (!waiting) continue;
        this.waiters.delete(key);
        for (const wake of waiting) wake();
      }
    }
  }
}
