import type { Clock } from '../domain/clock.js';

export interface ThrottleConfig {
  /** Failures from one client address within the window before it is locked out. */
  maxPerIp: number;
  /** Failures for one username from one address within the window. */
  maxPerUserIp: number;
  windowMs: number;
  lockoutMs: number;
  /** Bound on tracked keys, so a spray from many addresses cannot exhaust memory. */
  maxKeys?: number;
}

/**
 * Password-guessing brake. Counters are per client address and per (username, address),
 * never per username alone: failures from an attacker elsewhere therefore never lock the
 * user out of their own networks. IPv6 clients count per /64, the unit one host can hold.
 * Kept in memory: a restart forgets at most one window of failures, which costs an attacker
 * nothing they could not get by waiting.
 */
export class AuthThrottle {
  private readonly failures = new Map<string, number[]>();
  private readonly locked = new Map<string, number>();

  constructor(
    private readonly cfg: ThrottleConfig,
    private readonly clock: Clock,
  ) {}

  private static net(ip: string): string {
    return ip.includes(':') ? ip.split(':').slice(0, 4).join(':') + '::/64' : ip;
  }

  private keys(ip: string, username: string): [string, string] {
    const n = AuthThrottle.net(ip);
    return [`ip ${n}`, `user ${username.toLowerCase()} ${n}`];
  }

  /** When the address (or this username from it) may try again, or null if it may now. */
  lockedUntil(ip: string, username: string): number | null {
    const now = this.clock.now();
    let until: number | null = null;
    for (const k of this.keys(ip, username)) {
      const u = this.locked.get(k);
      if (u === undefined) continue;
      if (u <= now) this.locked.delete(k);
      else until = Math.max(until ?? 0, u);
    }
    return until;
  }

  /** Records a failure; returns true if it just locked the address or the username there. */
  fail(ip: string, username: string): boolean {
    const now = this.clock.now();
    const [ipKey, userKey] = this.keys(ip, username);
    let lockedNow = false;
    for (const [k, max] of [[ipKey, this.cfg.maxPerIp], [userKey, this.cfg.maxPerUserIp]] as const) {
      const recent = (this.failures.get(k) ?? []).filter((t) => t > now - this.cfg.windowMs);
      recent.push(now);
      this.failures.delete(k); // re-insert: Map order is then least recently failed first
      this.failures.set(k, recent);
      if (recent.length >= max) {
        this.locked.set(k, now + this.cfg.lockoutMs);
        this.failures.delete(k);
        lockedNow = true;
      }
    }
    const cap = this.cfg.maxKeys ?? 100_000;
    while (this.failures.size > cap) this.failures.delete(this.failures.keys().next().value!);
    while (this.locked.size > cap) this.locked.delete(this.locked.keys().next().value!);
    return lockedNow;
  }

  /** A success clears that username's count from that address (the address count stays). */
  succeed(ip: string, username: string): void {
    this.failures.delete(this.keys(ip, username)[1]);
  }
}
