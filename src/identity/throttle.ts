import type { Clock } from '../domain/clock.js';
import { clientKey } from '../policy/client.js';

export interface ThrottleConfig {
  /** Failures from one client address within the window before it is locked out. */
  maxPerIp: number;
  /** Failures for one username from one address within the window. */
  maxPerUserIp: number;
  /** Failures for one username from all addresses together within the window. */
  maxPerUser: number;
  windowMs: number;
  lockoutMs: number;
  /** Bound on tracked keys, so a spray from many addresses cannot exhaust memory. */
  maxKeys?: number;
}

/** What refused an attempt: the client's address (or this username from it), or the username everywhere. */
export type ThrottleScope = 'address' | 'username';

/** A reserved attempt; settle() it exactly once with what verification found. */
export interface Attempt {
  readonly limits: readonly Limit[];
}

interface Limit {
  key: string;
  max: number;
  scope: ThrottleScope;
  /** The (username, address) counter, which a success clears. */
  clearedBySuccess: boolean;
}

export type Admission = { ok: true; attempt: Attempt } | { ok: false; scope: ThrottleScope; until: number | null };

/** ok: the login succeeded; fail: a 535; void: nothing was decided (busy, local error). */
export type Settlement = 'ok' | 'fail' | 'void';

interface Counter {
  failures: number[];
  inflight: number;
}

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
 * Kept in memory: a restart forgets at most one window of failures, which costs an attacker
 * nothing they could not get by waiting.
 */
export class AuthThrottle {
  private readonly counters = new Map<string, Counter>();
  private readonly locked = new Map<string, number>();
  /** Attempts waiting for one in flight on a full counter to end. */
  private readonly waiters = new Map<string, Array<() => void>>();

  constructor(
    private readonly cfg: ThrottleConfig,
    private readonly clock: Clock,
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

  private recent(key: string, now: number): Counter {
    const c = this.counters.get(key);
    if (!c) return { failures: [], inflight: 0 };
    c.failures = c.failures.filter((t) => t > now - this.cfg.windowMs);
    return c;
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
      const full = this.check(limits, trusted);
      if (full === null) break;
      if ('refused' in full) return full.refused;
      await new Promise<void>((resolve) => {
        const list = this.waiters.get(full.key) ?? [];
        list.push(resolve);
        this.waiters.set(full.key, list);
      });
    }
    for (const { key } of limits) {
      const c = this.counters.get(key) ?? { failures: [], inflight: 0 };
      c.inflight++;
      // Re-inserted: Map order is then least recently used first, which is what the cap evicts.
      this.counters.delete(key);
      this.counters.set(key, c);
    }
    this.evict();
    return { ok: true, attempt: { limits } };
  }

  /**
   * A login that needs no verification (the credential cache proved the password) reserves
   * nothing and waits for nothing; only a lock stops it, exactly as it stops any attempt.
   */
  lock(ip: string, username: string, trusted: () => boolean): Extract<Admission, { ok: false }> | null {
    const found = this.check(this.limits(ip, username), trusted, false);
    return found && 'refused' in found ? found.refused : null;
  }

  /** null: room for one more; refused: a lock (or the username's limit) says no; key: full of attempts in flight. */
  private check(limits: Limit[], trusted: () => boolean, counting = true): null | { refused: Extract<Admission, { ok: false }> } | { key: string } {
    const now = this.clock.now();
    for (const { key, max, scope } of limits) {
      let until = this.locked.get(key) ?? null;
      if (until !== null && until <= now) {
        this.locked.delete(key);
        until = null;
      }
      const c = this.recent(key, now);
      if (until === null && (!counting || c.failures.length + c.inflight < max)) continue;
      if (scope === 'username' && trusted()) continue;
      if (until === null && c.failures.length < max) return { key };
      return { refused: { ok: false, scope, until } };
    }
    return null;
  }

  /** Ends an attempt. Returns the scopes this failure just locked (for the log). */
  settle(attempt: Attempt, outcome: Settlement): ThrottleScope[] {
    const now = this.clock.now();
    const lockedNow: ThrottleScope[] = [];
    for (const { key, max, scope, clearedBySuccess } of attempt.limits) {
      const c = this.counters.get(key);
      if (!c) continue; // evicted under a spray: nothing left to settle
      c.inflight = Math.max(0, c.inflight - 1);
      if (outcome === 'fail') {
        c.failures = c.failures.filter((t) => t > now - this.cfg.windowMs);
        c.failures.push(now);
        if (c.failures.length >= max) {
          this.locked.set(key, now + this.cfg.lockoutMs);
          c.failures = [];
          if (!lockedNow.includes(scope)) lockedNow.push(scope);
        }
      } else if (outcome === 'ok' && clearedBySuccess) {
        // A success clears that username's count from that address; the address's own count
        // and the username's count everywhere stay, since others may still be guessing.
        c.failures = [];
      }
      if (!c.failures.length && !c.inflight) this.counters.delete(key);
      const waiting = this.waiters.get(key);
      if (waiting) {
        this.waiters.delete(key);
        for (const wake of waiting) wake();
      }
    }
    this.evict();
    return lockedNow;
  }

  private evict(): void {
    const cap = this.cfg.maxKeys ?? 100_000;
    for (const k of this.counters.keys()) {
      if (this.counters.size <= cap) break;
      this.counters.delete(k);
    }
    for (const k of this.locked.keys()) {
      if (this.locked.size <= cap) break;
      this.locked.delete(k);
    }
  }
}
