import type { Readable } from 'node:stream';
import type {
  SMTPServerAddress,
  SMTPServerAuthentication,
  SMTPServerAuthenticationResponse,
  SMTPServerDataStream,
  SMTPServerSession,
} from 'smtp-server';
import type { Clock } from '../domain/clock.js';
import { REASONS } from '../domain/reasons.js';
import type { AcceptedHook, Assessment, MessageAssessor, Principal } from '../domain/types.js';
import type { AuthOutcome, Authenticator } from '../identity/authenticator.js';
import type { Logger } from '../obs/log.js';
import { findBareNewline, headerEnd, newQueueId, prepareMessage } from '../spool/message.js';
import { headerProblem } from '../policy/headers.js';
import type { Spool } from '../spool/spool.js';
import type { UserRepo } from '../store/users.js';
import type { LeaseRepo } from '../store/shared.js';
import type { BindingRepo } from '../store/bindings.js';
import type { DeviceRepo } from '../store/devices.js';
import type { IncidentResponder } from '../notify/incidents.js';
import { canonicalNetwork, envelopeAddress, narrowNetworks, networkAllowed } from '../policy/bindings.js';
import { judgeLogin, judgeRecipient, judgeSender, type Verdict } from '../policy/access.js';
import { distinctRecipients, HOUR } from '../policy/limits.js';
import type { AuthThrottle, ThrottleScope } from '../identity/throttle.js';
import type { QuotaGate } from '../spool/quota.js';
import { clientKey, normalizeIp } from '../policy/client.js';
import { reply, type SmtpReply } from './replies.js';

export interface SessionDeps {
  /** True once shutdown began: new transactions get 421 so clients retry elsewhere or later. */
  isClosing: () => boolean;
  hostname: string;
  maxRecipients: number;
  maxMessageBytes: number;
  authenticator: Authenticator;
  users: UserRepo;
  devices: DeviceRepo;
  bindings: BindingRepo;
  incidents: IncidentResponder;
  spool: Spool;
  clock: Clock;
  log: Logger;
  /** Policy's verdict on a message's spool state (quarantine, quota); absent = queued. */
  assess?: MessageAssessor;
  /** Called once the message is on disk (held notices and the like). */
  onAccepted?: AcceptedHook;
  throttle: AuthThrottle;
  /** Pause before a failed-AUTH reply (ms): slows guessing, equal for known and unknown users. */
  authFailureDelayMs: number;
  quota: QuotaGate;
  /** Shared "once per burst": one rate-limit incident per principal per hour, whichever process sees it. */
  leases: Pick<LeaseRepo, 'firstInBurst'>;
  /** Whether the spool has room for a message of the maximum size (null: room). */
  spoolNoRoom?: () => string | null;
  /** Simultaneous connections one client address may hold. */
  maxConnectionsPerIp: number;
  /** Per policy: enforce, or monitor (log and count the would-be verdict, apply nothing). */
  modes: { network: PolicyMode; sender: PolicyMode; limits: PolicyMode; quarantine: PolicyMode };
}

export type PolicyMode = 'enforce' | 'monitor';

type Cb = (err?: SmtpReply | Error | null) => void;

/** What a session carries once authenticated (smtp-server's untyped session.user). */
export interface SessionUser {
  principal: Principal;
}

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);

/** Devices do not AUTH; the session they were recognised in is remembered here by id. */
const devicesBySession = new Map<string, Principal>();

function principalOf(session: SMTPServerSession): Principal | undefined {
  return (session.user as SessionUser | undefined)?.principal ?? devicesBySession.get(session.id);
}

/**
 * The smtp-server callbacks: protocol only. Each callback asks identity/spool for a
 * decision and hands the result to replies.ts; none of them formats a reply itself.
 */
export function createHandlers(deps: SessionDeps) {
  const { log } = deps;

  function refuse(session: SMTPServerSession, event: string, r: SmtpReply, extra: object = {}): SmtpReply {
    log.info({ event, session: session.id, ip: normalizeIp(session.remoteAddress), reason: r.reason.id, ...extra });
    return r;
  }

  /**
   * Monitor mode: the verdict is logged and counted as what would have happened, and the
   * caller carries on as if it had accepted. Returns true when the verdict is not applied.
   */
  function monitored(session: SMTPServerSession, policy: keyof SessionDeps['modes'], would: string, fields: object): boolean {
    if (deps.modes[policy] !== 'monitor') return false;
    log.warn({ event: 'policy.monitor', policy, would, session: session.id, ip: normalizeIp(session.remoteAddress), ...fields });
    return true;
  }

  /** Turns a refusing verdict into a reply, acting on its incident first (suspend, record, notify). */
  function refuseVerdict(session: SMTPServerSession, event: string, v: Exclude<Verdict, { kind: 'accept' }>, principal: Principal, sender?: string): SmtpReply {
    const ip = normalizeIp(session.remoteAddress);
    if (v.incident) {
      deps.incidents.report({
        principal: { kind: principal.kind, id: principal.id, name: principal.name },
        kind: v.incident.kind,
        clientIp: ip,
        sender: sender ?? null,
        detail: v.detail?.replace(/^<|>$/g, '') ?? null,
        suspend: v.incident.suspend,
      });
    }
    return refuse(session, event, reply(v.reason, v.detail), { principal: principal.name, kind: principal.kind });
  }

  /** Refuses a transaction the spool has no room for, before the client sends the data. */
  function spoolRoom(session: SMTPServerSession): SmtpReply | null {
    const why = deps.spoolNoRoom?.();
    return why ? refuse(session, 'mail.refused', reply(REASONS.SPOOL_FULL), { why }) : null;
  }

  /** Refuses an envelope address that is not in the one form Postern checks and relays. */
  function addressForm(session: SMTPServerSession, command: 'mail' | 'rcpt', address: SMTPServerAddress): SmtpReply | null {
    // SMTPUTF8 of this transaction's MAIL FROM (being checked, or accepted): smtp-server's
    // envelope flag outlives a refused MAIL, so a retry without the parameter would inherit it.
    const mail = command === 'mail' ? address : session.envelope.mailFrom || undefined;
    const smtputf8 = Boolean(mail && typeof mail.args === 'object' && mail.args && (mail.args as Record<string, unknown>).SMTPUTF8 === true);
    const form = envelopeAddress(address.address, smtputf8);
    if (form.ok) return null;
    const reason = form.problem === 'needs-smtputf8' ? REASONS.NEEDS_SMTPUTF8 : command === 'mail' ? REASONS.SENDER_NOT_NORMAL : REASONS.RECIPIENT_NOT_NORMAL;
    // JSON-escaped in the log line, so the invisible characters can be seen there.
    return refuse(session, `${command}.refused`, reply(reason), { [command === 'mail' ? 'from' : 'rcpt']: address.address });
  }

  const connectionsByIp = new Map<string, number>();
  const counted = new Set<string>();

  /** Slow first, then refuse: once too much of this principal's mail waits, say when to come back. */
  async function quotaRefusal(session: SMTPServerSession, command: string, principal: Principal): Promise<SmtpReply | null> {
    const key = `${principal.kind}:${principal.name}`;
    const over = await deps.quota.refusal(key);
    if (!over) return null;
    if (monitored(session, 'limits', 'refuse', { principal: principal.name, reason: REASONS.RATE_LIMITED.id })) return null;
    const now = deps.clock.now();
    // One incident (and admin notice) per window, not one per refused command, across every
    // process sharing the store.
    if (deps.leases.firstInBurst(`rate-incident ${key}`, now, now + HOUR)) {
      deps.incidents.report({ principal, kind: 'rate-limit', clientIp: normalizeIp(session.remoteAddress), detail: 'too much mail waiting for quota', suspend: false, burstMs: HOUR });
    }
    return refuse(session, `${command}.refused`, reply(REASONS.RATE_LIMITED, `retry after ${hhmm(over.retryAt)} UTC`), { principal: principal.name });
  }

  /** Runs an async check and answers the callback, turning a failure into 451 4.3.0, not a crash. */
  function answer(session: SMTPServerSession, cb: Cb, check: () => Promise<SmtpReply | null>): void {
    check().then(
      (r) => cb(r),
      (e: unknown) => {
        log.error({ event: 'policy.error', session: session.id, err: (e as Error).message });
        cb(reply(REASONS.LOCAL_ERROR));
      },
    );
  }

  /**
   * Every transaction command passes here. An authenticated session is re-checked against
   * the store each time, so a suspension (by a signal in another session, or by the CLI)
   * stops sessions already open at their next command. Without AUTH, only a device bound to
   * this exact client address may go on; everyone else needs TLS, then AUTH.
   */
  function gate(session: SMTPServerSession, command: string): SmtpReply | null {
    if (deps.isClosing()) return refuse(session, `${command}.refused`, reply(REASONS.SHUTTING_DOWN));
    const principal = principalOf(session);
    if (principal) {
      const current = principal.kind === 'user' ? deps.users.get(principal.id) : deps.devices.get(principal.id);
      if (!current || current.status !== 'active') {
        return refuse(session, `${command}.refused`, reply(REASONS.ACCOUNT_SUSPENDED), { principal: principal.name });
      }
      return null;
    }
    const ip = normalizeIp(session.remoteAddress);
    const device = deps.devices.byAddress(canonicalNetwork(ip), deps.clock.now());
    if (device) {
      if (device.requireTls && !session.secure) return refuse(session, `${command}.refused`, reply(REASONS.TLS_REQUIRED), { device: device.name });
      if (device.status !== 'active') return refuse(session, `${command}.refused`, reply(REASONS.ACCOUNT_SUSPENDED), { device: device.name });
      devicesBySession.set(session.id, { kind: 'device', id: device.id, name: device.name });
      log.info({ event: 'device.recognised', session: session.id, ip, device: device.name });
      return null;
    }
    if (!session.secure) return refuse(session, `${command}.refused`, reply(REASONS.TLS_REQUIRED));
    return refuse(session, `${command}.refused`, reply(REASONS.AUTH_REQUIRED));
  }

  /** refuse: answer now (TLS, lockout, busy); fail: a 535, answered at the common moment. */
  type LoginOutcome = { kind: 'ok'; principal: Principal } | { kind: 'refuse' | 'fail'; reply: SmtpReply };

  /**
   * One AUTH: the guessing brake reserves the attempt before anything is verified (and
   * settles it with the outcome), then the password, then the login's network binding.
   */
  async function login(auth: SMTPServerAuthentication, session: SMTPServerSession): Promise<LoginOutcome> {
    const ip = normalizeIp(session.remoteAddress);
    if (!session.secure) return { kind: 'refuse', reply: refuse(session, 'auth.refused', reply(REASONS.TLS_REQUIRED)) };
    const username = auth.username ?? '';
    // The user's networks (none for a name that does not exist): is the client inside them,
    // and inside one narrow enough to say where the owner is (see narrowNetworks)?
    let networks: string[] | undefined;
    const userNetworks = () => {
      if (networks === undefined) {
        const user = deps.users.find(username);
        networks = user ? deps.bindings.values('user', user.id, 'network', deps.clock.now()) : [];
      }
      return networks;
    };
    const insideNetworks = () => networkAllowed(ip, userNetworks());
    const ownNetwork = () => networkAllowed(ip, narrowNetworks(userNetworks()));
    const throttled = (no: { scope: ThrottleScope; until: number | null }): LoginOutcome => {
      const r = reply(no.scope === 'username' ? REASONS.AUTH_USER_THROTTLED : REASONS.AUTH_THROTTLED);
      return { kind: 'refuse', reply: refuse(session, 'auth.throttled', r, { user: username, until: no.until === null ? null : new Date(no.until).toISOString() }) };
    };
    const authzidOk = !(auth.method === 'PLAIN' && auth.authzid && auth.authcid && auth.authzid.toLowerCase() !== auth.authcid.toLowerCase());
    // The cache answers only logins that can succeed: a right password from outside the
    // user's networks pays a full verification in the same queue as a wrong one. A hit
    // costs nothing to check, so it reserves no attempt; only a lock stops it.
    const useCache = deps.modes.network === 'monitor' || insideNetworks();
    const hit = authzidOk && useCache ? deps.authenticator.cached(username, auth.password ?? '') : null;
    if (hit) {
      const lock = deps.throttle.lock(ip, username, ownNetwork);
      return lock ? throttled(lock) : judge(session, ip, auth, { kind: 'ok', user: hit, cached: true });
    }
    const admission = await deps.throttle.admit(ip, username, ownNetwork);
    if (!admission.ok) return throttled(admission);
    let outcome: LoginOutcome | undefined;
    try {
      if (!authzidOk) {
        outcome = { kind: 'fail', reply: refuse(session, 'auth.fail', reply(REASONS.AUTH_AUTHZID), { user: username, method: auth.method }) };
      } else {
        // The cache again: a login that waited for its turn behind others of the same user
        // (a fleet of devices connecting at once) finds the password proven by then.
        const verified = await deps.authenticator.verify(username, auth.password ?? '', { useCache });
        outcome = judge(session, ip, auth, verified);
        // Rehash and cache only what was accepted: a refused right password leaves no trace.
        if (outcome.kind === 'ok' && verified.kind === 'ok') await deps.authenticator.accepted(verified.user, username, auth.password ?? '');
      }
      return outcome;
    } finally {
      try {
        const locked = await deps.throttle.settle(admission.attempt, outcome?.kind === 'ok' ? 'ok' : outcome?.kind === 'fail' ? 'fail' : 'void');
        if (locked.length) log.warn({ event: 'auth.lockout', session: session.id, ip, user: username, scope: locked.join(',') });
      } catch (e) {
        // The reservation lapses with its lease; the login's own answer stands.
        log.error({ event: 'auth.error', session: session.id, ip, err: (e as Error).message });
      }
    }
  }

  /** A verified (or cached) password's outcome, judged against the user's state and networks. */
  function judge(session: SMTPServerSession, ip: string, auth: SMTPServerAuthentication, out: AuthOutcome): LoginOutcome {
    const username = auth.username ?? '';
    if (out.kind === 'busy') return { kind: 'refuse', reply: refuse(session, 'auth.busy', reply(REASONS.AUTH_TEMPFAIL), { user: username }) };
    if (out.kind === 'invalid') return { kind: 'fail', reply: refuse(session, 'auth.fail', reply(REASONS.AUTH_INVALID), { user: username, method: auth.method }) };
    const principal: Principal = { kind: 'user', id: out.user.id, name: out.user.username };
    const networks = deps.bindings.values('user', out.user.id, 'network', deps.clock.now());
    const verdict = judgeLogin(out.user.status, ip, networks);
    const shadow =
      verdict.kind === 'reject' && verdict.reason.id !== 'AUTH_SUSPENDED' &&
      monitored(session, 'network', verdict.incident?.suspend ? 'suspend' : 'refuse', { principal: principal.name, reason: verdict.reason.id });
    if (verdict.kind === 'reject' && !shadow) {
      // Same moment and same lockout count as a wrong password: a fast 535 would tell a thief
      // the password was right.
      return { kind: 'fail', reply: refuseVerdict(session, 'auth.fail', verdict, principal) };
    }
    log.info({ event: 'auth.ok', session: session.id, ip, user: principal.name, method: auth.method, cached: out.cached });
    return { kind: 'ok', principal };
  }

  return {
    onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, res?: SMTPServerAuthenticationResponse) => void) {
      // Every 535 leaves at the same moment, measured from here, whatever path it took (cache,
      // argon2, unknown user, suspended, foreign network, authzid): what a thief can time is
      // part of the reply. A verification slower than the delay answers when it ends.
      const deadline = performance.now() + deps.authFailureDelayMs;
      login(auth, session).then(
        (out) => {
          if (out.kind === 'ok') return cb(null, { user: { principal: out.principal } satisfies SessionUser });
          if (out.kind === 'refuse') return cb(out.reply);
          setTimeout(() => cb(out.reply), Math.max(0, deadline - performance.now())).unref();
        },
        (e: unknown) => {
          log.error({ event: 'auth.error', session: session.id, ip: normalizeIp(session.remoteAddress), err: (e as Error).message });
          cb(reply(REASONS.LOCAL_ERROR));
        },
      );
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: Cb) {
      const refused = gate(session, 'mail') ?? addressForm(session, 'mail', address) ?? spoolRoom(session);
      if (refused) return cb(refused);
      const principal = principalOf(session)!;
      const senders = deps.bindings.values(principal.kind, principal.id, 'sender', deps.clock.now());
      const verdict = judgeSender(principal.kind, address.address, senders);
      if (verdict.kind === 'reject' && !monitored(session, 'sender', verdict.incident?.suspend ? 'suspend' : 'refuse', { principal: principal.name, reason: verdict.reason.id, sender: address.address })) {
        return cb(refuseVerdict(session, 'mail.refused', verdict, principal, address.address));
      }
      answer(session, cb, () => quotaRefusal(session, 'mail', principal));
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: Cb) {
      const refused = gate(session, 'rcpt') ?? addressForm(session, 'rcpt', address);
      if (refused) return cb(refused);
      if (session.envelope.rcptTo.length >= deps.maxRecipients) {
        return cb(refuse(session, 'rcpt.refused', reply(REASONS.TOO_MANY_RECIPIENTS), { rcpt: address.address }));
      }
      const principal = principalOf(session)!;
      // A message with more distinct recipients than the principal may ever send in a window
      // could never leave the queue: refuse the extra recipients now, while the client can act.
      const distinct = distinctRecipients([...session.envelope.rcptTo.map((a) => a.address), address.address]);
      if (distinct > deps.quota.maxRecipients(`${principal.kind}:${principal.name}`)) {
        return cb(refuse(session, 'rcpt.refused', reply(REASONS.TOO_MANY_RECIPIENTS), { rcpt: address.address, principal: principal.name }));
      }
      if (principal.kind === 'device') {
        const verdict = judgeRecipient(address.address, deps.bindings.values('device', principal.id, 'recipient', deps.clock.now()));
        if (verdict.kind === 'reject') {
          const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
          return cb(refuseVerdict(session, 'rcpt.refused', verdict, principal, from));
        }
      }
      answer(session, cb, () => quotaRefusal(session, 'rcpt', principal));
    },

    /**
     * Postfix anvil's per-client connection cap: smtp-server restarts its idle timer on every
     * byte, so a slow client (one byte every few seconds) holds its slot indefinitely; the cap
     * keeps one address from holding many, leaving max_clients for everyone else.
     */
    onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void) {
      const ip = clientKey(session.remoteAddress);
      const n = (connectionsByIp.get(ip) ?? 0) + 1;
      if (n > deps.maxConnectionsPerIp) {
        return cb(refuse(session, 'session.refused', reply(REASONS.TOO_MANY_CONNECTIONS), { connections: n - 1 }));
      }
      connectionsByIp.set(ip, n);
      counted.add(session.id);
      cb();
    },

    onClose(session: SMTPServerSession) {
      devicesBySession.delete(session.id);
      if (counted.delete(session.id)) {
        const ip = clientKey(session.remoteAddress);
        const n = (connectionsByIp.get(ip) ?? 1) - 1;
        if (n > 0) connectionsByIp.set(ip, n);
        else connectionsByIp.delete(ip);
      }
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void) {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (c: Buffer) => {
        size += c.length;
        // Past the limit we keep reading (the client is still sending) but stop storing.
        if (size <= deps.maxMessageBytes) chunks.push(c);
      });
      // The stream's events run outside smtp-server's try/catch: a throw here (a store error,
      // a store closed by shutdown) would end the process, so it becomes a 451 instead.
      const finish = () => {
        const principal = principalOf(session);
        const ip = normalizeIp(session.remoteAddress);
        if (stream.sizeExceeded || size > deps.maxMessageBytes) {
          // smtp-server answers 552 5.3.4 itself; log the decision.
          refuse(session, 'message.refused', reply(REASONS.MESSAGE_TOO_BIG), { size });
          return cb(reply(REASONS.MESSAGE_TOO_BIG));
        }
        if (!principal) return cb(refuse(session, 'message.refused', reply(REASONS.AUTH_REQUIRED)));
        // DATA passes no gate: without this, recipients accepted before a suspension (by a
        // refused RCPT in this very transaction, another session or the CLI) still get the mail.
        const current = principal.kind === 'user' ? deps.users.get(principal.id) : deps.devices.get(principal.id);
        if (!current || current.status !== 'active') {
          return cb(refuse(session, 'message.refused', reply(REASONS.ACCOUNT_SUSPENDED), { principal: principal.name }));
        }
        const raw = Buffer.concat(chunks, size);
        const bare = findBareNewline(raw);
        if (bare !== -1) {
          return cb(refuse(session, 'message.refused', reply(REASONS.BARE_NEWLINE), { user: principal.name, offset: bare }));
        }
        const nul = raw.indexOf(0);
        if (nul !== -1) {
          return cb(refuse(session, 'message.refused', reply(REASONS.NUL_IN_DATA), { user: principal.name, offset: nul }));
        }
        const headerWrong = headerProblem(raw.toString('latin1', 0, headerEnd(raw)));
        if (headerWrong) {
          return cb(refuse(session, 'message.refused', reply(REASONS.HEADER_INVALID, headerWrong), { user: principal.name }));
        }
        const now = deps.clock.now();
        const id = newQueueId(now);
        // The envelope as it is stored and relayed: every address in the one form MAIL and
        // RCPT checked (domains as A-labels), a recipient given with a U-label and an A-label
        // kept once (smtp-server already merged the same address in other letter case).
        const relayForm = (a: string) => { const f = envelopeAddress(a, true); return f.ok ? f.address : a; };
        const rcptTo = [...new Set(session.envelope.rcptTo.map((a) => relayForm(a.address)))];
        const mailFrom = session.envelope.mailFrom ? relayForm(session.envelope.mailFrom.address) : '';
        const tls = session.tlsOptions ? `using ${session.tlsOptions.version} with cipher ${session.tlsOptions.name}` : null;
        const data = prepareMessage(raw, {
          queueId: id,
          hostname: deps.hostname,
          helo: session.hostNameAppearsAs,
          clientIp: ip,
          protocol: `ESMTP${session.secure ? 'S' : ''}${principal.kind === 'user' ? 'A' : ''}`,
          tls,
          authenticatedAs: principal.kind === 'user' ? principal.name : null,
          mailFrom,
          rcptTo,
          now,
        });
        const input = { id, data, envelope: { mailFrom, rcptTo }, principal, clientIp: ip, now };
        const accept = async (): Promise<Assessment> => {
          const assessment: Assessment = deps.assess ? await deps.assess(input) : { state: 'queued', score: 0, reasons: [] };
          if (assessment.state === 'held' && monitored(session, 'quarantine', 'hold', { principal: principal.name, queue_id: id, score: assessment.score, reasons: assessment.reasons.map((r) => r.id) })) {
            assessment.state = 'queued';
          }
          // Quota is taken only by mail that is going out now. Held mail takes none, and an
          // admin's release sends it without quota: that is the admin's decision.
          if (assessment.state === 'queued') assessment.state = await deps.quota.admit(`${principal.kind}:${principal.name}`, rcptTo);
          if (assessment.state === 'waiting-quota' && monitored(session, 'limits', 'wait', { principal: principal.name, queue_id: id })) {
            assessment.state = 'queued';
          }
          await deps.spool.accept({ ...input, receivedAt: now, state: assessment.state, assessment });
          return assessment;
        };
        accept()
          .then((assessment) => {
            log.info({ event: 'message.accepted', session: session.id, ip, user: principal.name, queue_id: id, from: mailFrom, rcpts: rcptTo.length, size: data.length, state: assessment.state, score: assessment.score, ms: deps.clock.now() - now });
            cb(null, `2.0.0 Ok: queued as ${id}`);
            deps.onAccepted?.(input, assessment);
          })
          .catch((e: unknown) => {
            log.error({ event: 'spool.error', session: session.id, queue_id: id, err: (e as Error).message });
            cb(reply(REASONS.LOCAL_ERROR));
          });
      };
      (stream as Readable).on('end', () => {
        try {
          finish();
        } catch (e) {
          log.error({ event: 'policy.error', session: session.id, err: (e as Error).message });
          cb(reply(REASONS.LOCAL_ERROR));
        }
      });
    },
  };
}
