import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.js';
import { outboundIdentityProblem } from './config/identity.js';
import { ConfigError } from './config/load.js';
import { startDelivery, type Delivery } from './delivery/index.js';
import { processOwner } from './store/shared.js';
import { systemClock, type Clock } from './domain/clock.js';
import { REASONS } from './domain/reasons.js';
import { Authenticator } from './identity/authenticator.js';
import { createLogger, type Logger } from './obs/log.js';
import { parseListen } from './protocol/listen.js';
import { patchSmtpServerReplies } from './protocol/replies.js';
import { createHandlers } from './protocol/session.js';
import { SubmissionService } from './submission/service.js';
import { loadTls } from './protocol/tls.js';
import { Spool } from './spool/spool.js';
import { SpoolHealth } from './spool/health.js';
import { IncidentResponder } from './notify/incidents.js';
import { QuotaGate } from './spool/quota.js';
import { RedisLedger } from './spool/ledger.js';
import { AuthThrottle } from './identity/throttle.js';
import { sweepLapsedBindings } from './notify/lapse.js';
import { openStore, type Store } from './store/index.js';
import { Quarantine } from './quarantine/index.js';
import { startMetricsServer, type MetricsServer } from './obs/http.js';
import { Metrics, tapLogger } from './obs/metrics.js';
import { installProxyProtocol } from './protocol/proxy.js';
import { reloadRelay, type ReloadOutcome } from './reload.js';
import { queueIdTime } from './spool/message.js';

export interface RelayOptions {
  clock?: Clock;
  log?: Logger;
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
  /** What SIGHUP does with a re-read config: new TLS material and log level; see reload.ts. */
  reload(next: Config): Promise<ReloadOutcome>;
  close(): Promise<void>;
}

function listen(server: SMTPServer, spec: string): Promise<number> {
  const { host, port } = parseListen(spec);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.server.address() as AddressInfo).port);
    });
  });
}

interface Connection {
  session?: { envelope?: { mailFrom?: unknown } };
  send(code: number, text: string): void;
  close(): void;
}

function closeIdle(server: SMTPServer): void {
  const conns = (server as unknown as { connections: Set<Connection> }).connections;
  for (const c of conns) {
    if (c.session?.envelope?.mailFrom) continue;
    c.send(REASONS.SHUTTING_DOWN.code, `${REASONS.SHUTTING_DOWN.enhanced} ${REASONS.SHUTTING_DOWN.text}`);
    c.close();
  }
}

/** Wires config, store, identity, spool and protocol, and starts the listeners. */
export async function startRelay(cfg: Config, opts: RelayOptions = {}): Promise<Relay> {
  const clock = opts.clock ?? systemClock;
  const baseLog = opts.log ?? createLogger(cfg.log.level);
  // --- Metrics: counted from the log events, before the level filter.
  const metrics = new Metrics({
    queueDepth: () => store.queue.depth(),
    openConnections: () => servers.reduce((n, s) => n + s.connections.size, 0),
    quarantineDecisions: () => store.stats.quarantineDecisions(),
    passwordVerifications: () => authenticator.verifications,
    receivedAt: queueIdTime,
    now: () => clock.now(),
  });
  // Disabled metrics cost nothing per event: the logger is pino's own.
  const log = cfg.metrics.enabled ? tapLogger(baseLog, (o) => metrics.observe(o)) : baseLog;
  // ---
  patchSmtpServerReplies();
  // Refuse before anything is opened: mail sent under a bad HELO identity hurts reputation.
  const identityProblem = outboundIdentityProblem(cfg.identity);
  if (identityProblem) throw new ConfigError(`refusing to start: ${identityProblem}`);

  const store = openStore(cfg.server.data_dir);
  // This process's name in shared claims and leases (delivery, the quota drain).
  const owner = processOwner(cfg.server.hostname);
  const tlsMaterial = await loadTls({ ...cfg.tls, dataDir: cfg.server.data_dir, hostname: cfg.server.hostname });
  const authenticator = new Authenticator(store.users, {
    params: {
      memoryCost: cfg.auth.argon2_memory_kib,
      timeCost: cfg.auth.argon2_time_cost,
      parallelism: cfg.auth.argon2_parallelism,
    },
    maxConcurrent: cfg.auth.max_concurrent_verifications,
    maxQueued: cfg.auth.max_queued_verifications,
    cacheTtlMs: cfg.auth.cache_ttl_seconds * 1000,
    clock,
  });
  // Postfix's rule: refuse mail while less than 1.5 × the largest message is free.
  const spoolHealth = new SpoolHealth(cfg.server.data_dir, Math.ceil(1.5 * cfg.submission.max_message_bytes), store.queue);
  const spool = new Spool(store.queue, spoolHealth);
  // --- Account binding and compromise response.
  const incidents = new IncidentResponder(
    store,
    spool,
    { hostname: cfg.server.hostname, admins: cfg.notify.admins, from: cfg.notify.from, helpdesk: cfg.notify.helpdesk, burstMinutes: cfg.notify.burst_minutes },
    clock,
    log,
  );
  const sweeper = setInterval(() => {
    const failed = (e: unknown) => log.error({ event: 'store.error', err: (e as Error).message });
    sweepLapsedBindings(store, clock, log).catch(failed);
    store.authAttempts.prune(clock.now()).catch(failed);
  }, 60_000);
  sweeper.unref();
  // ---
  // --- Rate limits: quota ledger decides queued vs waiting; a timer drains waiting mail.
  const quota = new QuotaGate(
    store.limits,
    {
      messagesPerHour: cfg.limits.messages_per_hour,
      recipientsPerHour: cfg.limits.recipients_per_hour,
      recipientsPerDay: cfg.limits.recipients_per_day,
      ceiling: cfg.limits.ceiling,
      enabled: cfg.limits.enabled,
    },
    clock,
    log,
    cfg.limits.redis ? await RedisLedger.connect(cfg.limits.redis) : undefined,
    { leases: store.leases, owner },
  );
  const throttle = new AuthThrottle(
    {
      maxPerIp: cfg.limits.auth_max_failures_per_ip,
      maxPerUserIp: cfg.limits.auth_max_failures_per_user_ip,
      maxPerUser: cfg.limits.auth_max_failures_per_user,
      windowMs: cfg.limits.auth_failure_window_seconds * 1000,
      lockoutMs: cfg.limits.auth_lockout_seconds * 1000,
    },
    clock,
    store.authAttempts,
  );
  // ---
  // --- Quarantine: scores each message before the spool commit, expires held mail.
  const quarantine = new Quarantine(cfg, { store, spool, clock, log, quota });
  // ---
  let closing: Promise<void> | undefined;
  const service = new SubmissionService({
    isClosing: () => closing !== undefined,
    hostname: cfg.server.hostname,
    maxRecipients: cfg.submission.max_recipients,
    maxMessageBytes: cfg.submission.max_message_bytes,
    authenticator,
    users: store.users,
    devices: store.devices,
    bindings: store.bindings,
    incidents,
    spool,
    clock,
    log,
    assess: quarantine.assess,
    onAccepted: quarantine.onAccepted,
    throttle,
    authFailureDelayMs: cfg.limits.auth_failure_delay_ms,
    maxConnectionsPerIp: cfg.server.max_connections_per_ip,
    spoolNoRoom: () => spoolHealth.noRoom(),
    leases: store.leases,
    quota,
    modes: { network: cfg.binding.network.mode, sender: cfg.binding.sender.mode, limits: cfg.limits.mode, quarantine: cfg.quarantine.mode },
  });
  const handlers = createHandlers(service, log);

  const base: SMTPServerOptions = {
    name: cfg.server.hostname,
    banner: 'Postern ESMTP ready',
    heloResponse: '%s Hello %s',
    key: tlsMaterial.key,
    cert: tlsMaterial.cert,
    minVersion: 'TLSv1.2',
    authMethods: ['PLAIN', 'LOGIN'],
    // Authentication is enforced by Postern itself (session.ts) so that the refusal before
    // STARTTLS can say "Must issue a STARTTLS command first" rather than "auth required".
    authOptional: true,
    allowInsecureAuth: false,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: true,
    hideREQUIRETLS: true,
    // smtp-server's joke commands (WIZ grants "wizard" status, SHELL claims the incident
    // "will be reported") fingerprint the software for a scanner and promise what never happens.
    disabledCommands: ['WIZ', 'SHELL', 'KILL'],
    size: cfg.submission.max_message_bytes,
    // No PTR lookup per connection: it costs a DNS round trip and Postern never trusts it.
    disableReverseLookup: true,
    maxClients: cfg.server.max_clients,
    socketTimeout: cfg.server.idle_timeout_seconds * 1000,
    closeTimeout: cfg.server.shutdown_grace_seconds * 1000,
    logger: false,
    onAuth: handlers.onAuth,
    onMailFrom: handlers.onMailFrom,
    onRcptTo: handlers.onRcptTo,
    onData: handlers.onData,
    onClose: handlers.onClose,
    onConnect: handlers.onConnect,
  };

  const servers: SMTPServer[] = [];
  const ports = { starttls: [] as number[], tls: [] as number[] };
  // Sessions counted per accepted connection; PROXY protocol read in front of smtp-server.
  const wire = (s: SMTPServer, implicitTls: boolean) => {
    s.on('connect', () => metrics.sessions.inc());
    // A balancer sends its header with the connection; 10 s bounds a stuck one (no key needed).
    if (cfg.submission.proxy_protocol) installProxyProtocol(s, { trusted: cfg.submission.trusted_proxies, implicitTls, timeoutMs: 10_000, log });
  };
  let metricsServer: MetricsServer | null = null;
  try {
    for (const spec of cfg.submission.listen) {
      const s = new SMTPServer({ ...base, secure: false });
      wire(s, false);
      servers.push(s);
      ports.starttls.push(await listen(s, spec));
    }
    for (const spec of cfg.submission.listen_tls) {
      const s = new SMTPServer({ ...base, secure: true });
      wire(s, true);
      servers.push(s);
      ports.tls.push(await listen(s, spec));
    }
    if (cfg.metrics.enabled) {
      metricsServer = await startMetricsServer(parseListen(cfg.metrics.listen), {
        registry: metrics.registry,
        healthy: () => {
          if (closing) return { ok: false, detail: 'shutting down' };
          if (!store.open) return { ok: false, detail: 'store closed' };
          if (!servers.every((s) => s.server.listening)) return { ok: false, detail: 'listener down' };
          return spoolHealth.state();
        },
      });
    }
  } catch (e) {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    store.close();
    throw e;
  }
  for (const s of servers) {
    s.on('error', (err: Error) => log.warn({ event: 'smtp.error', err: err.message }));
  }
  // --- Outbound delivery: takes due mail by claim; woken by the spool.
  const delivery = cfg.delivery.enabled ? startDelivery(cfg, { store, spool, clock, log, incidents, owner }) : null;
  const drainer = setInterval(() => {
    quota
      .drain()
      .then((ids) => {
        if (ids.length) delivery?.scheduler.wake();
      })
      .catch((e: unknown) => log.error({ event: 'quota.error', err: (e as Error).message }));
  }, cfg.limits.drain_interval_seconds * 1000);
  drainer.unref();
  // ---
  quarantine.start();
  log.info({ event: 'relay.started', hostname: cfg.server.hostname, starttls: ports.starttls, tls: ports.tls, cert: tlsMaterial.source, metrics: metricsServer?.port ?? null });

  return {
    store,
    log,
    authenticator,
    incidents,
    quota,
    ports,
    delivery,
    quarantine,
    metrics,
    metricsPort: metricsServer?.port ?? null,
    reload: (next) => reloadRelay(cfg, next, { servers, log, baseLog }),
    close() {
      closing ??= (async () => {
        // Stop accepting. Sessions between transactions are told 421 now; one in the middle
        // of a transaction may finish it (its next MAIL gets 421) within the grace period,
        // after which smtp-server closes what is left.
        clearInterval(sweeper);
        clearInterval(drainer);
        quarantine.stop();
        const closed = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
        for (const s of servers) closeIdle(s);
        await closed;
        // Attempts in flight finish and are recorded (they may queue DSNs) before the spool closes.
        await delivery?.stop();
        await spool.close();
        await quota.ledger.close();
        await authenticator.stop();
        await metricsServer?.close();
        store.close();
        log.info({ event: 'relay.stopped' });
      })();
      return closing;
    },
  };
}
