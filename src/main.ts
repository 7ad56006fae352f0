import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.js';
import { explainListenError, startupProblems, StartupError, storeOpenProblem } from './config/check.js';
import { outboundIdentityProblem } from './config/identity.js';
import { ConfigError } from './config/load.js';
import { nodeName } from './config/node.js';
import { systemClock, type Clock } from './domain/clock.js';
import { importDkimFiles } from './delivery/dkim.js';
import { startDelivery, type Delivery } from './delivery/index.js';
import type { Authenticator } from './identity/authenticator.js';
import { startIncidents } from './notify/index.js';
import type { IncidentResponder } from './notify/incidents.js';
import { AdminLog } from './obs/admin-log.js';
import { startMetricsServer, type MetricsServer } from './obs/http.js';
import { createLogger, type Logger } from './obs/log.js';
import { Metrics, tapLogger } from './obs/metrics.js';
import { parseListen } from './protocol/listen.js';
import { startListeners, type Listeners } from './protocol/listeners.js';
import { loadTls } from './protocol/tls.js';
import { startTicketKeys, type TicketKeyRing } from './protocol/tickets.js';
import { GeoService } from './geo/service.js';
import { Quarantine } from './quarantine/index.js';
import { reloadRelay, type ReloadOutcome } from './reload.js';
import { startQuota, startSpool } from './spool/index.js';
import { queueIdTime } from './spool/message.js';
import type { QuotaGate } from './spool/quota.js';
import { openConfiguredStore, type Store } from './store/index.js';
import { processOwner } from './store/shared.js';
import type { ConnectionCounter } from './submission/connections.js';
import { startSubmission } from './submission/index.js';

/** The lease naming the node that reports shared figures in /metrics, and how long it lasts unrenewed. */
const SHARED_REPORTER = 'metrics-shared-reporter';
const SHARED_LEASE_MS = 60_000;

export interface RelayOptions {
  clock?: Clock;
  log?: Logger;
  /** Set in each worker process when [server] workers is above 1 (see src/workers.ts). */
  worker?: WorkerRole;
}

/** What a worker does differently from a relay on its own. */
export interface WorkerRole {
  index: number;
  /** The node's connection table, kept by the primary (max_clients, max_connections_per_ip). */
  connections: ConnectionCounter;
  /** Whether this worker runs delivery (one per node, for its pacing and connection pools). */
  delivers: boolean;
  /** Tells the delivering worker that mail is due (from a worker that does not deliver). */
  wakeDelivery(): void;
}

export interface Relay {
  store: Store;
  log: Logger;
  authenticator: Authenticator;
  incidents: IncidentResponder;
  quota: QuotaGate;
  /** Scoring, held notices and expiry; tests call quarantine.sweep() directly. */
  quarantine: Quarantine;
  /** Bound ports, in the order of submission.listen and submission.listen_tls. */
  ports: { starttls: number[]; tls: number[] };
  /** Outbound delivery, null when [delivery] enabled = false. */
  delivery: Delivery | null;
  /** Prometheus registry and the port of /metrics, null when [metrics] enabled = false. */
  metrics: Metrics;
  metricsPort: number | null;
  /** Logs changes made with the CLI (audit entries) as admin.action; tests call adminLog.poll(). */
  adminLog: AdminLog;
  /** The IP database behind country and ASN bindings: loaded on first need, re-read on SIGHUP. */
  geo: GeoService;
  /** TLS session ticket keys shared through the store; null with [tls] session_tickets = false. */
  tickets: TicketKeyRing | null;
  /** What relay.started (worker.started) said: bound addresses and ports, the engine, the certificate's source. */
  started: Record<string, unknown>;
  /** What /healthz answers for this process. */
  health(): Promise<{ ok: boolean; detail: string }>;
  /** What SIGHUP does with a re-read config: new TLS material and log level; see reload.ts. */
  reload(next: Config): Promise<ReloadOutcome>;
  close(): Promise<void>;
}

/**
 * What every start checks before it serves, run once by the primary of [server] workers
 * before it forks: the outbound identity, the files the config names, the store (opened,
 * so migrated, then closed) and the TLS certificate (made once if self-signed, so the workers
 * all reuse the same one). Throws as startRelay does; resolves with the certificate's source.
 */
export async function preflight(cfg: Config): Promise<'config' | 'generated' | 'reused'> {
  (await checkedStore(cfg)).close();
  return (await loadTls({ ...cfg.tls, dataDir: cfg.server.data_dir, hostname: cfg.server.hostname })).source;
}

/**
 * The checks before anything is served, then the store opened (and migrated): a problem is
 * thrown as a StartupError that names its key and the next step.
 */
async function checkedStore(cfg: Config): Promise<Store> {
  // Refuse before anything is opened: mail sent under a bad HELO identity hurts reputation.
  const identityProblem = outboundIdentityProblem(cfg.identity);
  if (identityProblem) throw new ConfigError(`refusing to start: ${identityProblem}`);
  // The files the config names, checked as `postern config check` does: a missing certificate
  // or an unwritable data_dir is said with its key and the next step, not as a bare ENOENT,
  // and before a database is created beside a certificate that will never load.
  const problems = startupProblems(cfg);
  if (problems.length) throw new StartupError(problems);
  try {
    return await openConfiguredStore(cfg);
  } catch (e) {
    const problem = storeOpenProblem(cfg, e);
    throw problem ? new StartupError([problem]) : e;
  }
}

/**
 * The composition root: opens the store, then starts each part with what it needs and keeps
 * its stop. Nothing here decides anything about mail.
 */
export async function startRelay(cfg: Config, opts: RelayOptions = {}): Promise<Relay> {
  const clock = opts.clock ?? systemClock;
  const worker = opts.worker;
  const baseLog = opts.log ?? createLogger(cfg.log.level, undefined, { worker: worker?.index });
  const store = await checkedStore(cfg);
  // Stopped in reverse order of starting; a failure part-way stops what had started.
  const stops: Array<() => void | Promise<void>> = [() => store.close()];
  // Every stop runs even if one before it failed (the store must close); the first failure
  // is reported once all have run.
  const stopAll = async () => {
    let first: unknown;
    for (const stop of stops.splice(0).reverse()) {
      try {
        await stop();
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw first;
  };
  // This process's name in shared claims and leases (delivery, the quota drain, metrics).
  const owner = processOwner(nodeName(cfg));
  try {
    // Metrics count log events (before the level filter); the sources they read come later.
    const late: { listeners?: Listeners; authenticator?: Authenticator } = {};
    const metrics = new Metrics({
      queueDepth: () => store.queue.depth(),
      openConnections: () => late.listeners?.connections() ?? 0,
      quarantineDecisions: () => store.stats.quarantineDecisions(),
      // One node at a time reports what every node reads alike from the store (see below).
      reportsShared: () => store.leases.take(SHARED_REPORTER, owner, clock.now(), clock.now() + SHARED_LEASE_MS),
      passwordVerifications: () => late.authenticator?.verifications ?? 0,
      receivedAt: queueIdTime,
      now: () => clock.now(),
    });
    // Disabled metrics cost nothing per event: the logger is pino's own.
    const log = cfg.metrics.enabled ? tapLogger(baseLog, (o) => metrics.observe(o)) : baseLog;
    // Loaded only once a binding names a country or an ASN (~25 MB): at start when the store
    // already holds one, so the first such login does not wait; else at the first login that needs it.
    const geo = new GeoService({ countryDb: cfg.geo.country_db, asnDb: cfg.geo.asn_db }, log, clock);
    if (await store.bindings.hasGeoBindings()) geo.preload();
    // Keys left in data_dir/dkim by an older Postern (or copied there) join the shared store.
    await importDkimFiles(store, cfg.server.data_dir, log);
    const tlsMaterial = await loadTls({ ...cfg.tls, dataDir: cfg.server.data_dir, hostname: cfg.server.hostname });

    const spooled = startSpool(cfg, { store });
    stops.push(spooled.stop);
    const { spool, health } = spooled;
    const responder = startIncidents(cfg, { store, spool, clock, log });
    stops.push(responder.stop);
    const { incidents } = responder;
    let delivery: Delivery | null = null;
    const limits = await startQuota(cfg, { store, clock, log, owner, onReleased: () => (delivery ? delivery.scheduler.wake() : worker?.wakeDelivery()) });
    stops.push(limits.stop);
    const { quota } = limits;
    // Scores each message before the spool commit; expires held mail.
    const quarantine = new Quarantine(cfg, { store, spool, clock, log, quota });
    let closing: Promise<void> | undefined;
    const submission = startSubmission(cfg, {
      store,
      spool,
      health,
      incidents,
      quota,
      clock,
      log,
      geo,
      assess: quarantine.assess,
      onAccepted: quarantine.onAccepted,
      isClosing: () => closing !== undefined,
      connections: worker?.connections,
    });
    stops.push(submission.stop);
    late.authenticator = submission.authenticator;
    const healthy = async () => {
      if (closing) return { ok: false, detail: 'shutting down' };
      if (!store.open) return { ok: false, detail: 'store closed' };
      if (!late.listeners?.listening()) return { ok: false, detail: 'listener down' };
      return health.state();
    };
    let metricsServer: MetricsServer | null = null;
    // A worker's figures are served by the primary, summed over the workers.
    if (cfg.metrics.enabled && !worker) {
      metricsServer = await startMetricsServer(parseListen(cfg.metrics.listen), { registry: metrics.registry, healthy });
      const server = metricsServer;
      stops.push(() => server.close());
    }
    // Outbound delivery: takes due mail by claim; woken by the spool and the quota drain.
    // Started before the listeners, so it stops after them: attempts in flight finish and are
    // recorded (they may queue DSNs) once no new mail comes in.
    if (cfg.delivery.enabled && worker && !worker.delivers) {
      // Mail accepted here is delivered by the delivering worker: it is told at once.
      spool.onCommit((msgs) => {
        if (msgs.some((m) => m.state === 'queued')) worker.wakeDelivery();
      });
    } else if (cfg.delivery.enabled) {
      const started = startDelivery(cfg, { store, spool, clock, log, incidents, owner });
      stops.push(() => started.stop());
      delivery = started;
    }
    // TLS session tickets under keys shared through the store (every worker and node).
    let tickets: TicketKeyRing | null = null;
    if (cfg.tls.session_tickets) {
      const ring = await startTicketKeys({ store: store.tlsTickets, clock, log, rotationMs: cfg.tls.ticket_key_rotation_seconds * 1000 });
      stops.push(() => ring.stop());
      tickets = ring;
    }
    const smtp = await startListeners(cfg, { service: submission.service, tls: tlsMaterial, log, onConnection: () => metrics.sessions.inc(), tickets });
    late.listeners = smtp;
    stops.push(smtp.stop);
    quarantine.start();
    stops.push(() => quarantine.stop());
    if (cfg.metrics.enabled) {
      // The reporter of shared figures keeps its lease on a timer, not only when scraped, so
      // it stays the same node whatever the scrape interval, and gives it up when it stops.
      const renew = setInterval(() => void store.leases.take(SHARED_REPORTER, owner, clock.now(), clock.now() + SHARED_LEASE_MS).catch(() => undefined), SHARED_LEASE_MS / 3);
      renew.unref();
      stops.push(async () => {
        clearInterval(renew);
        await store.leases.give(SHARED_REPORTER, owner).catch(() => undefined);
      });
    }
    // Changes made with the CLI (another process, any node) reach this log as admin.action.
    const adminLog = new AdminLog({ audit: store.audit, leases: store.leases, log, now: () => clock.now(), owner });
    await adminLog.start();
    stops.push(() => adminLog.stop());
    // The timers stop first: no drain or sweep may start while the rest shuts down.
    stops.push(limits.pause, responder.stop);
    // Nodes that share a database and a host name would be one node in queue list and stats.
    if (cfg.store.url && !cfg.server.node_id) log.warn({ event: 'config.node_id_missing', node: nodeName(cfg), detail: 'set [server] node_id to a name of its own on every node sharing this database' });
    // The bound addresses (address:port) beside the bare ports, which scripts and tests read.
    const bound = smtp.servers.map((s) => hostPort(s.server.address() as AddressInfo));
    const metricsListen = metricsServer ? hostPort({ address: parseListen(cfg.metrics.listen).host, port: metricsServer.port }) : null;
    const started = {
      node: nodeName(cfg),
      engine: cfg.store.url ? 'postgres' : 'sqlite',
      hostname: cfg.server.hostname,
      listen: bound.slice(0, smtp.ports.starttls.length),
      listen_tls: bound.slice(smtp.ports.starttls.length),
      metrics_listen: metricsListen,
      starttls: smtp.ports.starttls,
      tls: smtp.ports.tls,
      cert: tlsMaterial.source,
      metrics: metricsServer?.port ?? null,
    };
    log.info({ event: worker ? 'worker.started' : 'relay.started', pid: process.pid, ...started });

    return {
      store,
      log,
      authenticator: submission.authenticator,
      incidents,
      quota,
      ports: smtp.ports,
      delivery,
      quarantine,
      metrics,
      metricsPort: metricsServer?.port ?? null,
      adminLog,
      geo,
      tickets,
      health: healthy,
      started,
      reload: (next) => reloadRelay(cfg, next, { servers: smtp.servers, log, baseLog, geo, tickets }),
      close() {
        // In reverse order of starting: the listeners first (sessions between transactions
        // get 421), then delivery lets attempts in flight finish, the spool commits what is
        // pending, and the store closes last.
        closing ??= stopAll().then(() => log.info({ event: 'relay.stopped' }));
        return closing;
      },
    };
  } catch (e) {
    await stopAll();
    // Once everything is stopped, a listen address at fault is tried again to name its key.
    throw await explainListenError(cfg, e);
  }
}

/** "127.0.0.1:587", "[::]:587". */
export const hostPort = (a: { address: string; port: number }): string => (a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
