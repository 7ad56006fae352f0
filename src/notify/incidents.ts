import type { Clock } from '../domain/clock.js';
import type { CaughtPassword, Incident, IncidentKind, Principal } from '../domain/types.js';
import { principalFields, type Logger } from '../obs/log.js';
import { loginDetailParts } from '../policy/places.js';
import type { Spool } from '../spool/spool.js';
import type { Store } from '../store/index.js';
import { rfc5322Date } from '../spool/message.js';
import { systemMessage } from './compose.js';

/**
 * Suspends a user or device and, in the same transaction, holds its mail that is still
 * waiting for quota: once an account is known to be stolen, its queued burst is for an admin
 * to judge (postern quarantine), not for the drain to keep sending.
 */
export function suspendPrincipal(
  store: Pick<Store, 'tx'>,
  p: Principal,
  reason: string,
  now: number,
  /** The directory password used, kept as its fingerprint in the same transaction (see Authenticator.fingerprint). */
  compromisedPassword: CaughtPassword | null = null,
): Promise<{ changed: boolean; held: number }> {
  return store.tx(async (t) => {
    const changed = p.kind === 'user' ? await t.users.suspend(p.id, reason, now) : await t.devices.suspend(p.id, reason, now);
    const held = await t.limits.holdWaiting(p.ref, `suspended: ${reason}`, now);
    if (compromisedPassword && p.kind === 'user') await t.credentials.markCompromised(compromisedPassword.fingerprint, compromisedPassword.account, p.id, now);
    return { changed, held };
  });
}

export interface NotifyConfig {
  hostname: string;
  admins: string[];
  /** "" = postmaster@hostname */
  from: string;
  helpdesk: string;
  burstMinutes: number;
  /** Users' passwords are a directory's ([auth] backend = "dovecot"): Postern cannot change them. */
  directory?: boolean;
}

export interface IncidentReport {
  principal: Principal;
  kind: IncidentKind;
  clientIp: string | null;
  sender?: string | null;
  detail?: string | null;
  /** Compromise signals suspend; rate limits and remote rejections only record and notify. */
  suspend: boolean;
  /** The directory password the signal caught, as its keyed fingerprint (suspensions only). */
  compromisedPassword?: CaughtPassword | null;
  /** Record nothing if the principal has an unresolved incident of this kind opened since then. */
  unlessOpenSince?: number;
  /** Notice burst window for this report; default [notify] burst_minutes. */
  burstMs?: number;
}

const WHAT: Record<string, (r: IncidentReport) => string> = {
  // detail: "203.0.113.9, FR, AS16276 OVH" (what the IP database knows), and "; app password LABEL".
  'foreign-network': (r) => {
    const { place: where, appLabel: app } = loginDetailParts(r.detail ?? r.clientIp ?? 'an unknown address');
    return `${app ? `The app password "${app}" of this account` : 'The correct password for this account'} was used from ${where}, an address outside the networks it may send from.`;
  },
  'foreign-sender': (r) => `The account tried to send mail as <${r.sender}>, an address it may not use.`,
  'device-foreign-sender': (r) => `The device at ${r.clientIp} tried to send mail as <${r.sender}>, an address it may not use.`,
  'foreign-recipient': (r) => `The device at ${r.clientIp} tried to send mail to <${r.detail}>, a recipient it may not write to.`,
};

/**
 * Acts on a compromise signal that policy detected: suspends the principal, records the
 * incident, and (once per burst) queues the notices. Notices go through the spool with no
 * principal, so the suspended user's bindings and limits never hold them back.
 */
export class IncidentResponder {
  constructor(
    private readonly store: Pick<Store, 'tx' | 'users' | 'incidents' | 'bindings'>,
    private readonly spool: Spool,
    private readonly cfg: NotifyConfig,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  get from(): string {
    return this.cfg.from || `postmaster@${this.cfg.hostname}`;
  }

  /** The incident recorded; null when `r.unlessOpenSince` found one of its kind still open. */
  async report(r: IncidentReport): Promise<Incident | null> {
    const now = this.clock.now();
    const what = (WHAT[r.kind] ?? ((x: IncidentReport) => x.detail ?? x.kind))(r);
    if (r.suspend) {
      const reason = `${r.kind}${r.clientIp ? ` from ${r.clientIp}` : ''}${r.sender ? ` as <${r.sender}>` : ''}`;
      const { changed, held } = await suspendPrincipal(this.store, r.principal, reason, now, r.compromisedPassword ?? null);
      const kept = r.compromisedPassword ? { password_refused: true } : {};
      if (changed) this.log.warn({ event: `${r.principal.kind}.suspended`, ...principalFields(r.principal), reason: r.kind, ip: r.clientIp, sender: r.sender ?? null, held, ...kept });
    }
    const row = { principalKind: r.principal.kind, principalId: r.principal.id, principalName: r.principal.name, principalRef: r.principal.ref, kind: r.kind, clientIp: r.clientIp, sender: r.sender ?? null, detail: r.detail ?? null };
    const burst = r.burstMs ?? this.cfg.burstMinutes * 60_000;
    const recorded = r.unlessOpenSince === undefined ? await this.store.incidents.record(row, now, burst) : await this.store.incidents.recordUnlessOpen(row, now, burst, r.unlessOpenSince);
    if (!recorded) return null;
    const { incident, notify } = recorded;
    this.log.warn({ event: 'incident.recorded', incident: incident.id, ...principalFields(r.principal), kind: r.kind, ip: r.clientIp, notify });
    if (notify) await this.queueNotices(r, incident, what, now);
    return incident;
  }

  private async notifyAddress(r: IncidentReport, now: number): Promise<string | null> {
    if (r.principal.kind !== 'user') return null;
    const user = await this.store.users.get(r.principal.id);
    if (user?.notifyAddress) return user.notifyAddress;
    return (await this.store.bindings.values('user', r.principal.id, 'sender', now)).find((s) => !s.startsWith('@')) ?? null;
  }

  private async queueNotices(r: IncidentReport, incident: Incident, what: string, now: number): Promise<void> {
    const when = rfc5322Date(now);
    const helpdesk = this.cfg.helpdesk ? `your helpdesk (${this.cfg.helpdesk})` : 'your helpdesk';
    const who = `${r.principal.kind} ${r.principal.name}`;
    const messages = [];
    const userAddr = await this.notifyAddress(r, now);
    if (userAddr && r.suspend) {
      messages.push({
        to: [userAddr],
        subject: `Sending from your mail account ${r.principal.name} has been suspended`,
        text: [
          `Hello,`,
          ``,
          `The mail relay ${this.cfg.hostname} suspended sending for your account "${r.principal.name}" on ${when}.`,
          ``,
          `What happened: ${what}`,
          // A login from a foreign network is refused before any message: say so, not "the message".
          r.kind === 'foreign-network' ? `The login was refused, so nothing was sent from it.` : `The message was not sent.`,
          ``,
          `If this was you (for example, you are travelling or set up a new address), contact ${helpdesk}; they can restore access.`,
          ...(this.cfg.directory && r.compromisedPassword
            ? [
                `If this was not you, someone else knows your password. Change it now, where you usually change the password you read your mail with, and contact ${helpdesk}.`,
                `Until you change it, this relay refuses that password for sending, even after access is restored. Reading mail keeps working.`,
              ]
            : [`If this was not you, someone else knows your password. Contact ${helpdesk}: they will set a new password for you.`]),
          `Change the password of any other account where you used the same one.`,
          ``,
          `Your mail program will show errors when sending until access is restored. Receiving mail is not affected.`,
          ``,
          `Incident number: ${incident.id}`,
        ].join('\n'),
      });
    }
    if (this.cfg.admins.length) {
      const fix =
        r.principal.kind !== 'user'
          ? [`  postern device unsuspend ${r.principal.name} --reason "..."`]
          : this.cfg.directory
            ? [
                `  postern user reset ${r.principal.name}            (suspension lifted, incidents resolved)`,
                ...(r.compromisedPassword
                  ? [
                      `The password used stays refused by Postern until ${r.principal.name} changes it in the directory; IMAP is not affected.`,
                      `If it was a false alarm (the user's own login), let that password work again:`,
                      `  postern user reset ${r.principal.name} --clear-compromised --reason "false alarm"`,
                    ]
                  : []),
              ]
            : [`  postern user reset ${r.principal.name}            (new password, suspension lifted)`, `  postern user unsuspend ${r.principal.name} --reason "false alarm"`];
      messages.push({
        to: this.cfg.admins,
        subject: `[postern] ${r.suspend ? 'Suspended' : 'Incident for'} ${who}: ${r.kind}${r.clientIp ? ` from ${r.clientIp}` : ''}`,
        text: [
          `${r.suspend ? `Postern suspended ${who}` : `Postern recorded an incident for ${who}`} on ${when}.`,
          ``,
          `Incident:   ${incident.id} (${r.kind})`,
          `Client IP:  ${r.clientIp ?? '-'}`,
          `Sender:     ${r.sender ?? '-'}`,
          `Detail:     ${what}`,
          ``,
          r.suspend ? `The user was notified${userAddr ? ` at ${userAddr}` : ' (no notification address known)'}. To restore sending:` : 'No action was taken automatically. See:',
          ...(r.suspend ? fix : [`  postern incidents --user ${r.principal.name}`]),
          ``,
          `Further incidents for ${who} within ${this.cfg.burstMinutes} minutes are recorded without another notice:`,
          `  postern incidents --user ${r.principal.name} --open`,
        ].join('\n'),
      });
    }
    for (const m of messages) {
      const msg = systemMessage({ from: this.from, ...m }, this.cfg.hostname, now);
      this.spool
        .accept(msg)
        .then(() => this.log.info({ event: 'notice.queued', queue_id: msg.id, incident: incident.id, to: m.to }))
        .catch((e: unknown) => this.log.error({ event: 'notice.error', incident: incident.id, err: (e as Error).message }));
    }
  }
}
