import { constants } from 'node:crypto';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { installGreetingDelay } from './greeting.js';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config/schema.js';
import { REASONS } from '../domain/reasons.js';
import type { Logger } from '../obs/log.js';
import type { SubmissionService } from '../submission/service.js';
import { parseListen } from './listen.js';
import { installProxyProtocol } from './proxy.js';
import { patchSmtpServerReplies } from './replies.js';
import { createHandlers } from './session.js';
import type { TicketKeyRing } from './tickets.js';

export interface Listeners {
  /** Bound ports, in the order of submission.listen and submission.listen_tls. */
  ports: { starttls: number[]; tls: number[] };
  servers: SMTPServer[];
  /** Open client connections, all listeners together. */
  connections(): number;
  listening(): boolean;
  /**
   * Stops accepting. Sessions between transactions are told 421 now; one in the middle of a
   * transaction may finish it (its next MAIL gets 421) within the grace period, after which
   * smtp-server closes what is left.
   */
  stop(): Promise<void>;
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

/**
 * Session tickets on a server's TLS contexts: the shared key ring when [tls] session_tickets
 * is on, else none at all (OpenSSL would issue tickets under a key of this process's own).
 * Called again after every rebuild of the contexts (SIGHUP).
 */
export function installTickets(s: SMTPServer, tickets: TicketKeyRing | null | undefined): void {
  const contexts = [...(s as unknown as { secureContext: Map<string, import('node:tls').SecureContext> }).secureContext.values()];
  if (tickets) tickets.install(s, contexts);
}

/** The submission listeners (587 STARTTLS, 465 implicit TLS), each command answered by the service. */
export async function startListeners(
  cfg: Config,
  deps: { service: SubmissionService; tls: { key: Buffer | string; cert: Buffer | string }; log: Logger; onConnection: () => void; tickets?: TicketKeyRing | null },
): Promise<Listeners> {
  const { log } = deps;
  patchSmtpServerReplies();
  const handlers = createHandlers(deps.service, log);
  const base: SMTPServerOptions = {
    name: cfg.server.hostname,
    banner: 'Postern ready', // smtp-server writes "220 NAME ESMTP " before it
    heloResponse: '%s Hello %s',
    key: deps.tls.key,
    cert: deps.tls.cert,
    minVersion: 'TLSv1.2',
    // Resumed sessions must match this: smtp-server's default is a hash of the command line,
    // which differs between nodes started with other paths, so a ticket from one would not
    // resume on another. A ticket outlives its key by no more than one rotation period.
    sessionIdContext: 'postern-submission',
    sessionTimeout: cfg.tls.ticket_key_rotation_seconds,
    // session_tickets = false: no tickets (and no session cache: Node keeps none), no resumption.
    ...(cfg.tls.session_tickets ? {} : { secureOptions: constants.SSL_OP_NO_TICKET }),
    authMethods: ['PLAIN', 'LOGIN'],
    // Authentication is enforced by the submission service so that the refusal before
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
    // Read by the patched SMTPConnection.init (greeting.ts).
    greetingDelayMs: cfg.submission.greeting_delay_ms,
  } as SMTPServerOptions;
  installGreetingDelay();

  const servers: SMTPServer[] = [];
  const ports = { starttls: [] as number[], tls: [] as number[] };
  // Sessions counted per accepted connection; PROXY protocol read in front of smtp-server.
  const wire = (s: SMTPServer, implicitTls: boolean) => {
    s.on('connect', deps.onConnection);
    // A balancer sends its header with the connection; 10 s bounds a stuck one (no key needed).
    if (cfg.submission.proxy_protocol) installProxyProtocol(s, { trusted: cfg.submission.trusted_proxies, implicitTls, timeoutMs: 10_000, log });
  };
  const close = () => Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  try {
    for (const [specs, secure] of [[cfg.submission.listen, false], [cfg.submission.listen_tls, true]] as const) {
      for (const spec of specs) {
        const s = new SMTPServer({ ...base, secure });
        installTickets(s, deps.tickets);
        wire(s, secure);
        servers.push(s);
        (secure ? ports.tls : ports.starttls).push(await listen(s, spec));
      }
    }
  } catch (e) {
    await close();
    throw e;
  }
  for (const s of servers) s.on('error', (err: Error) => log.warn({ event: 'smtp.error', err: err.message }));
  return {
    ports,
    servers,
    connections: () => servers.reduce((n, s) => n + s.connections.size, 0),
    listening: () => servers.every((s) => s.server.listening),
    async stop() {
      const closed = close();
      for (const s of servers) closeIdle(s);
      await closed;
    },
  };
}
