import Bottleneck from 'bottleneck';
import { createHmac, randomBytes } from 'node:crypto';
import type { Clock } from '../domain/clock.js';
import type { User } from '../domain/types.js';
import type { AppPassword } from '../store/app-passwords.js';
import type { Store } from '../store/index.js';
import { hashPassword, needsRehash, verifyPassword, type Argon2Params } from './passwords.js';

export type AuthOutcome =
  /** `app`: the app password that was used, null for the main password. */
  | { kind: 'ok'; user: User; app: AppPassword | null; cached: boolean }
  | { kind: 'invalid' } // unknown user or wrong password: indistinguishable by design
  | { kind: 'busy' }; // too many verifications queued: a temporary failure

export interface AuthenticatorOptions {
  params: Argon2Params;
  maxConcurrent: number;
  maxQueued: number;
  cacheTtlMs: number;
  cacheMaxEntries?: number;
  clock: Clock;
}

interface CacheEntry {
  userId: number;
  /** Ids may be reused after a delete (SQLite): the principal number and the app password's public id are not. */
  principalRef: number;
  appPublicId: string | null;
  /** The app password proven, null for the main password. */
  appId: number | null;
  epoch: number;
  expires: number;
}

/**
 * Verifies SMTP AUTH credentials. argon2 is deliberately expensive, so verifications run
 * through a bounded queue (memory stays at maxConcurrent × memoryCost during a login storm)
 * and a success is remembered for a short TTL under a keyed hash of username and password:
 * the key lives only in this process, so the cache holds nothing an attacker could use
 * offline. An entry is valid only while the user's auth_epoch is unchanged, so a password
 * change, reset or suspension made by the CLI in another process drops it at once.
 */
export class Authenticator {
  private readonly limiter: Bottleneck;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly cacheKey = randomBytes(32);
  private readonly maxEntries: number;
  private dummyHash: Promise<string> | undefined;
  private verified = 0;

  constructor(
    private readonly users: Store['users'],
    private readonly opts: AuthenticatorOptions,
    private readonly apps?: Pick<Store['appPasswords'], 'get'>,
  ) {
    this.limiter = new Bottleneck({
      maxConcurrent: opts.maxConcurrent,
      highWater: opts.maxQueued,
      strategy: Bottleneck.strategy.OVERFLOW,
    });
    this.maxEntries = opts.cacheMaxEntries ?? 10_000;
  }

  /** A hash with the live parameters, verified for unknown users so they cost the same time. */
  private dummy(): Promise<string> {
    this.dummyHash ??= hashPassword(randomBytes(16).toString('hex'), this.opts.params);
    return this.dummyHash;
  }

  private key(username: string, password: string): string {
    return createHmac('sha256', this.cacheKey).update(username.toLowerCase()).update('\0').update(password).digest('base64');
  }

  /**
   * The user a recent successful login with exactly this username and password proved, while
   * the user's auth_epoch is unchanged (a password change, reset or suspension, by any
   * process, ends it); null otherwise. Costs one HMAC: no verification, no queue.
   */
  async cached(username: string, password: string): Promise<{ user: User; app: AppPassword | null } | null> {
    const key = this.key(username, password);
    const hit = this.cache.get(key);
    if (!hit) return null;
    const user = await this.users.get(hit.userId);
    // A revoked app password bumps its user's epoch; the row is read again all the same.
    const app = hit.appId === null ? null : ((await this.apps?.get(hit.appId)) ?? undefined);
    const same = user && user.principalRef === hit.principalRef && (app === null || (app !== undefined && app.publicId === hit.appPublicId && app.userId === user.id));
    if (user && same && user.authEpoch === hit.epoch && hit.expires > this.opts.clock.now()) return { user, app: app ?? null };
    this.cache.delete(key);
    return null;
  }

  /**
   * Checks a password. `useCache: false` makes the check cost a full verification even when
   * the cache holds the answer: the caller asks for that when the login will be refused
   * anyway (a client outside the user's networks), so that a right password refused costs
   * what a wrong one costs, in time and in place in the verification queue.
   */
  async verify(username: string, password: string, opts: { useCache?: boolean; app?: AppPassword | null } = {}): Promise<AuthOutcome> {
    const hit = opts.useCache === false ? null : await this.cached(username, password);
    if (hit) return { kind: 'ok', ...hit, cached: true };

    const user = await this.users.find(username);
    // The app password the password's public id names (the caller found it and checked it is
    // this user's): its hash is the one verified, never the main password's as well.
    const app = user && opts.app?.userId === user.id ? opts.app : null;
    let ok: boolean;
    try {
      ok = await this.limiter.schedule(async () => {
        this.verified++;
        if (!user) {
          await verifyPassword(await this.dummy(), password);
          return false;
        }
        return verifyPassword(app ? app.passwordHash : user.passwordHash, password);
      });
    } catch {
      // OVERFLOW dropped the job: the queue is at its high-water mark.
      return { kind: 'busy' };
    }
    if (!ok || !user) return { kind: 'invalid' };

    // Re-read: the user (or the app password) may have changed while we waited in the queue.
    const fresh = await this.users.get(user.id);
    if (!fresh) return { kind: 'invalid' };
    if (!app) return fresh.passwordHash === user.passwordHash ? { kind: 'ok', user: fresh, app: null, cached: false } : { kind: 'invalid' };
    const freshApp = await this.apps?.get(app.id);
    if (!freshApp || freshApp.passwordHash !== app.passwordHash || freshApp.userId !== fresh.id) return { kind: 'invalid' };
    return { kind: 'ok', user: fresh, app: freshApp, cached: false };
  }

  /**
   * What follows a login the caller accepted: the hash is brought to the configured
   * parameters and the credential is cached. Never before acceptance: a right password
   * refused (a foreign network) must leave no trace and cost no extra time before its 535.
   */
  async accepted(user: User, username: string, password: string, app: AppPassword | null = null): Promise<void> {
    // App passwords keep the parameters they were made with (a new one takes the current ones).
    if (!app && needsRehash(user.passwordHash, this.opts.params)) {
      const rehashed = await hashPassword(password, this.opts.params);
      await this.users.rehash(user.id, rehashed, this.opts.clock.now());
    }
    if (this.opts.cacheTtlMs > 0) {
      const fresh = await this.users.get(user.id);
      if (!fresh) return;
      if (this.cache.size >= this.maxEntries) {
        const oldest = this.cache.keys().next().value;
        if (oldest !== undefined) this.cache.delete(oldest);
      }
      this.cache.set(this.key(username, password), { userId: fresh.id, principalRef: fresh.principalRef, appId: app?.id ?? null, appPublicId: app?.publicId ?? null, epoch: fresh.authEpoch, expires: this.opts.clock.now() + this.opts.cacheTtlMs });
    }
  }

  /** Drops every cached credential of one user (same-process changes; others use the epoch). */
  forget(userId: number): void {
    for (const [k, v] of this.cache) if (v.userId === userId) this.cache.delete(k);
  }

  /** Password verifications (argon2) run since start, the dummy ones for unknown users included. */
  get verifications(): number {
    return this.verified;
  }

  get pending(): number {
    const c = this.limiter.counts();
    return (c.QUEUED ?? 0) + (c.RUNNING ?? 0) + (c.EXECUTING ?? 0);
  }

  async stop(): Promise<void> {
    await this.limiter.stop({ dropWaitingJobs: true }).catch(() => undefined);
  }
}
