import { REASONS, type Reason } from '../domain/reasons.js';
import type { IncidentKind, UserStatus } from '../domain/types.js';
import { canonicalAddress, senderAllowed } from './bindings.js';
import { placeAllowed, placesBound, type LoginPlaces, type Placer } from './places.js';

/**
 * Access verdicts for a principal's login, sender and recipients. Pure: the caller reads the
 * bindings and acts on the verdict (reply, suspend, record, notify).
 */
export type Verdict =
  | { kind: 'accept' }
  | { kind: 'reject'; reason: Reason; detail?: string; incident?: { kind: IncidentKind; suspend: boolean } };

const ACCEPT: Verdict = { kind: 'accept' };

/**
 * After a correct password: is this login allowed from this address (its networks, countries
 * or ASNs: see placeAllowed; `geo` is the IP database when the places need it)? Only a client
 * inside the user's places is told the account is suspended: anywhere else the reply is the one
 * a wrong password gets, so a thief never learns the password was right.
 */
export function judgeLogin(status: UserStatus, clientIp: string, places: LoginPlaces, geo: Placer | null): Verdict {
  // Nothing bound is the admin's unfinished setup, not an attack: refuse without suspending.
  if (!placesBound(places)) return { kind: 'reject', reason: REASONS.AUTH_NO_NETWORKS };
  if (!placeAllowed(clientIp, places, geo)) {
    return { kind: 'reject', reason: REASONS.AUTH_FOREIGN_NETWORK, incident: { kind: 'foreign-network', suspend: true } };
  }
  if (status !== 'active') return { kind: 'reject', reason: REASONS.AUTH_SUSPENDED };
  return ACCEPT;
}

/**
 * Is this MAIL FROM one of the principal's senders? A foreign sender after a good login is a
 * compromise signal and suspends. The null sender and an account without senders are refused
 * without suspension: mail clients send <> for read receipts, and no senders is the admin's
 * unfinished setup; neither says the password was stolen.
 */
export function judgeSender(principalKind: 'user' | 'device', mailFrom: string, senders: string[]): Verdict {
  if (!senders.length) return { kind: 'reject', reason: REASONS.NO_SENDERS };
  if (!mailFrom) return { kind: 'reject', reason: REASONS.SENDER_NULL };
  if (senderAllowed(mailFrom, senders)) return ACCEPT;
  return {
    kind: 'reject',
    reason: REASONS.SENDER_NOT_BOUND,
    detail: `<${mailFrom}>`,
    incident: { kind: principalKind === 'user' ? 'foreign-sender' : 'device-foreign-sender', suspend: true },
  };
}

/**
 * A local part holding '%' or '!' is a route, not a mailbox: the percent hack and UUCP bang
 * paths. The receiving MTA may rewrite `u%elsewhere@example.com` to `u@elsewhere` and relay it
 * on, trusting us (Postfix's allow_percent_hack and swap_bangpath are on by default), so for a
 * domain binding these name a recipient outside it.
 */
const ROUTED_LOCAL_PART = /[%!]/;

/** Devices may be bound to recipients too; none bound means any recipient. */
export function judgeRecipient(rcpt: string, recipients: string[]): Verdict {
  if (!recipients.length) return ACCEPT;
  const addr = canonicalAddress(rcpt);
  // An exact binding is the admin's own word, routing characters and all.
  if (addr && recipients.includes(addr)) return ACCEPT;
  if (!ROUTED_LOCAL_PART.test(rcpt.slice(0, Math.max(0, rcpt.lastIndexOf('@')))) && senderAllowed(rcpt, recipients)) return ACCEPT;
  return {
    kind: 'reject',
    reason: REASONS.RECIPIENT_NOT_BOUND,
    detail: `<${canonicalAddress(rcpt) ?? rcpt}>`,
    incident: { kind: 'foreign-recipient', suspend: true },
  };
}
