import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.js';
import { systemClock, type Clock } from './domain/clock.js';
import { REASONS } from './domain/reasons.js';
import { Authenticator } from './identity/authenticator.js';
import { createLogger, type Logger } from './obs/log.js';
import { parseListen } from './protocol/listen.js';
import { patchSmtpServerReplies } from './protocol/replies.js';
import { createHandlers } from './protocol/session.js';
import { loadTls } from './protocol/tls.js';
import { Spool } from './spool/spool.js';
import { openStore, type Store } from './store/index.js';

export interface RelayOptions {
  clock?: Clock;
  log?: Logger;
}

export interface Relay {
  store: Store;
  log: Logger;
  authenticator: Authenticator;
  /** Bound ports, in the order of submission.listen and submission.listen_tls. */
  ports: { starttls: number[]; tls: number[] };
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
  const log = opts.log ?? createLogger(cfg.log.level);
  patchSmtpServerReplies();

  const store = openStore(cfg.server.data_dir);
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
  const spool = new Spool(store.queue);
  let closing: Promise<void> | undefined;
  const handlers = createHandlers({
    isClosing: () => closing !== undefined,
    hostname: cfg.server.hostname,
    maxRecipients: cfg.submission.max_recipients,
    maxMessageBytes: cfg.submission.max_message_bytes,
    authenticator,
    users: store.users,
    spool,
    clock,
    log,
  });

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
  };

  const servers: SMTPServer[] = [];
  const ports = { starttls: [] as number[], tls: [] as number[] };
  try {
    for (const spec of cfg.submission.listen) {
      const s = new SMTPServer({ ...base, secure: false });
      servers.push(s);
      ports.starttls.push(await listen(s, spec));
    }
    for (const spec of cfg.submission.listen_tls) {
      const s = new SMTPServer({ ...base, secure: true });
      servers.push(s);
      ports.tls.push(await listen(s, spec));
    }
  } catch (e) {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    store.close();
    throw e;
  }
  for (const s of servers) {
    s.on('error', (err: Error) => log.warn({ event: 'smtp.error', err: err.message }));
  }
  log.info({ event: 'relay.started', hostname: cfg.server.hostname, starttls: ports.starttls, tls: ports.tls, cert: tlsMaterial.source });

  return {
    store,
    log,
    authenticator,
    ports,
    close() {
      closing ??= (async () => {
        // Stop accepting. Sessions between transactions are told 421 now; one in the middle
        // of a transaction may finish it (its next MAIL gets 421) within the grace period,
        // after which smtp-server closes what is left.
        const closed = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
        for (const s of servers) closeIdle(s);
        await closed;
        spool.close();
        await authenticator.stop();
        store.close();
        log.info({ event: 'relay.stopped' });
      })();
      return closing;
    },
  };
}
