import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from './log.js';

/** What the metrics read from the running relay at scrape time, not on the hot path. */
export interface MetricsSources {
  /** Spool depth per state (queued, held, waiting-quota). */
  queueDepth(): Record<string, number> | Promise<Record<string, number>>;
  /** SMTP connections open right now. */
  openConnections(): number;
  /** Quarantine releases, deletions and expiries ever made (all processes). */
  quarantineDecisions(): Record<string, number> | Promise<Record<string, number>>;
  /**
   * Whether this node reports the figures every node would read alike from a shared store
   * (queue depth, quarantine decisions): one node at a time does, so a sum over nodes counts
   * them once. Absent: always (one node on its own store).
   */
  reportsShared?(): boolean | Promise<boolean>;
  /** Password verifications (argon2) this process has run. */
  passwordVerifications?(): number;
  /** ms since the epoch when a queue id was minted (the message's arrival). */
  receivedAt(queueId: string): number | null;
  now(): number;
}

type LogEvent = Record<string, unknown> & { event?: unknown };

const label = (v: unknown, fallback = 'unknown'): string => (typeof v === 'string' && v ? v : fallback);

/**
 * Prometheus metrics derived from the structured log events. Every decision already logs
 * exactly one event with a stable name, so counting those events counts the decisions without
 * a second call at each decision site (which would drift from the log). Labels are bounded:
 * reason ids, states, incident kinds, never a user, address or queue id.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly handlers = new Map<string, (e: LogEvent) => void>();
  readonly sessions: Counter;

  constructor(private readonly src: MetricsSources) {
    const r = [this.registry];
    // Process CPU, memory, file descriptors, event loop lag: read at scrape time.
    collectDefaultMetrics({ register: this.registry, prefix: 'postern_' });
    this.sessions = new Counter({ name: 'postern_sessions_total', help: 'SMTP sessions opened', registers: r });
    const auth = new Counter({ name: 'postern_auth_total', help: 'AUTH attempts by outcome (ok, fail, throttled, busy, refused, unavailable: the password backend did not answer, compromised_password) and reason id', labelNames: ['outcome', 'reason'], registers: r });
    new Counter({
      name: 'postern_auth_verifications_total',
      help: 'Password verifications (argon2id) run, dummy ones for unknown users included: the work logins cost',
      registers: r,
      collect() {
        this.reset();
        this.inc(src.passwordVerifications?.() ?? 0);
      },
    });
    const accepted = new Counter({ name: 'postern_messages_accepted_total', help: 'Messages accepted (250 after fsync) by spool state', labelNames: ['state'], registers: r });
    const refused = new Counter({ name: 'postern_messages_refused_total', help: 'Refusals by SMTP stage (mail, rcpt, message) and reason id', labelNames: ['stage', 'reason'], registers: r });
    const suspensions = new Counter({ name: 'postern_suspensions_total', help: 'Users and devices suspended, by principal kind and incident kind', labelNames: ['principal_kind', 'reason'], registers: r });
    const incidents = new Counter({ name: 'postern_incidents_total', help: 'Incidents recorded, by kind', labelNames: ['kind'], registers: r });
    const tls = new Counter({
      name: 'postern_delivery_tls_total',
      help: 'Delivery outcomes per recipient by TLS policy (none, opportunistic, mta-sts, dane, manual) and result (verified, unverified, no-tls)',
      labelNames: ['policy', 'result'],
      registers: r,
    });
    const stsTesting = new Counter({ name: 'postern_mta_sts_testing_total', help: 'Deliveries an MTA-STS policy in mode testing would have deferred under enforce, by reason', labelNames: ['reason'], registers: r });
    const held = new Counter({ name: 'postern_quarantine_held_total', help: 'Messages held in quarantine', registers: r });
    // Shared figures are read once per scrape, by the node that reports them (see reportsShared).
    let shared: Promise<boolean> | null = null;
    const reportsShared = () => (shared ??= Promise.resolve(src.reportsShared?.() ?? true).finally(() => queueMicrotask(() => (shared = null))));
    new Gauge({
      name: 'postern_shared_reporter',
      help: 'Whether this node reports the shared figures (postern_queue_messages, postern_quarantine_decisions_total): one node at a time does, so their sum over nodes is the cluster total',
      registers: r,
      async collect() {
        this.set((await reportsShared().catch(() => false)) ? 1 : 0);
      },
    });
    new Counter({
      name: 'postern_quarantine_decisions_total',
      help: 'Held messages released, deleted or expired, by every node and the CLI (from the audit log); reported by the shared reporter only',
      labelNames: ['action'],
      registers: r,
      async collect() {
        this.reset();
        if (!(await reportsShared())) return;
        const decisions = await src.quarantineDecisions();
        for (const [action, n] of Object.entries(decisions)) this.inc({ action }, n);
      },
    });
    const delivery = new Counter({ name: 'postern_delivery_outcomes_total', help: 'Per-recipient delivery attempts by class (delivered, deferred, failed) and category', labelNames: ['class', 'category'], registers: r });
    const monitored = new Counter({
      name: 'postern_policy_monitor_total',
      help: 'Verdicts a policy in monitor mode would have applied (refuse, suspend, hold, wait), not applied',
      labelNames: ['policy', 'would', 'reason'],
      registers: r,
    });
    const dsns = new Counter({ name: 'postern_dsns_total', help: 'Delivery status notifications queued to senders', registers: r });
    const submitLatency = new Histogram({
      name: 'postern_submission_seconds',
      help: 'End of DATA to the 250 reply (scoring, quota, fsync)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    });
    const deliveryLatency = new Histogram({
      name: 'postern_delivery_seconds',
      help: 'Arrival to final delivery of a recipient, retries included',
      buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 86_400],
      registers: r,
    });
    new Gauge({
      name: 'postern_queue_messages',
      help: 'Messages in the (shared) spool by state; reported by the shared reporter only, so a sum over nodes counts each message once',
      labelNames: ['state'],
      registers: r,
      async collect() {
        this.reset();
        if (!(await reportsShared())) return;
        const depth = await src.queueDepth();
        for (const [state, n] of Object.entries(depth)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'postern_open_connections',
      help: 'SMTP connections open now',
      registers: r,
      collect() {
        this.set(src.openConnections());
      },
    });

    const on = (names: string[], f: (e: LogEvent) => void) => names.forEach((n) => this.handlers.set(n, f));
    on(['auth.ok'], () => auth.inc({ outcome: 'ok', reason: 'none' }));
    for (const outcome of ['fail', 'throttled', 'busy', 'refused', 'unavailable', 'compromised_password']) on([`auth.${outcome}`], (e) => auth.inc({ outcome, reason: label(e.reason) }));
    on(['message.accepted'], (e) => {
      accepted.inc({ state: label(e.state, 'queued') });
      if (typeof e.ms === 'number') submitLatency.observe(e.ms / 1000);
    });
    for (const stage of ['mail', 'rcpt', 'message']) on([`${stage}.refused`], (e) => refused.inc({ stage, reason: label(e.reason) }));
    on(['user.suspended', 'device.suspended'], (e) => suspensions.inc({ principal_kind: label(e.event).split('.')[0]!, reason: label(e.reason) }));
    on(['incident.recorded'], (e) => incidents.inc({ kind: label(e.kind) }));
    on(['message.held'], () => held.inc());
    const final = (e: LogEvent) => {
      const at = typeof e.queue_id === 'string' ? src.receivedAt(e.queue_id) : null;
      if (at !== null) deliveryLatency.observe(Math.max(0, src.now() - at) / 1000);
    };
    // Each recipient's outcome by the TLS policy that decided and what came of it.
    const tlsOf = (e: LogEvent) => tls.inc({ policy: label(e.tls_policy, 'none'), result: !e.tls_version ? 'no-tls' : e.tls_verified === true ? 'verified' : 'unverified' });
    on(['delivery.ok'], (e) => {
      delivery.inc({ class: 'delivered', category: 'none' });
      tlsOf(e);
      final(e);
    });
    on(['delivery.defer'], (e) => {
      delivery.inc({ class: 'deferred', category: label(e.reason) });
      tlsOf(e);
    });
    on(['delivery.fail'], (e) => {
      delivery.inc({ class: 'failed', category: label(e.reason) });
      tlsOf(e);
      final(e);
    });
    on(['delivery.mta_sts_testing'], (e) => stsTesting.inc({ reason: label(e.reason) }));
    on(['dsn.queued'], () => dsns.inc());
    on(['policy.monitor'], (e) => monitored.inc({ policy: label(e.policy), would: label(e.would), reason: label(e.reason, 'none') }));
  }

  /** Counts one log event; a Map lookup for events that are not counted. */
  observe(obj: unknown): void {
    if (typeof obj !== 'object' || obj === null) return;
    const name = (obj as LogEvent).event;
    if (typeof name !== 'string') return;
    this.handlers.get(name)?.(obj as LogEvent);
  }
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/**
 * A logger that shows every event to `observe` before pino filters by level: an operator who
 * runs at level "warn" to quiet the log must not blank the counters. Everything else (child,
 * flush, level) is pino's own, through the prototype.
 */
export function tapLogger(base: Logger, observe: (obj: unknown) => void): Logger {
  const tapped = Object.create(base) as Logger;
  for (const level of LEVELS) {
    Object.defineProperty(tapped, level, {
      // Looked up per call: pino swaps a method for a no-op when the level changes.
      value: (...args: unknown[]) => {
        observe(args[0]);
        (base[level] as (...a: unknown[]) => void).apply(base, args);
      },
      enumerable: false,
    });
  }
  return tapped;
}
