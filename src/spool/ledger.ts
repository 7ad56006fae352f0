import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DAY, HOUR, decideQuota, type Limits, type QuotaDecision, type Usage } from '../policy/limits.js';
import type { LimitRepo } from '../store/limits.js';

/**
 * Where quota usage is counted. Embedded: the SQLite ledger (exact, one IMMEDIATE transaction
 * per decision, shared by every process on the same database). Redis: one sorted set per
 * principal, so several Postern nodes behind one address enforce one combined limit.
 */
export interface QuotaLedger {
  reserve(principal: string, recipients: number, limits: Limits, now: number, paced: boolean): Promise<QuotaDecision>;
  usage(principal: string, now: number): Promise<Usage>;
  close(): Promise<void>;
}

export class SqliteLedger implements QuotaLedger {
  constructor(private readonly repo: LimitRepo) {}
  async reserve(principal: string, recipients: number, limits: Limits, now: number, paced: boolean) {
    return this.repo.reserve(principal, recipients, now, (usage) => decideQuota(limits, usage, recipients, now, paced));
  }
  async usage(principal: string, now: number) {
    return this.repo.usage(principal, now);
  }
  async close() {}
}

/**
 * Redis ledger. Members are "at:recipients:random" scored by `at`; a reservation reads the
 * set under WATCH, decides with the same pure decideQuota as the embedded ledger, and adds
 * its member in MULTI/EXEC, retrying if another node wrote in between. Reservations of one
 * principal are chained in-process, so retries only happen across nodes. Times come from
 * Postern's clock, not Redis's, so the injected clock governs both ledgers alike.
 */
export class RedisLedger implements QuotaLedger {
  private readonly chains = new Map<string, Promise<unknown>>();

  private constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** ioredis is loaded only when [limits] redis is set: most installations never need it. */
  static async connect(url: string, prefix = 'postern:quota:'): Promise<RedisLedger> {
    const { Redis } = await import('ioredis');
    return new RedisLedger(new Redis(url, { maxRetriesPerRequest: 2, enableOfflineQueue: true }), prefix);
  }

  private static usageOf(members: string[], now: number): Usage {
    const u: Usage = { messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null };
    for (const m of members) {
      const [atS, rS] = m.split(':');
      const at = Number(atS);
      const r = Number(rS);
      if (at <= now - DAY) continue;
      u.recipientsDay += r;
      u.lastAt = Math.max(u.lastAt ?? at, at);
      if (at > now - HOUR) {
        u.messagesHour += 1;
        u.recipientsHour += r;
        u.oldestHourAt = Math.min(u.oldestHourAt ?? at, at);
      }
    }
    return u;
  }

  async usage(principal: string, now: number): Promise<Usage> {
    return RedisLedger.usageOf(await this.redis.zrangebyscore(this.prefix + principal, now - DAY, '+inf'), now);
  }

  reserve(principal: string, recipients: number, limits: Limits, now: number, paced: boolean): Promise<QuotaDecision> {
    const prev = this.chains.get(principal) ?? Promise.resolve();
    const next = prev.then(() => this.reserveNow(principal, recipients, limits, now, paced));
    const settled = next.catch(() => undefined);
    this.chains.set(principal, settled);
    void settled.then(() => {
      if (this.chains.get(principal) === settled) this.chains.delete(principal);
    });
    return next;
  }

  private async reserveNow(principal: string, recipients: number, limits: Limits, now: number, paced: boolean): Promise<QuotaDecision> {
    const key = this.prefix + principal;
    for (let attempt = 0; attempt < 50; attempt++) {
      await this.redis.watch(key);
      const members = await this.redis.zrangebyscore(key, now - DAY, '+inf');
      const d = decideQuota(limits, RedisLedger.usageOf(members, now), recipients, now, paced);
      if (!d.admit) {
        await this.redis.unwatch();
        return d;
      }
      const res = await this.redis
        .multi()
        .zremrangebyscore(key, '-inf', now - DAY)
        .zadd(key, now, `${now}:${recipients}:${randomBytes(6).toString('hex')}`)
        .pexpire(key, DAY + HOUR)
        .exec();
      if (res) return d; // null: another node wrote the key first; read again
    }
    throw new Error(`quota reservation for ${principal} kept conflicting in Redis`);
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
