import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import type { AcceptedHook, MessageAssessor } from '../domain/types.js';
import { Authenticator, type DirectoryOptions } from '../identity/authenticator.js';
import { DovecotAuthClient } from '../identity/dovecot.js';
import { Provisioner } from '../identity/provision.js';
import { AuthThrottle } from '../identity/throttle.js';
import type { IncidentResponder } from '../notify/incidents.js';
import type { Logger } from '../obs/log.js';
import type { SpoolHealth } from '../spool/health.js';
import type { QuotaGate } from '../spool/quota.js';
import type { Spool } from '../spool/spool.js';
import type { Store } from '../store/index.js';
import { localConnections, type ConnectionCounter } from './connections.js';
import { SubmissionService, type GeoSource } from './service.js';

export interface SubmissionDepsIn {
  store: Store;
  spool: Spool;
  health: SpoolHealth;
  incidents: IncidentResponder;
  quota: QuotaGate;
  clock: Clock;
  log: Logger;
  /** Quarantine's scoring before the commit and its notices after it. */
  assess?: MessageAssessor;
  onAccepted?: AcceptedHook;
  /** True once shutdown began. */
  isClosing: () => boolean;
  /** The IP database for country and ASN bindings. */
  geo: GeoSource;
  /** The node's connection table when it is not this process's own (workers: the primary's). */
  connections?: ConnectionCounter;
}

/** The submission service with its password verifier and guessing brake. */
export function startSubmission(cfg: Config, deps: SubmissionDepsIn): { service: SubmissionService; authenticator: Authenticator; stop(): Promise<void> } {
  const { store, clock } = deps;
  // [auth] backend = "dovecot": main passwords are Dovecot's; everything else stays here.
  const dovecot =
    cfg.auth.backend === 'dovecot'
      ? new DovecotAuthClient({ socket: cfg.auth.dovecot_socket, service: cfg.auth.dovecot_service, connections: cfg.auth.dovecot_connections, timeoutMs: cfg.auth.dovecot_timeout_seconds * 1000 })
      : null;
  const provisioner = cfg.auth.provision === 'template' ? new Provisioner(store, cfg.auth.template, clock, deps.log) : null;
  const directory: DirectoryOptions | undefined = dovecot
    ? { client: dovecot, credentials: store.credentials, provision: provisioner ? (name) => provisioner.provision(name) : undefined }
    : undefined;
  const authenticator = new Authenticator(store.users, {
    params: { memoryCost: cfg.auth.argon2_memory_kib, timeCost: cfg.auth.argon2_time_cost, parallelism: cfg.auth.argon2_parallelism },
    maxConcurrent: cfg.auth.max_concurrent_verifications,
    maxQueued: cfg.auth.max_queued_verifications,
    cacheTtlMs: cfg.auth.cache_ttl_seconds * 1000,
    clock,
    directory,
  }, store.appPasswords);
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
  const service = new SubmissionService({
    isClosing: deps.isClosing,
    hostname: cfg.server.hostname,
    maxRecipients: cfg.submission.max_recipients,
    maxMessageBytes: cfg.submission.max_message_bytes,
    authenticator,
    users: store.users,
    devices: store.devices,
    bindings: store.bindings,
    appPasswords: store.appPasswords,
    geo: deps.geo,
    incidents: deps.incidents,
    spool: deps.spool,
    clock,
    log: deps.log,
    assess: deps.assess,
    onAccepted: deps.onAccepted,
    throttle,
    authFailureDelayMs: cfg.limits.auth_failure_delay_ms,
    connections: deps.connections ?? localConnections(cfg.server.max_connections_per_ip, cfg.server.max_clients),
    spoolNoRoom: () => deps.health.noRoom(),
    leases: store.leases,
    quota: deps.quota,
    modes: { network: cfg.binding.network.mode, sender: cfg.binding.sender.mode, limits: cfg.limits.mode, quarantine: cfg.quarantine.mode },
  });
  return {
    service,
    authenticator,
    stop: async () => {
      await authenticator.stop();
      await dovecot?.close();
    },
  };
}
