import type { Redis } from 'ioredis';
import { DAY, HOUR, decideQuota, type Limits, type QuotaDecision, type Usage } from '../policy/limits.js';

const MINUTE = 60_000;
import type { Store } from '../store/index.js';
import { principalLabel, type Principal } from '../domain/types.js';

/** Whose quota: the principal's number for the SQLite ledger, its name for Redis (see RedisLedger). */
export type QuotaPrincipal = Pick<Principal, 'kind' | 'name' | 'ref'>;

/**
 * Where quota usage is counted. Embedded: the SQLite ledger (exact, one IMMEDIATE transaction
 * per decision, shared by every process on the same database). Redis: one hash per
 * principal, so several Postern nodes behind one address enforce one combined limit.
 */
export interface QuotaLedger {
  reserve(principal: QuotaPrincipal, recipients: number, limits: Limits, now: number, paced: boolean): Promise<QuotaDecision>;
  usage(principal: QuotaPrincipal, now: number): Promise<Usage>;
  close(): Promise<void>;
}

export class SqliteLedger implements QuotaLedger {
  constructor(private readonly repo: Store['limits']) {}
  async reserve(principal: QuotaPrincipal, recipients: number, limits: Limits, now: number, paced: boolean) {
    return this.repo.reserve(principal.ref, recipients, now, (usage) => decideQuota(limits, usage, recipients, now, paced));
  }
  async usage(principal: QuotaPrincipal, now: number) {
    return this.repo.usage(principal.ref, now);
  }
  async close() {}
}

/**
 * Redis ledger: one hash per principal with a messages and a recipients counter per minute
 * ("m:<minute>", "r:<minute>") and the time of the last release ("last"), the same layout
 * as the SQLite buckets. A reservation reads the hash under WATCH, decides with the same pure
 * decideQuota, and increments in MULTI/EXEC, retrying if another node wrote in between.
 * Reservations of one principal are chained in-process, so retries only happen across nodes.
 * Times come from Postern's clock, not Redis's, so the injected clock governs both ledgers.
 * Keyed by the principal's name ("user:alice"): nodes that each have their own database
 * share no other identity. So a user deleted and added again under the same name finds the
 * old one's usage of the last day here, where the SQLite ledger starts it afresh.
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

  private static usageOf(fields: Record<string, string>, now: number): { usage: Usage; stale: string[] } {
    const u: Usage = { messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null };
    const hour = Math.floor((now - HOUR) / MINUTE);
    const day = Math.floor((now - DAY) / MINUTE);
    const stale: string[] = [];
    for (const [f, v] of Object.entries(fields)) {
      if (f === 'last') {
        const at = Number(v);
        if (at > now - DAY) u.lastAt = at;
        continue;
      }
      const minute = Number(f.slice(2));
      if (minute <= day) {
        stale.push(f);
        continue;
      }
      const n = Number(v);
      if (f.startsWith('r:')) {
        u.recipientsDay += n;
        if (minute > hour) u.recipientsHour += n;
      } else if (minute > hour) {
        u.messagesHour += n;
        u.oldestHourAt = Math.min(u.oldestHourAt ?? minute * MINUTE, minute * MINUTE);
      }
    }
    return { usage: u, stale };
  }

  async usage(principal: QuotaPrincipal, now: number): Promise<Usage> {
    return RedisLedger.usageOf(await this.redis.hgetall(this.prefix + principalLabel(principal)), now).usage;
  }

  reserve(who: QuotaPrincipal, recipients: number, limits: Limits, now: number, paced: boolean): Promise<QuotaDecision> {
    const principal = principalLabel(who);
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
    const minute = Math.floor(now / MINUTE);
    for (let attempt = 0; attempt < 50; attempt++) {
      await this.redis.watch(key);
      const { usage, stale } = RedisLedger.usageOf(await this.redis.hgetall(key), now);
      const d = decideQuota(limits, usage, recipients, now, paced);
      if (!d.admit) {
        await this.redis.unwatch();
        return d;
      }
      const tx = this.redis.multi().hincrby(key, `m:${minute}`, 1).hincrby(key, `r:${minute}`, recipients).hset(key, 'last', String(now));
      if (stale.length) tx.hdel(key, ...stale);
      const res = await tx.pexpire(key, DAY + HOUR).exec();
      if (res) return d; // null: another node wrote the key first; read again
    }
    throw new Error(`quota reservation for ${principal} kept conflicting in Redis`);
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
