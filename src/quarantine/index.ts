import { getDomain } from 'tldts';
import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import type { AssessInput, Assessment, PrincipalRef } from '../domain/types.js';
import { principalFields, type Logger } from '../obs/log.js';
import { systemMessage } from '../notify/compose.js';
import { nearRateLimit, scoreMessage, SIGNALS, unassessable, type DomainTools, type ScoringConfig, type Signal } from '../policy/scoring.js';
import { headerEnd, rfc5322Date } from '../spool/message.js';
import type { QuotaGate } from '../spool/quota.js';
import type { Spool } from '../spool/spool.js';
import type { Store } from '../store/index.js';
import type { DecidedMessage } from '../store/quarantine.js';
import { parseFacts } from './parse.js';
import { summarize } from './summary.js';

export interface QuarantineDeps {
  store: Pick<Store, 'bindings' | 'incidents' | 'delivery' | 'quarantine' | 'users' | 'limits' | 'leases'>;
  spool: Spool;
  clock: Clock;
  log: Logger;
  /** The principal's rate limits; without them nobody is ever near one. */
  quota?: Pick<QuotaGate, 'limitsFor'>;
  /**
   * Final remote verdicts for a principal ("user:alice") in the recent window. Default: the
   * delivery outcomes that src/delivery records (the same counts as its Reputation).
   */
  remoteOutcomes?: (principal: PrincipalRef, now: number) => { total: number; rejected: number } | Promise<{ total: number; rejected: number }>;
}

const DAY = 86_400_000;
// Retention is counted in days: a sweep an hour late deletes nothing that matters.
const SWEEP_INTERVAL_MS = 3_600_000;
// Tombstones guard against a repeated or scripted release; a quarter is long enough for that.
const DECISION_TTL_MS = 90 * DAY;

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

export function scoringConfig(q: Config['quarantine']): ScoringConfig {
  const weights = Object.fromEntries(SIGNALS.map((s) => [s, q.weights[s.toLowerCase() as keyof typeof q.weights]])) as Record<Signal, number>;
  return {
    threshold: q.threshold,
    weights,
    manyRecipients: q.many_recipients,
    manyDomains: q.many_domains,
    shorteners: new Set(q.shorteners.map((s) => s.toLowerCase())),
    rejectionRate: q.rejection_rate,
    rejectionMinSample: q.rejection_min_sample,
  };
}

export const domainTools: DomainTools = {
  registrable: (host) => getDomain(host, { allowPrivateDomains: true }),
};

/**
 * The acting side of quarantine: gathers what scoring needs (parsed message, the principal's
 * bindings, incidents and history), asks policy, and after the spool commit records the
 * outcome, logs it and queues the sender's notice. Also expires held mail.
 */
export class Quarantine {
  readonly scoring: ScoringConfig;
  private timer: NodeJS.Timeout | undefined;
  /** What assess found new per message, so onAccepted writes only those (usually none). */
  private readonly fresh = new WeakMap<AssessInput, string[]>();

  constructor(
    private readonly cfg: Config,
    private readonly deps: QuarantineDeps,
  ) {
    this.scoring = scoringConfig(cfg.quarantine);
  }

  /** The MessageAssessor: scores the message before it is committed. Writes nothing. */
  readonly assess = async (input: AssessInput): Promise<Assessment> => {
    if (!this.cfg.quarantine.enabled) return { state: 'queued', score: 0, reasons: [] };
    const { store } = this.deps;
    const key = principalFields(input.principal);
    const ref = input.principal.ref;
    try {
      const facts = await parseFacts(input.data);
      const senders = await store.bindings.values(input.principal.kind, input.principal.id, 'sender', input.now);
      const window = this.cfg.delivery.reject_window_minutes * 60_000;
      const newDomains = await store.quarantine.newDomains(ref, input.envelope.rcptTo.map(domainOf));
      this.fresh.set(input, newDomains);
      const state = {
        rcptTo: input.envelope.rcptTo,
        allowedSenders: senders.length ? senders : null,
        newDomains,
        openIncident: await store.incidents.hasOpen(input.principal.ref),
        nearRateLimit: this.deps.quota ? nearRateLimit(await this.deps.quota.limitsFor(input.principal), await store.limits.usage(ref, input.now), this.cfg.quarantine.near_rate_limit) : false,
        remoteOutcomes: this.deps.remoteOutcomes ? await this.deps.remoteOutcomes(ref, input.now) : await store.delivery.outcomeCounts(ref, input.now - window),
      };
      return scoreMessage(facts, state, this.scoring, domainTools);
    } catch (e) {
      this.deps.log.error({ event: 'quarantine.error', queue_id: input.id, ...key, err: (e as Error).message });
      return unassessable((e as Error).message, this.scoring.threshold);
    }
  };

  /** The AcceptedHook: the message is on disk; record, log, and tell the sender. */
  readonly onAccepted = (input: AssessInput, assessment: Assessment): void => {
    const { store, log } = this.deps;
    const key = principalFields(input.principal);
    if (assessment.state !== 'held') {
      // Queued or waiting for quota: it will be delivered, so its domains are known from now on.
      // Only the ones assess found new need writing (all of them if it did not run).
      const domains = this.fresh.get(input) ?? input.envelope.rcptTo.map(domainOf);
      // After the 250: a failure here (another process's lock) must not reach the client's
      // callback; the cost is a NEW_DOMAIN signal that may fire once more.
      if (domains.length) {
        store.quarantine.addDomains(input.principal.ref, domains, input.now).catch((e: unknown) => {
          log.error({ event: 'quarantine.error', queue_id: input.id, ...key, err: (e as Error).message });
        });
      }
      return;
    }
    log.warn({
      event: 'message.held',
      queue_id: input.id,
      ...key,
      from: input.envelope.mailFrom,
      rcpts: input.envelope.rcptTo.length,
      score: assessment.score,
      reason: assessment.reasons.map((r) => r.id).join(','),
      reasons: assessment.reasons,
      verdict: 'held',
    });
    if (this.cfg.quarantine.notify_sender) {
      this.notifySender(input).catch((e: unknown) => log.error({ event: 'quarantine.notice_error', queue_id: input.id, err: (e as Error).message }));
    }
  };

  private async notifySender(input: AssessInput): Promise<void> {
    const { store, spool, log } = this.deps;
    const key = principalFields(input.principal);
    const user = input.principal.kind === 'user' ? await store.users.get(input.principal.id) : undefined;
    const to = user?.notifyAddress || input.envelope.mailFrom;
    if (!to) return;
    // One notice per burst, as for incidents: a stolen account sending a thousand held
    // messages must not bury its owner's inbox in a thousand notices. A lease in the store,
    // so every process sharing it counts the same burst.
    if (!(await store.leases.firstInBurst(`held-notice ${input.principal.ref}`, input.now, input.now + this.cfg.notify.burst_minutes * 60_000))) {
      log.info({ event: 'quarantine.notice_skipped', queue_id: input.id, ...key, reason: 'burst' });
      return;
    }
    const { subject } = await summarize(input.data.subarray(0, headerEnd(input.data)));
    const rcpts = input.envelope.rcptTo;
    const helpdesk = this.cfg.notify.helpdesk ? ` (${this.cfg.notify.helpdesk})` : '';
    const text = [
      'Your message',
      '',
      `  Subject:  ${subject.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 200) || '(none)'}`,
      `  To:       ${rcpts.slice(0, 3).join(', ')}${rcpts.length > 3 ? ` and ${rcpts.length - 3} more` : ''}`,
      `  Sent:     ${rfc5322Date(input.now)}`,
      `  Queue ID: ${input.id}`,
      '',
      'is held for review by the mail administrators and has not been sent yet.',
      `If it is released it will be delivered unchanged; if not, it is deleted after ${this.cfg.quarantine.retention_days} days.`,
      '',
      `If you did not send this message, tell your helpdesk${helpdesk} at once:`,
      'someone else may be using your account.',
    ].join('\n');
    // Why it was held is not said: the notice may be read by whoever stole the account.
    const notice = systemMessage({ from: this.cfg.notify.from || `postmaster@${this.cfg.server.hostname}`, to: [to], subject: 'Your message is held for review', text }, this.cfg.server.hostname, input.now);
    await spool.accept(notice);
    log.info({ event: 'quarantine.notice_queued', queue_id: input.id, notice_id: notice.id, ...key, to });
  }

  /** Deletes held mail past retention; each one is logged and audited. Returns what it deleted. */
  async sweep(now = this.deps.clock.now()): Promise<DecidedMessage[]> {
    const { store, log } = this.deps;
    const days = this.cfg.quarantine.retention_days;
    const expired = await store.quarantine.expire(now - days * DAY, { actor: 'postern', reason: `held longer than retention_days = ${days}`, now });
    for (const m of expired) {
      log.info({ event: 'quarantine.expired', queue_id: m.id, ...principalFields(m.principal), from: m.mailFrom, rcpts: m.recipients, score: m.score, verdict: 'deleted', reason: 'retention' });
    }
    await store.quarantine.pruneDecisions(now - DECISION_TTL_MS);
    return expired;
  }

  /** Sweeps now and then every hour until stop(). */
  start(): void {
    const run = () => {
      this.sweep().catch((e: unknown) => this.deps.log.error({ event: 'quarantine.sweep_error', err: (e as Error).message }));
    };
    run();
    this.timer = setInterval(run, SWEEP_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
