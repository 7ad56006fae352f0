import Bottleneck from 'bottleneck';
import { createHmac, randomBytes, randomInt } from 'node:crypto';
import type { Clock } from '../domain/clock.js';
import type { CaughtPassword, User } from '../domain/types.js';
import type { AppPassword } from '../store/app-passwords.js';
import type { Store } from '../store/index.js';
import type { DovecotAuthRequest, DovecotAuthResult } from './dovecot.js';
import { hashPassword, needsRehash, verifyPassword, type Argon2Params } from './passwords.js';

export type AuthOutcome =
  /**
   * `app`: the app password that was used, null for the main password. `caught`: what a
   * suspension records of the directory password used (see Authenticator.fingerprint), null
   * for a password of Postern's own.
   */
  | { kind: 'ok'; user: User; app: AppPassword | null; cached: boolean; caught: CaughtPassword | null }
  /**
   * Unknown user or wrong password: indistinguishable by design. `why` is for the log only:
   * the directory accepted the password of a name without a Postern user, or the password is
   * one a compromise signal caught.
   */
  | { kind: 'invalid'; why?: 'unprovisioned' | 'compromised'; /** The directory said so, after its own failure delay. */ delayed?: boolean }
  | { kind: 'busy' } // too many verifications queued: a temporary failure
  | { kind: 'unavailable'; reason: string }; // the directory did not answer: a temporary failure, never a wrong password

export type { CaughtPassword };

/** The client of a login, as the directory is told about it (Dovecot's rip, lip, secured). */
export interface LoginClient {
  id: string;
  /** The client's address, normalised (no ::ffff: prefix). */
  ip: string;
  secure: boolean;
  /** The address and port the client connected to, and its own port (for the directory). */
  localIp?: string;
  localPort?: number;
  port?: number;
}

/** Where passwords live when they are not Postern's own ([auth] backend = "dovecot"): DovecotAuthClient. */
export interface Directory {
  authenticate(req: DovecotAuthRequest): Promise<DovecotAuthResult>;
}

export interface DirectoryOptions {
  client: Directory;
  credentials: Pick<Store['credentials'], 'secret' | 'isCompromised'>;
  /** A row for a directory user without one ([auth] provision = "template"); null: refused. */
  provision?: (name: string) => Promise<User | null>;
}

export interface AuthenticatorOptions {
  params: Argon2Params;
  maxConcurrent: number;
  maxQueued: number;
  cacheTtlMs: number;
  cacheMaxEntries?: number;
  clock: Clock;
  /** Check main passwords in a directory (Dovecot) instead of Postern's hashes; app passwords stay Postern's. */
  directory?: DirectoryOptions;
}

interface CacheEntry {
  userId: number;
  /** Ids may be reused after a delete (SQLite): the principal number and the app password's public id are not. */
  principalRef: number;
  appPublicId: string | null;
  /** The app password proven, null for the main password. */
  appId: number | null;
  /** The directory's name for the account (Dovecot's user=), null for a password of Postern's own. */
  account: string | null;
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
  private fingerprintKey: Promise<Buffer> | undefined;
  private verified = 0;
  private asked = 0;
  private directoryPending = 0;
  /** How long the directory took over its last wrong passwords (ms), a ring. */
  private readonly failTimes = new Float64Array(32);
  private failCount = 0;

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
  async cached(username: string, password: string): Promise<{ user: User; app: AppPassword | null; caught: CaughtPassword | null } | null> {
    const key = this.key(username, password);
    const hit = this.cache.get(key);
    if (!hit) return null;
    const user = await this.users.get(hit.userId);
    // A revoked app password bumps its user's epoch; the row is read again all the same.
    const app = hit.appId === null ? null : ((await this.apps?.get(hit.appId)) ?? undefined);
    const same = user && user.principalRef === hit.principalRef && (app === null || (app !== undefined && app.publicId === hit.appPublicId && app.userId === user.id));
    if (user && same && user.authEpoch === hit.epoch && hit.expires > this.opts.clock.now()) {
      return { user, app: app ?? null, caught: hit.account === null ? null : { account: hit.account, fingerprint: await this.fingerprint(hit.account, password) } };
    }
    this.cache.delete(key);
    return null;
  }

  /**
   * Checks a password. `useCache: false` makes the check cost a full verification even when
   * the cache holds the answer: the caller asks for that when the login will be refused
   * anyway (a client outside the user's networks), so that a right password refused costs
   * what a wrong one costs, in time and in place in the verification queue.
   */
  async verify(username: string, password: string, opts: { useCache?: boolean; app?: AppPassword | null; client?: LoginClient } = {}): Promise<AuthOutcome> {
    const hit = opts.useCache === false ? null : await this.cached(username, password);
    if (hit) return { kind: 'ok', ...hit, cached: true };

    const user = await this.users.find(username);
    // The app password the password's public id names (the caller found it and checked it is
    // this user's): its hash is the one verified, never the main password's as well.
    const app = user && opts.app?.userId === user.id ? opts.app : null;
    if (this.opts.directory && !app) return this.verifyInDirectory(this.opts.directory, username, password, user, opts.client);
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
    if (!app) return fresh.passwordHash === user.passwordHash ? { kind: 'ok', user: fresh, app: null, cached: false, caught: null } : { kind: 'invalid' };
    const freshApp = await this.apps?.get(app.id);
    if (!freshApp || freshApp.passwordHash !== app.passwordHash || freshApp.userId !== fresh.id) return { kind: 'invalid' };
    return { kind: 'ok', user: fresh, app: freshApp, cached: false, caught: null };
  }

  /**
   * A main password checked by the directory. Every name is asked, known to Postern or not,
   * so that a directory outage answers everyone alike (454) and a template can provision a
   * first login. The directory's answer names the account (Dovecot's user=, which may add a
   * realm, change the case or map one name to another): a password caught on that account is
   * refused however the client spelled the name, and Postern's user is the account's, else
   * the one the client named; a template makes one only when neither exists.
   */
  private async verifyInDirectory(dir: DirectoryOptions, username: string, password: string, user: User | undefined, client: LoginClient | undefined): Promise<AuthOutcome> {
    // The directory has limits of its own; this bounds what waits here for it.
    if (this.directoryPending >= this.opts.maxConcurrent + this.opts.maxQueued) return { kind: 'busy' };
    this.directoryPending++;
    this.asked++;
    const t0 = performance.now();
    let res: DovecotAuthResult;
    try {
      res = await dir.client.authenticate({
        username,
        password,
        rip: client?.ip ?? '',
        lip: client?.localIp ?? '',
        rport: client?.port,
        lport: client?.localPort,
        secured: client?.secure ?? false,
        session: client?.id,
      });
    } finally {
      this.directoryPending--;
    }
    if (res.kind === 'tempfail') return { kind: 'unavailable', reason: res.reason };
    if (res.kind === 'fail') {
      this.failTimes[this.failCount++ % this.failTimes.length] = performance.now() - t0;
      return { kind: 'invalid', delayed: true };
    }
    const account = res.user;
    const caught = { account, fingerprint: await this.fingerprint(account, password) };
    if (await dir.credentials.isCompromised(caught.fingerprint)) return { kind: 'invalid', why: 'compromised' };
    let row = (account.toLowerCase() === username.toLowerCase() ? user : await this.users.find(account)) ?? user;
    if (!row && dir.provision) row = (await dir.provision(account)) ?? undefined;
    if (!row) return { kind: 'invalid', why: 'unprovisioned' };
    const fresh = await this.users.get(row.id);
    if (!fresh || fresh.principalRef !== row.principalRef) return { kind: 'invalid' };
    return { kind: 'ok', user: fresh, app: null, cached: false, caught };
  }

  /**
   * How long the directory took to answer one of its recent wrong passwords (ms), drawn at
   * random from the last ones seen; 0 without a directory. Dovecot answers a wrong password
   * after its auth_failure_delay (2 s by default, in 0.5 s batches) and a right one at once,
   * so a right password refused anyway (a foreign network, a caught password, a user without
   * a Postern user, a suspension) must wait as long, or its 535 would tell a thief it was
   * right. Before any wrong password has been seen: 2.5 s, Dovecot's default delay and batch.
   */
  failureDelayMs(): number {
    if (!this.opts.directory) return 0;
    const seen = Math.min(this.failCount, this.failTimes.length);
    return seen === 0 ? 2500 : this.failTimes[randomInt(seen)]!;
  }

  /**
   * The keyed fingerprint of a directory password: HMAC-SHA256 under the store-wide key (made
   * once, shared by every node) of the account's name, in lower case, and the password.
   * Without the key it is useless for guessing; with the account in it, two accounts with
   * the same password have different fingerprints.
   */
  async fingerprint(account: string, password: string): Promise<string> {
    const dir = this.opts.directory;
    if (!dir) throw new Error('fingerprints are for directory passwords');
    const key = (this.fingerprintKey ??= dir.credentials
      .secret('password-fingerprint', randomBytes(32).toString('base64'), this.opts.clock.now())
      .then((v) => Buffer.from(v, 'base64')));
    try {
      return createHmac('sha256', await key).update(account.toLowerCase()).update('\0').update(password).digest('base64');
    } catch (e) {
      this.fingerprintKey = undefined; // a store error: ask again next time
      throw e;
    }
  }

  /**
   * What follows a login the caller accepted: the hash is brought to the configured
   * parameters and the credential is cached. Never before acceptance: a right password
   * refused (a foreign network) must leave no trace and cost no extra time before its 535.
   */
  async accepted(user: User, username: string, password: string, app: AppPassword | null = null, account: string | null = null): Promise<void> {
    // App passwords keep the parameters they were made with (a new one takes the current ones).
    // A directory's password is never hashed into Postern's store.
    if (!app && !this.opts.directory && needsRehash(user.passwordHash, this.opts.params)) {
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
      this.cache.set(this.key(username, password), { userId: fresh.id, principalRef: fresh.principalRef, appId: app?.id ?? null, appPublicId: app?.publicId ?? null, account, epoch: fresh.authEpoch, expires: this.opts.clock.now() + this.opts.cacheTtlMs });
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

  /** Main passwords sent to the directory since start. */
  get directoryChecks(): number {
    return this.asked;
  }

  get pending(): number {
    const c = this.limiter.counts();
    return (c.QUEUED ?? 0) + (c.RUNNING ?? 0) + (c.EXECUTING ?? 0);
  }

  async stop(): Promise<void> {
    await this.limiter.stop({ dropWaitingJobs: true }).catch(() => undefined);
  }
}
