import type { Clock } from '../domain/clock.js';
import { REASONS, type Reason } from '../domain/reasons.js';
import type { AcceptedHook, Assessment, MessageAssessor, Principal, QueueState } from '../domain/types.js';
import type { AuthOutcome, Authenticator, CaughtPassword, LoginClient } from '../identity/authenticator.js';
import type { AuthThrottle, ThrottleScope } from '../identity/throttle.js';
import type { IncidentResponder } from '../notify/incidents.js';
import { principalFields, type Logger } from '../obs/log.js';
import { judgeLogin, judgeRecipient, judgeSender, type Verdict } from '../policy/access.js';
import { canonicalNetwork, envelopeAddress, narrowNetworks, networkAllowed } from '../policy/bindings.js';
import { describePlace, loginDetail, needsGeo, NO_PLACES, placeAllowed, placesBound, placesOf, type LoginPlaces, type Placer } from '../policy/places.js';
import { appPasswordId } from '../identity/passwords.js';
import type { AppPassword } from '../store/app-passwords.js';
import { clientKey } from '../policy/client.js';
import { headerProblem } from '../policy/headers.js';
import { distinctRecipients, HOUR } from '../policy/limits.js';
import { findBareNewline, headerEnd, newQueueId, prepareMessage } from '../spool/message.js';
import type { QuotaGate } from '../spool/quota.js';
import type { Spool } from '../spool/spool.js';
import type { Store } from '../store/index.js';
import type { Decision, Finding, PolicyMode, PolicyName } from './decision.js';
import type { ConnectionCounter } from './connections.js';

export interface SubmissionDeps {
  /** True once shutdown began: new transactions get 421 so clients retry elsewhere or later. */
  isClosing: () => boolean;
  hostname: string;
  maxRecipients: number;
  maxMessageBytes: number;
  authenticator: Authenticator;
  users: Store['users'];
  devices: Store['devices'];
  bindings: Store['bindings'];
  appPasswords: Pick<Store['appPasswords'], 'byPublicId' | 'touch'>;
  /** The IP database for country and ASN bindings, loaded on first need. */
  geo: GeoSource;
  incidents: IncidentResponder;
  spool: Spool;
  clock: Clock;
  log: Logger;
  /** Policy's verdict on a message's spool state (quarantine); absent = queued. */
  assess?: MessageAssessor;
  /** Called once the message is on disk (held notices and the like). */
  onAccepted?: AcceptedHook;
  throttle: AuthThrottle;
  /** Pause before a failed-AUTH reply (ms): slows guessing, equal for known and unknown users. */
  authFailureDelayMs: number;
  quota: QuotaGate;
  /** Shared "once per burst": one rate-limit incident per principal per hour, whichever process sees it. */
  leases: Pick<Store['leases'], 'firstInBurst'>;
  /** Whether the spool has room for a message of the maximum size (null: room). */
  spoolNoRoom?: () => string | null;
  /** Simultaneous connections one client address may hold (per process, like Postfix's anvil per host). */
  /** max_connections_per_ip (and, across workers, max_clients): see connections.ts. */
  connections: ConnectionCounter;
  /** Per policy: enforce, or monitor (log and count the would-be verdict, apply nothing). */
  modes: Record<PolicyName, PolicyMode>;
}

/** The IP database, as the login path needs it: loaded on demand, or only if already loaded. */
export interface GeoSource {
  get(): Promise<Placer>;
  loaded(): Placer | null;
}

/** One client connection as the service sees it; the adapter fills it from smtp-server's session. */
export type Client = LoginClient;

/** A MAIL FROM or RCPT TO address and whether its transaction declared SMTPUTF8. */
export interface EnvelopeArg {
  address: string;
  smtputf8: boolean;
}

/** The transaction so far: the accepted MAIL FROM and RCPT TOs. */
export interface Transaction {
  mailFrom: EnvelopeArg | null;
  rcptTo: string[];
}

export interface Credentials {
  method: string;
  username: string;
  password: string;
  /** PLAIN's authorization identity, if the client sent one. */
  authzid?: string;
}

export interface MessageInput {
  raw: Buffer;
  size: number;
  /** The client sent more than max_message_bytes; raw holds only the start. */
  tooBig: boolean;
  helo: string;
  /** "using TLSv1.3 with cipher ...", for the Received field; null without TLS. */
  tls: string | null;
  transaction: Transaction;
}

/** What the service remembers of a connection between commands. */
export class Submission {
  /** Who submits: the user that logged in, or the device recognised by its address. */
  principal: Principal | undefined;
  /**
   * The keyed fingerprint of the directory password this session logged in with, and the
   * directory's account (null for a password of Postern's own): what a suspension records, so
   * that the stolen password stays refused (see Authenticator.fingerprint). Never the password.
   */
  caught: CaughtPassword | null = null;
  /** This login's 535 came after the directory's own failure delay (no second delay needed). */
  failureDelayed = false;
  counted = false;
  /** The connection has closed (onClose came, perhaps before its admission was answered). */
  closed = false;
  constructor(readonly client: Client) {}
}

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);

/** The session's user or device for its log events (a finding may name another: the login's). */
const who = (s: Submission) => (s.principal ? principalFields(s.principal) : {});

/**
 * The Message-ID field of a prepared message (unfolded, as written), or null: the name the
 * sender's mail client and the recipients know the message by, logged beside the queue id.
 */
function messageIdOf(data: Buffer): string | null {
  const m = /^message-id[ \t]*:((?:[^\r\n]|\r\n[ \t])*)/im.exec(data.toString('utf8', 0, headerEnd(data)));
  return m ? m[1]!.replace(/\r\n/g, '').trim() || null : null;
}


/**
 * The decisions of a submission: login, MAIL, RCPT and DATA (and devices recognised by their
 * address) each come back as one Decision. The checks of a command run in order; the first
 * finding that applies decides. Monitor mode is applied in one place (apply), over findings.
 */
export class SubmissionService {
  constructor(private readonly deps: SubmissionDeps) {}

  /** The largest message DATA keeps; the adapter reads past it without storing. */
  get maxMessageBytes(): number {
    return this.deps.maxMessageBytes;
  }

  private get log(): Logger {
    return this.deps.log;
  }

  /** A refusal that no policy mode can turn off. */
  private refusal(event: string, reason: Reason, fields?: Record<string, unknown>, detail?: string): Finding {
    return { verdict: 'refuse', reason, event, fields, detail };
  }

  /** A finding that monitor mode cannot turn off, as the command's decision. */
  private async refuse(s: Submission, event: string, reason: Reason, fields?: Record<string, unknown>, detail?: string): Promise<Decision> {
    return (await this.apply(s, this.refusal(event, reason, fields, detail)))!;
  }

  /**
   * The one place monitor mode is applied (Postfix's warn_if_reject). A finding of a policy in
   * monitor mode is logged and counted as what would have happened, and null says go on as if
   * nothing was found. Otherwise the finding is acted on (suspend, record, notify), logged,
   * and returned as the command's decision.
   */
  private async apply(s: Submission, f: Finding, queueId?: string): Promise<Decision | null> {
    if (f.policy && this.deps.modes[f.policy] === 'monitor') {
      const would = f.verdict === 'refuse' ? (f.would ?? 'refuse') : f.verdict;
      const reason = f.verdict === 'refuse' ? { reason: f.reason.id } : {};
      this.log.warn({ event: 'policy.monitor', policy: f.policy, would, session: s.client.id, ip: s.client.ip, ...reason, ...who(s), ...f.fields });
      return null;
    }
    if (f.verdict !== 'refuse') return { verdict: f.verdict, queueId: queueId! };
    try {
      await f.act?.();
    } catch (e) {
      // The refusal stands, unchanged and on time, whatever became of its incident: a 451
      // instead of the usual 535 would tell a thief that the password was right.
      this.log.error({ event: 'incident.error', session: s.client.id, ip: s.client.ip, reason: f.reason.id, ...who(s), ...f.fields, err: (e as Error).message });
    }
    this.log.info({ event: f.event, session: s.client.id, ip: s.client.ip, reason: f.reason.id, ...who(s), ...f.fields });
    return { verdict: 'refuse', reason: f.reason, detail: f.detail, notBefore: f.notBefore };
  }

  /** Runs checks in order; the first finding that applies is the decision, else `then`. */
  private async first(s: Submission, checks: (() => Finding | null | Promise<Finding | null>)[], then: () => Decision): Promise<Decision> {
    for (const check of checks) {
      const f = await check();
      if (!f) continue;
      const d = await this.apply(s, f);
      if (d) return d;
    }
    return then();
  }

  /** An access verdict as a finding; a refusal that signals compromise acts on its incident. */
  private verdictFinding(
    s: Submission,
    event: string,
    v: Exclude<Verdict, { kind: 'accept' }>,
    principal: Principal,
    policy: PolicyName | undefined,
    /** caught: the directory password the principal used (recorded with a suspension). */
    extra: { sender?: string; fields?: Record<string, unknown>; incidentDetail?: string; caught?: CaughtPassword | null } = {},
  ): Finding {
    const incident = v.incident;
    return {
      verdict: 'refuse',
      reason: v.reason,
      detail: v.detail,
      event,
      policy,
      would: incident?.suspend ? 'suspend' : 'refuse',
      fields: { ...principalFields(principal), ...extra.fields },
      act: incident
        ? async () => {
            await this.deps.incidents.report({
              principal,
              kind: incident.kind,
              clientIp: s.client.ip,
              sender: extra.sender ?? null,
              detail: extra.incidentDetail ?? v.detail?.replace(/^<|>$/g, '') ?? null,
              suspend: incident.suspend,
              compromisedPassword: principal.kind === 'user' ? (extra.caught ?? null) : null,
            });
          }
        : undefined,
    };
  }

  // --- Connections

  /**
   * Postfix anvil's per-client connection cap: smtp-server restarts its idle timer on every
   * byte, so a slow client (one byte every few seconds) holds its slot indefinitely; the cap
   * keeps one address from holding many, leaving max_clients for everyone else.
   */
  async connect(s: Submission, remoteAddress: string): Promise<Decision> {
    const ip = clientKey(remoteAddress);
    const a = await this.deps.connections.admit(ip);
    if (!a.ok) {
      const reason = a.cap === 'ip' ? REASONS.TOO_MANY_CONNECTIONS : REASONS.TOO_MANY_CLIENTS;
      return this.refuse(s, 'session.refused', reason, { connections: a.connections });
    }
    // The client left while the count was asked (another process's table): give it back now.
    if (s.closed) {
      this.deps.connections.release(ip);
      return { verdict: 'accept' };
    }
    s.counted = true;
    return { verdict: 'accept' };
  }

  close(s: Submission, remoteAddress: string): void {
    s.closed = true;
    if (!s.counted) return;
    s.counted = false;
    this.deps.connections.release(clientKey(remoteAddress));
  }

  // --- AUTH

  /**
   * One AUTH: the guessing brake reserves the attempt before anything is verified (and
   * settles it with the outcome), then the password, then the login's network binding. Every
   * 535 leaves at the same moment, measured from the start (whatever path it took: cache,
   * argon2, unknown user, suspended, foreign network, authzid): what a thief can time is part
   * of the reply. A verification slower than the delay answers when it ends.
   */
  async login(s: Submission, auth: Credentials): Promise<Decision> {
    const start = performance.now();
    s.failureDelayed = false;
    const d = await this.authenticate(s, auth);
    // A directory answers a wrong password late (Dovecot's auth_failure_delay) and a right
    // one at once: every other 535 waits as long as a recent wrong password took there.
    if (d.verdict === 'refuse' && d.reason.code === 535) d.notBefore = start + Math.max(this.deps.authFailureDelayMs, s.failureDelayed ? 0 : this.deps.authenticator.failureDelayMs());
    // Only a login answered 235 makes the session someone's: one that failed after the
    // password was proven (a store error while caching it) leaves the session anonymous.
    if (d.verdict === 'accept') s.principal = d.principal;
    else s.caught = null;
    return d;
  }

  private async authenticate(s: Submission, auth: Credentials): Promise<Decision> {
    const { deps } = this;
    const ip = s.client.ip;
    if (!s.client.secure) return this.refuse(s, 'auth.refused', REASONS.TLS_REQUIRED);
    const username = auth.username;
    // Where the login may come from (nothing for a name that does not exist): the places of
    // the app password the password's shape names, if it has its own, else the user's. Is the
    // client inside them, and inside a network narrow enough to say where the owner is (see
    // narrowNetworks; a country or an AS never is)?
    const user = await deps.users.find(username);
    const publicId = user ? appPasswordId(auth.password) : null;
    const named = publicId ? await deps.appPasswords.byPublicId(publicId) : undefined;
    const app = named && named.userId === user!.id ? named : null;
    const places = user ? await this.places(user.id, app) : NO_PLACES;
    const geo = await this.geoFor(s, places);
    // Before any password is verified: right and wrong passwords get the same 454, and
    // nothing is counted against the throttle (see unjudgeable).
    if (this.unjudgeable(ip, places, geo)) return this.refuse(s, 'auth.busy', REASONS.AUTH_TEMPFAIL, { ...principalFields({ kind: 'user', name: username }), geo: 'unavailable' });
    const insideNetworks = () => placeAllowed(ip, places, geo);
    const ownNetwork = () => networkAllowed(ip, narrowNetworks(places.networks));
    const throttled = (no: { scope: ThrottleScope; until: number | null }) =>
      this.refuse(s, 'auth.throttled', no.scope === 'username' ? REASONS.AUTH_USER_THROTTLED : REASONS.AUTH_THROTTLED, {
        ...principalFields({ kind: 'user', name: username }),
        until: no.until === null ? null : new Date(no.until).toISOString(),
      });
    const authzidOk = !(auth.method === 'PLAIN' && auth.authzid && username && auth.authzid.toLowerCase() !== username.toLowerCase());
    // The cache answers only logins that can succeed: a right password from outside the
    // user's networks pays a full verification in the same queue as a wrong one. A hit
    // costs nothing to check, so it reserves no attempt; only a lock stops it.
    const useCache = deps.modes.network === 'monitor' || insideNetworks();
    const hit = authzidOk && useCache ? await deps.authenticator.cached(username, auth.password) : null;
    if (hit) {
      const lock = await deps.throttle.lock(ip, username, ownNetwork);
      return lock ? throttled(lock) : this.judge(s, auth, { kind: 'ok', ...hit, cached: true });
    }
    const admission = await deps.throttle.admit(ip, username, ownNetwork);
    if (!admission.ok) return throttled(admission);
    let outcome: 'ok' | 'fail' | 'void' = 'void';
    try {
      if (!authzidOk) {
        outcome = 'fail';
        return await this.refuse(s, 'auth.fail', REASONS.AUTH_AUTHZID, { ...principalFields({ kind: 'user', name: username }), method: auth.method });
      }
      // The cache again: a login that waited for its turn behind others of the same user
      // (a fleet of devices connecting at once) finds the password proven by then.
      const verified = await deps.authenticator.verify(username, auth.password, { useCache, app, client: s.client });
      const judged = await this.judge(s, auth, verified);
      outcome = judged.verdict === 'accept' ? 'ok' : judged.verdict === 'refuse' && judged.reason.code === 535 ? 'fail' : 'void';
      // Rehash and cache only what was accepted: a refused right password leaves no trace.
      if (judged.verdict === 'accept' && verified.kind === 'ok') await deps.authenticator.accepted(verified.user, username, auth.password, verified.app, verified.caught?.account ?? null);
      return judged;
    } finally {
      try {
        const locked = await deps.throttle.settle(admission.attempt, outcome);
        if (locked.length) this.log.warn({ event: 'auth.lockout', session: s.client.id, ip, ...principalFields({ kind: 'user', name: username }), scope: locked.join(',') });
      } catch (e) {
        // The reservation lapses with its lease; the login's own answer stands.
        this.log.error({ event: 'auth.error', session: s.client.id, ip, err: (e as Error).message });
      }
    }
  }

  /**
   * The places a login may come from: an app password's own networks, countries and ASNs when
   * it has any, else the user's (sender bindings are always the user's).
   */
  private async places(userId: number, app: AppPassword | null): Promise<LoginPlaces> {
    const { bindings, clock } = this.deps;
    const now = clock.now();
    const userBindings = await bindings.list('user', userId, now);
    if (app) {
      const own = placesOf(await bindings.list('app-password', app.id, now));
      if (placesBound(own)) {
        // The user's time-limited exceptions (a trip) are the person's, so every device's.
        const trip = placesOf(userBindings.filter((b) => b.expiresAt !== null));
        return { networks: [...own.networks, ...trip.networks], countries: [...own.countries, ...trip.countries], asns: [...own.asns, ...trip.asns] };
      }
    }
    return placesOf(userBindings);
  }

  /**
   * The IP database when the places need it (loaded on first need: the first such login waits
   * for the load). A database that cannot be loaded places nobody: country and AS bindings
   * then let no one in, CIDRs still do, and the failure is logged.
   */
  private async geoFor(s: Submission, places: LoginPlaces): Promise<Placer | null> {
    if (!needsGeo(places)) return null;
    try {
      return await this.deps.geo.get();
    } catch (e) {
      this.log.error({ event: 'geo.error', session: s.client.id, ip: s.client.ip, err: (e as Error).message });
      return null;
    }
  }

  /** The places need the IP database, it could not be loaded, and no CIDR decides alone. */
  private unjudgeable(ip: string, places: LoginPlaces, geo: Placer | null): boolean {
    return needsGeo(places) && !geo && !networkAllowed(ip, places.networks);
  }

  /** A verified (or cached) password's outcome, judged against the user's state and places. */
  private async judge(s: Submission, auth: Credentials, out: AuthOutcome): Promise<Decision> {
    const { deps } = this;
    const username = auth.username;
    if (out.kind === 'busy') return this.refuse(s, 'auth.busy', REASONS.AUTH_TEMPFAIL, principalFields({ kind: 'user', name: username }));
    // The directory's trouble is ours, never the client's wrong password: no failure counted
    // (454 settles the attempt as void), nobody suspended.
    if (out.kind === 'unavailable') return this.refuse(s, 'auth.unavailable', REASONS.AUTH_TEMPFAIL, { ...principalFields({ kind: 'user', name: username }), backend: 'dovecot', err: out.reason });
    if (out.kind === 'invalid' && out.why === 'compromised') {
      // The reply of a wrong password: the thief learns nothing; the user was told to change it.
      return this.refuse(s, 'auth.compromised_password', REASONS.AUTH_INVALID, { ...principalFields({ kind: 'user', name: username }), method: auth.method });
    }
    if (out.kind === 'invalid') {
      s.failureDelayed = out.delayed === true;
      return this.refuse(s, 'auth.fail', REASONS.AUTH_INVALID, { ...principalFields({ kind: 'user', name: username }), method: auth.method, ...(out.why ? { unprovisioned: true } : {}) });
    }
    const principal: Principal = { kind: 'user', id: out.user.id, name: out.user.username, ref: out.user.principalRef, epoch: out.user.authEpoch };
    const places = await this.places(out.user.id, out.app);
    const geo = await this.geoFor(s, places);
    // Without the IP database a country or AS cannot be judged: that is our failure, not the
    // client's, so a temporary refusal, never a suspension of everyone bound to a country.
    if (this.unjudgeable(s.client.ip, places, geo)) return this.refuse(s, 'auth.busy', REASONS.AUTH_TEMPFAIL, { ...principalFields(principal), geo: 'unavailable' });
    const verdict = judgeLogin(out.user.status, s.client.ip, places, geo);
    const label = out.app ? { app_password: out.app.label } : {};
    if (verdict.kind === 'reject') {
      // A suspended account inside its networks is refused whatever the network policy's mode.
      const policy = verdict.reason.id === 'AUTH_SUSPENDED' ? undefined : 'network';
      // Where the client is, as far as the IP database knows (loaded for these places, or
      // already loaded for someone else's): "203.0.113.9, FR, AS16276 OVH".
      const known = geo ?? deps.geo.loaded();
      const place = describePlace(s.client.ip, known ? known.lookup(s.client.ip) : null);
      const where = loginDetail(place, out.app?.label ?? null);
      // Same moment and same lockout count as a wrong password: a fast 535 would tell a
      // thief the password was right.
      const refused = await this.apply(s, this.verdictFinding(s, 'auth.fail', verdict, principal, policy, { fields: { place, ...label }, incidentDetail: where, caught: out.caught }));
      if (refused) return refused;
    }
    // last_used_at moves at most once a minute: no write for every login of a busy phone.
    if (out.app && (out.app.lastUsedAt === null || out.app.lastUsedAt < deps.clock.now() - 60_000)) {
      const id = out.app.id;
      deps.appPasswords.touch(id, deps.clock.now()).catch((e: unknown) => this.log.error({ event: 'auth.error', session: s.client.id, ip: s.client.ip, err: (e as Error).message }));
    }
    s.caught = out.caught;
    this.log.info({ event: 'auth.ok', session: s.client.id, ip: s.client.ip, ...principalFields(principal), ...label, method: auth.method, cached: out.cached });
    return { verdict: 'accept', principal };
  }

  // --- MAIL, RCPT

  /**
   * Every transaction command passes here. An authenticated session is re-checked against
   * the store each time, so a suspension (by a signal in another session, or by the CLI)
   * stops sessions already open at their next command. Without AUTH, only a device bound to
   * this exact client address may go on; everyone else needs TLS, then AUTH.
   */
  private async gate(s: Submission, command: string): Promise<Finding | null> {
    const { deps } = this;
    const event = `${command}.refused`;
    if (deps.isClosing()) return this.refusal(event, REASONS.SHUTTING_DOWN);
    const principal = s.principal;
    if (principal) {
      const standing = await this.standing(principal);
      if (standing !== 'active') return this.refusal(event, standing === 'changed' ? REASONS.CREDENTIALS_CHANGED : REASONS.ACCOUNT_SUSPENDED, principalFields(principal));
      return null;
    }
    const device = await deps.devices.byAddress(canonicalNetwork(s.client.ip), deps.clock.now());
    if (device) {
      if (device.requireTls && !s.client.secure) return this.refusal(event, REASONS.TLS_REQUIRED, principalFields({ kind: 'device', name: device.name }));
      if (device.status !== 'active') return this.refusal(event, REASONS.ACCOUNT_SUSPENDED, principalFields({ kind: 'device', name: device.name }));
      s.principal = { kind: 'device', id: device.id, name: device.name, ref: device.principalRef };
      this.log.info({ event: 'device.recognised', session: s.client.id, ip: s.client.ip, ...principalFields(s.principal) });
      return null;
    }
    if (!s.client.secure) return this.refusal(event, REASONS.TLS_REQUIRED);
    return this.refusal(event, REASONS.AUTH_REQUIRED);
  }

  /**
   * Whether the session's principal may still send: suspended (or gone), or a user whose
   * credentials changed since this session logged in (its auth_epoch moved: a new password,
   * a reset, an app password revoked), who must log in again.
   */
  private async standing(p: Principal): Promise<'active' | 'suspended' | 'changed'> {
    if (p.kind === 'device') {
      const d = await this.deps.devices.get(p.id);
      return d && d.status === 'active' ? 'active' : 'suspended';
    }
    const u = await this.deps.users.get(p.id);
    if (!u || u.status !== 'active') return 'suspended';
    return p.epoch === undefined || u.authEpoch === p.epoch ? 'active' : 'changed';
  }

  /** Refuses an envelope address that is not in the one form Postern checks and relays. */
  private addressForm(command: 'mail' | 'rcpt', a: EnvelopeArg): Finding | null {
    const form = envelopeAddress(a.address, a.smtputf8);
    if (form.ok) return null;
    const reason = form.problem === 'needs-smtputf8' ? REASONS.NEEDS_SMTPUTF8 : command === 'mail' ? REASONS.SENDER_NOT_NORMAL : REASONS.RECIPIENT_NOT_NORMAL;
    // JSON-escaped in the log line, so the invisible characters can be seen there.
    return this.refusal(`${command}.refused`, reason, { [command === 'mail' ? 'from' : 'rcpt']: a.address });
  }

  /** Refuses a transaction the spool has no room for, before the client sends the data. */
  private spoolRoom(): Finding | null {
    const why = this.deps.spoolNoRoom?.();
    return why ? this.refusal('mail.refused', REASONS.SPOOL_FULL, { why }) : null;
  }

  /** Slow first, then refuse: once too much of this principal's mail waits, say when to come back. */
  private async quotaRefusal(s: Submission, command: string, principal: Principal): Promise<Finding | null> {
    const { deps } = this;
    const over = await deps.quota.refusal(principal);
    if (!over) return null;
    return {
      verdict: 'refuse',
      reason: REASONS.RATE_LIMITED,
      detail: `retry after ${hhmm(over.retryAt)} UTC`,
      event: `${command}.refused`,
      policy: 'limits',
      fields: principalFields(principal),
      act: async () => {
        const now = deps.clock.now();
        // One incident (and admin notice) per window, not one per refused command, across
        // every process sharing the store.
        if (await deps.leases.firstInBurst(`rate-incident ${principal.ref}`, now, now + HOUR)) {
          await deps.incidents.report({ principal, kind: 'rate-limit', clientIp: s.client.ip, detail: 'too much mail waiting for quota', suspend: false, burstMs: HOUR });
        }
      },
    };
  }

  async mail(s: Submission, from: EnvelopeArg): Promise<Decision> {
    return this.first(
      s,
      [
        () => this.gate(s, 'mail'),
        () => this.addressForm('mail', from),
        () => this.spoolRoom(),
        async () => {
          const principal = s.principal!;
          const senders = await this.deps.bindings.values(principal.kind, principal.id, 'sender', this.deps.clock.now());
          const v = judgeSender(principal.kind, from.address, senders);
          return v.kind === 'reject' ? this.verdictFinding(s, 'mail.refused', v, principal, 'sender', { sender: from.address, fields: { sender: from.address }, caught: s.caught }) : null;
        },
        () => this.quotaRefusal(s, 'mail', s.principal!),
      ],
      () => ({ verdict: 'accept' }),
    );
  }

  async rcpt(s: Submission, to: EnvelopeArg, t: Transaction): Promise<Decision> {
    const { deps } = this;
    return this.first(
      s,
      [
        () => this.gate(s, 'rcpt'),
        () => this.addressForm('rcpt', to),
        () => (t.rcptTo.length >= deps.maxRecipients ? this.refusal('rcpt.refused', REASONS.TOO_MANY_RECIPIENTS, { rcpt: to.address }) : null),
        async () => {
          // A message with more distinct recipients than the principal may ever send in a
          // window could never leave the queue: refuse the extra recipients now, while the
          // client can act.
          const principal = s.principal!;
          const distinct = distinctRecipients([...t.rcptTo, to.address]);
          return distinct > (await deps.quota.maxRecipients(principal))
            ? this.refusal('rcpt.refused', REASONS.TOO_MANY_RECIPIENTS, { rcpt: to.address, ...principalFields(principal) })
            : null;
        },
        async () => {
          const principal = s.principal!;
          if (principal.kind !== 'device') return null;
          const v = judgeRecipient(to.address, await deps.bindings.values('device', principal.id, 'recipient', deps.clock.now()));
          return v.kind === 'reject' ? this.verdictFinding(s, 'rcpt.refused', v, principal, undefined, { sender: t.mailFrom?.address ?? '' }) : null;
        },
        () => this.quotaRefusal(s, 'rcpt', s.principal!),
      ],
      () => ({ verdict: 'accept' }),
    );
  }

  // --- DATA

  async data(s: Submission, m: MessageInput): Promise<Decision> {
    const { deps } = this;
    const principal = s.principal;
    const refused = (reason: Reason, fields?: Record<string, unknown>, detail?: string) => this.refuse(s, 'message.refused', reason, fields, detail);
    // smtp-server answers 552 5.3.4 itself; the decision is logged here.
    if (m.tooBig || m.size > deps.maxMessageBytes) return refused(REASONS.MESSAGE_TOO_BIG, { size: m.size });
    if (!principal) return refused(REASONS.AUTH_REQUIRED);
    // DATA passes no gate: without this, recipients accepted before a suspension (by a
    // refused RCPT in this very transaction, another session or the CLI) still get the mail.
    const standing = await this.standing(principal);
    if (standing !== 'active') return refused(standing === 'changed' ? REASONS.CREDENTIALS_CHANGED : REASONS.ACCOUNT_SUSPENDED, principalFields(principal));
    const raw = m.raw;
    const bare = findBareNewline(raw);
    if (bare !== -1) return refused(REASONS.BARE_NEWLINE, { ...principalFields(principal), offset: bare });
    const nul = raw.indexOf(0);
    if (nul !== -1) return refused(REASONS.NUL_IN_DATA, { ...principalFields(principal), offset: nul });
    const headerWrong = headerProblem(raw.toString('latin1', 0, headerEnd(raw)));
    if (headerWrong) return refused(REASONS.HEADER_INVALID, principalFields(principal), headerWrong);

    const now = deps.clock.now();
    const id = newQueueId(now);
    // The envelope as it is stored and relayed: every address in the one form MAIL and RCPT
    // checked (domains as A-labels), a recipient given with a U-label and an A-label kept
    // once (smtp-server already merged the same address in other letter case).
    const relayForm = (a: string) => {
      const f = envelopeAddress(a, true);
      return f.ok ? f.address : a;
    };
    const rcptTo = [...new Set(m.transaction.rcptTo.map(relayForm))];
    const mailFrom = m.transaction.mailFrom ? relayForm(m.transaction.mailFrom.address) : '';
    const data = prepareMessage(raw, {
      queueId: id,
      hostname: deps.hostname,
      helo: m.helo,
      clientIp: s.client.ip,
      protocol: `ESMTP${s.client.secure ? 'S' : ''}${principal.kind === 'user' ? 'A' : ''}`,
      tls: m.tls,
      authenticatedAs: principal.kind === 'user' ? principal.name : null,
      mailFrom,
      rcptTo,
      now,
    });
    const input = { id, data, envelope: { mailFrom, rcptTo }, principal, clientIp: s.client.ip, now };
    let assessment: Assessment;
    try {
      assessment = deps.assess ? await deps.assess(input) : { state: 'queued', score: 0, reasons: [] };
      assessment.state = await this.disposition(s, principal, id, assessment, rcptTo);
      await deps.spool.accept({ ...input, receivedAt: now, state: assessment.state, assessment });
    } catch (e) {
      this.log.error({ event: 'spool.error', session: s.client.id, queue_id: id, err: (e as Error).message });
      return { verdict: 'refuse', reason: REASONS.LOCAL_ERROR };
    }
    this.log.info({ event: 'message.accepted', session: s.client.id, ip: s.client.ip, ...principalFields(principal), queue_id: id, message_id: messageIdOf(data), from: mailFrom, rcpts: rcptTo.length, size: data.length, state: assessment.state, score: assessment.score, ms: deps.clock.now() - now });
    // Who it goes to is personal data, so only at debug level, beside the event above.
    if (this.log.isLevelEnabled('debug')) this.log.debug({ event: 'message.recipients', session: s.client.id, queue_id: id, recipients: rcptTo });
    // After the reply: held notices and the domain history are best effort once the message is safe.
    const after = deps.onAccepted;
    if (after) {
      setImmediate(() => {
        Promise.resolve()
          .then(() => after(input, assessment))
          .catch((e: unknown) => this.log.error({ event: 'policy.error', session: s.client.id, queue_id: id, err: (e as Error).message }));
      });
    }
    return assessment.state === 'held' ? { verdict: 'hold', queueId: id } : assessment.state === 'waiting-quota' ? { verdict: 'wait', queueId: id } : { verdict: 'accept', queueId: id };
  }

  /**
   * Where an accepted message goes in the spool: held if quarantine says so, else queued if
   * quota allows, else waiting. Quota is taken only by mail that is going out now: held mail
   * takes none, and an admin's release sends it without quota (the admin's decision).
   */
  private async disposition(s: Submission, principal: Principal, id: string, a: Assessment, rcptTo: string[]): Promise<QueueState> {
    if (a.state === 'held') {
      const held = await this.apply(s, { verdict: 'hold', policy: 'quarantine', fields: { ...principalFields(principal), queue_id: id, score: a.score, reasons: a.reasons.map((r) => r.id) } }, id);
      if (held) return 'held';
    }
    const state = await this.deps.quota.admit(principal, rcptTo);
    if (state === 'waiting-quota') {
      const waits = await this.apply(s, { verdict: 'wait', policy: 'limits', fields: { ...principalFields(principal), queue_id: id } }, id);
      if (waits) return 'waiting-quota';
    }
    return 'queued';
  }
}
