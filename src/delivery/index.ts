import { isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import { createResolver } from '../dns/resolver.js';
import type { Spool } from '../spool/spool.js';
import type { Store } from '../store/index.js';
import { nodeName } from '../config/node.js';
import { processOwner } from '../store/shared.js';
import { Deliverer } from './deliver.js';
import { DkimSigner } from './dkim.js';
import { Reputation, type IncidentSink } from './reputation.js';
import type { IncidentResponder } from '../notify/incidents.js';
import { Router, type MxResolver } from './routing.js';
import { DeliveryScheduler } from './scheduler.js';
import { SmtpTransport, type Transport } from './transport.js';
import { TlsReporter } from './tls-reports.js';
import { MtaSts, type StsResolver } from './mta-sts.js';
import { Dane } from './dane.js';
import { secureQuery } from '../dns/rawquery.js';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';

export interface DeliveryDeps {
  store: Store;
  spool: Spool;
  clock: Clock;
  log: Logger;
  /** Injected in tests; default: node:dns Resolver on [delivery] dns_servers. Without resolveTxt, no MTA-STS. */
  resolver?: MxResolver & Partial<Pick<StsResolver, 'resolveTxt'>>;
  /** Injected in tests; default: SMTP over nodemailer. */
  transport?: Transport;
  /** Order of equal-preference MX hosts; default Math.random. */
  random?: () => number;
  /** Records remote-rejections incidents and notifies the admins; without it they are only recorded. */
  incidents?: IncidentResponder;
  /** How long a node keeps a domain's signing key from the store before reading it again (tests use 0). */
  dkimCacheMs?: number;
  /** This process's name in delivery claims; default host:pid:random. */
  owner?: string;
}

export interface Delivery {
  scheduler: DeliveryScheduler;
  reputation: Reputation;
  /** TLS reports (RFC 8460): the deliverer records each session's TLS; the daily reports go out on a timer. */
  tlsReports: TlsReporter;
  /** Stops scheduling, waits for attempts in flight, closes connections. */
  stop(): Promise<void>;
}

/**
 * The CAs of NODE_EXTRA_CA_CERTS, as Node reads them: a file that cannot be read is skipped
 * with a warning (Node warns too, and carries on without it).
 */
function extraCas(log: Logger): string[] {
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (!file) return [];
  try {
    return [readFileSync(file, 'utf8')];
  } catch (e) {
    log.warn({ event: 'config.extra_ca_unreadable', file, err: (e as Error).message });
    return [];
  }
}

/** Wires routing, sending, signing and the scheduler, and starts it. */
export function startDelivery(cfg: Config, deps: DeliveryDeps): Delivery {
  const { store, clock, log } = deps;
  const d = cfg.delivery;
  const outboundIp = cfg.identity.outbound_ip;
  // [delivery] tls_ca_file: more CAs beside Node's (Mozilla's list and NODE_EXTRA_CA_CERTS),
  // for verified delivery and policy fetches. A `ca` list replaces Node's default, so the
  // extra file an admin gave Node is read here too rather than dropped.
  const ca = d.tls_ca_file ? [...rootCertificates, ...extraCas(log), readFileSync(d.tls_ca_file, 'utf8')] : undefined;
  const resolver = deps.resolver ?? createResolver(d.dns_servers);
  const transport =
    deps.transport ??
    new SmtpTransport({
      name: cfg.identity.helo,
      localAddress: outboundIp,
      connectTimeoutMs: d.connect_timeout_seconds * 1000,
      connectionsPerHost: d.connections_per_host,
      ca,
      clock,
      log,
    });
  const router = new Router({
    resolver,
    port: d.port,
    smarthost: d.smarthost,
    random: deps.random ?? Math.random,
    family: outboundIp ? (isIP(outboundIp) as 4 | 6) : 0,
  });
  const responder = deps.incidents;
  // Remote rejections are a signal, not proof of compromise: record and notify, no suspension.
  const report: IncidentSink = async (who, detail, since) => {
    // The user or device that is this principal now (none: deleted since it sent the mail).
    const p = who.kind === 'user' ? await store.users.find(who.name) : await store.devices.find(who.name);
    const id = p && p.principalRef === who.ref ? p.id : null;
    if (responder) {
      if (id === null) return null;
      return (await responder.report({ principal: { ...who, id }, kind: 'remote-rejections', clientIp: null, detail, suspend: false, unlessOpenSince: since }))?.id ?? null;
    }
    const incident = { principalKind: who.kind, principalId: id, principalName: who.name, principalRef: who.ref, kind: 'remote-rejections', detail };
    return (await store.incidents.recordUnlessOpen(incident, clock.now(), null, since))?.incident.id ?? null;
  };
  const reputation = new Reputation(store, { alert: d.reject_alert, windowMs: d.reject_window_minutes * 60_000, minSample: d.reject_min_sample }, clock, log, report);
  const owner = deps.owner ?? processOwner(nodeName(cfg));
  const tlsReports = new TlsReporter({
    store,
    resolver: resolver.resolveTxt ? { resolveTxt: (name) => resolver.resolveTxt!(name) } : createResolver(d.dns_servers),
    // Queued like DSNs and notices: no principal, so no user's limits or bindings hold them.
    accept: (m) => deps.spool.accept(m),
    clock,
    log,
    from: cfg.notify.from || `postmaster@${cfg.server.hostname}`,
    organization: cfg.server.hostname,
    enabled: d.tls_reports,
    owner,
  });
  let stopping = false;
  const deliverer = new Deliverer({
    owner,
    repo: store.delivery,
    queue: store.queue,
    accept: (m) => deps.spool.accept(m),
    router,
    transport,
    dkim: new DkimSigner(store.dkim, clock, deps.dkimCacheMs),
    reputation,
    clock,
    log,
    reportingMta: cfg.server.hostname,
    tlsPolicy: Object.fromEntries(Object.entries(d.tls_policy).map(([k, v]) => [k.toLowerCase(), v])),
    mtaSts: resolver.resolveTxt
      ? new MtaSts({ store: store.mtaSts, resolver: resolver as StsResolver, port: d.mta_sts_port, ca, timeoutMs: d.connect_timeout_seconds * 1000, clock, log })
      : null,
    mtaStsDefault: d.mta_sts,
    // DANE asks dns_servers with the AD bit; config checks they are on loopback.
    dane:
      (d.dane === 'auto' || Object.values(d.tls_policy).includes('dane')) && d.dns_servers.length
        ? new Dane((name, type) => secureQuery(d.dns_servers, name, type, Math.min(5000, d.connect_timeout_seconds * 1000)))
        : null,
    daneDefault: d.dane === 'auto',
    smarthost: d.smarthost !== '',
    sendingIp: outboundIp,
    tlsReport: (r) => tlsReports.record(r),
    maxQueueDays: d.max_queue_days,
    retryInitialMinutes: d.retry_initial_minutes,
    retryMaxMinutes: d.retry_max_minutes,
    stopping: () => stopping,
  });
  const scheduler = new DeliveryScheduler({
    repo: store.delivery,
    attempt: (id) => deliverer.attempt(id),
    clock,
    log,
    maxConcurrent: d.max_concurrent_messages,
    scanMs: d.scan_interval_seconds * 1000,
    owner,
    leaseMs: d.claim_lease_seconds * 1000,
  });
  deps.spool.onCommit((msgs) => {
    if (msgs.some((m) => m.state === 'queued')) scheduler.wake();
  });
  // Only the recent window is ever read; older outcomes are dropped at each start.
  store.delivery
    .pruneOutcomes(clock.now() - Math.max(d.reject_window_minutes * 60_000, 7 * 86_400_000))
    .catch((e: unknown) => log.error({ event: 'store.error', err: (e as Error).message }));
  scheduler.start();
  tlsReports.start();
  return {
    scheduler,
    reputation,
    tlsReports,
    async stop() {
      stopping = true;
      await scheduler.stop();
      await tlsReports.stop();
      await transport.close();
    },
  };
}
