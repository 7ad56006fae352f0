import type { Clock } from '../domain/clock.js';
import type { PrincipalRef, QueueState } from '../domain/types.js';
import { principalFields, type Logger } from '../obs/log.js';
import { decideQuota, distinctRecipients, type Limits } from '../policy/limits.js';
import type { Store } from '../store/index.js';
import { SqliteLedger, type QuotaLedger, type QuotaPrincipal } from './ledger.js';

export interface QuotaConfig extends Limits {
  /** Waiting messages beyond which new mail is refused with 451 4.7.1; 0 = one window's worth. */
  ceiling: number;
  /** false: no quota at all (no ledger work); for measuring what the limiter costs. */
  enabled?: boolean;
}

/**
 * Slow first, then refuse. Mail within a principal's rate goes to delivery at once; mail over
 * it is accepted and waits in the spool (state waiting-quota) and drain() hands it on, paced,
 * as quota frees; once too much waits, the protocol refuses new mail with a temporary error.
 * Order is first come, first served: while a principal has mail waiting, new mail waits
 * behind it even when the window has room, so a steady sender's oldest mail is never
 * overtaken for good. When an admin raises the limits, the next drain releases at once what
 * they have room for (see drainNow), and new mail goes at once again when nothing waits.
 * Each decision is one atomic step on the ledger, so it is exact under concurrency and
 * survives restarts. Waiting mail and the ceiling are per node (each node has its own
 * spool); the quota itself is global when the ledger is Redis.
 */
export class QuotaGate {
  readonly ledger: QuotaLedger;

  constructor(
    private readonly repo: Store['limits'],
    private readonly defaults: QuotaConfig,
    private readonly clock: Clock,
    private readonly log: Logger,
    ledger?: QuotaLedger,
    /** "One drainer at a time" across processes sharing the store, and this process's name in it. */
    private readonly drainLease?: { leases: Pick<Store['leases'], 'take' | 'give'>; owner: string },
  ) {
    this.ledger = ledger ?? new SqliteLedger(repo);
  }

  async limitsFor(principal: QuotaPrincipal): Promise<Limits> {
    const o = await this.repo.override(principal.ref);
    return {
      messagesPerHour: o?.messagesPerHour ?? this.defaults.messagesPerHour,
      recipientsPerHour: o?.recipientsPerHour ?? this.defaults.recipientsPerHour,
      recipientsPerDay: o?.recipientsPerDay ?? this.defaults.recipientsPerDay,
    };
  }

  async ceilingFor(principal: QuotaPrincipal): Promise<number> {
    return this.defaults.ceiling || (await this.limitsFor(principal)).messagesPerHour;
  }

  /** The spool state for a message about to be accepted: queued if quota allows, else waiting. */
  async admit(principal: QuotaPrincipal, rcpts: string[]): Promise<QueueState> {
    if (this.defaults.enabled === false) return 'queued';
    // Mail already waiting goes first: a new message must not overtake it.
    if ((await this.repo.waiting(principal.ref)).messages > 0) return 'waiting-quota';
    const d = await this.ledger.reserve(principal, distinctRecipients(rcpts), await this.limitsFor(principal), this.clock.now(), false);
    return d.admit ? 'queued' : 'waiting-quota';
  }

  /** Null while new mail is welcome, else when to come back. */
  async refusal(principal: QuotaPrincipal): Promise<{ retryAt: number } | null> {
    if (this.defaults.enabled === false) return null;
    if ((await this.repo.waiting(principal.ref)).messages < (await this.ceilingFor(principal))) return null;
    // Room opens when the oldest waiting message can leave: the same paced decision drain() makes.
    const now = this.clock.now();
    const d = decideQuota(await this.limitsFor(principal), await this.ledger.usage(principal, now), 1, now, true);
    return { retryAt: d.admit ? now : d.retryAt };
  }

  /** Largest number of distinct recipients one message of this principal could ever be admitted with. */
  async maxRecipients(principal: QuotaPrincipal): Promise<number> {
    if (this.defaults.enabled === false) return Infinity;
    const l = await this.limitsFor(principal);
    return Math.min(l.recipientsPerHour, l.recipientsPerDay);
  }

  /** Hands waiting mail to delivery as quota frees, paced; returns the ids released. */
  async drain(): Promise<string[]> {
    // One drain at a time: overlapping runs (a slow Redis) would reserve quota twice for the
    // same oldest message.
    if (this.draining) return [];
    this.draining = true;
    try {
      // Across processes too: two drainers would each see the same oldest message waiting
      // and hand it on twice. The lease outlives a drain that hangs only by a minute.
      const lease = this.drainLease;
      const now = this.clock.now();
      if (lease && !(await lease.leases.take('quota-drain', lease.owner, now, now + 60_000))) return [];
      try {
        return await this.drainNow();
      } finally {
        await lease?.leases.give('quota-drain', lease.owner);
      }
    } finally {
      this.draining = false;
    }
  }

  private draining = false;

  /**
   * The limits each principal with waiting mail had at this process's last drain. Memory, not
   * the store: a drain that has not seen the old limits (after a restart, or the first drain
   * on another node) paces as usual, which never sends faster than before the change.
   */
  private drainedUnder = new Map<PrincipalRef, Limits>();

  private async drainNow(): Promise<string[]> {
    const now = this.clock.now();
    const released: string[] = [];
    const seen = new Map<PrincipalRef, Limits>();
    for (const principal of await this.repo.principalsWaiting()) {
      const limits = await this.limitsFor(principal);
      const before = this.drainedUnder.get(principal.ref);
      seen.set(principal.ref, limits);
      // Pacing spreads a backlog over the hour as the window slides, so that it does not
      // leave in one burst (issue 4). Limits raised since the last drain (postern user limits)
      // are an admin's decision that this mail may go: what the new limits have room for
      // leaves now, oldest first, and only the rest is paced, at the new rate.
      const paced = !(before && raised(before, limits));
      for (;;) {
        const next = await this.repo.oldestWaiting(principal.ref);
        if (!next) break;
        // Limits lowered below this message's recipients: it could never leave, and everything
        // behind it would wait forever. An admin decides (postern quarantine).
        if (distinctRecipients(next.rcpts) > (await this.maxRecipients(principal))) {
          await this.repo.holdOne(next.id, 'more distinct recipients than the current limits allow', now);
          this.log.warn({ event: 'quota.held', ...principalFields(principal), queue_id: next.id });
          continue;
        }
        const d = await this.ledger.reserve(principal, distinctRecipients(next.rcpts), limits, now, paced);
        if (!d.admit) break;
        // Promotion fails only if an admin deleted or released it meanwhile: the quota
        // taken for it is then spent, erring on the side of sending less.
        if (!(await this.repo.promote(next.id, now))) continue;
        released.push(next.id);
        this.log.info({ event: 'quota.released', ...principalFields(principal), queue_id: next.id });
      }
    }
    this.drainedUnder = seen;
    await this.repo.purge(now);
    return released;
  }
}

/** Any of the three limits higher than before. */
const raised = (before: Limits, now: Limits) =>
  now.messagesPerHour > before.messagesPerHour || now.recipientsPerHour > before.recipientsPerHour || now.recipientsPerDay > before.recipientsPerDay;
