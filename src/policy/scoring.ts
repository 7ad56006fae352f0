import type { Assessment, ScoreReason } from '../domain/types.js';
import { canonicalAddress, senderAllowed } from './bindings.js';
import type { Limits, Usage } from './limits.js';

/**
 * Quarantine scoring: pure (house rule 2). The caller parses the message (src/quarantine),
 * reads the principal's state from the store, and hands both here; this decides the spool
 * state and says why, and never touches the socket, the spool or the clock.
 */

/** What parsing found in a message; every field is already decoded (RFC 2047, base64, QP). */
export interface MessageFacts {
  /** Mailboxes of the header From: field (usually one). */
  from: Array<{ address: string; name: string }>;
  /** Mailboxes of the other fields that name a sender: Sender, Resent-From, Resent-Sender, Reply-To. */
  otherSenders: Array<{ field: 'sender' | 'resent-from' | 'resent-sender' | 'reply-to'; address: string }>;
  attachments: AttachmentFacts[];
  /** Anchors of the HTML part: target and the text a reader sees. */
  htmlLinks: Array<{ href: string; text: string }>;
  /** http(s) URLs written out in the text part (and in HTML outside anchors' href). */
  textUrls: string[];
}

export interface AttachmentFacts {
  filename: string | null;
  contentType: string;
  /** A PE/MZ executable by content, whatever its name and type claim. */
  executableContent: boolean;
  /** Names inside a zip archive; null when the part is not a (readable) zip. */
  archiveEntries: string[] | null;
}

/** The principal's state when the message arrived, as the store had it. */
export interface ScoringState {
  rcptTo: string[];
  /** The user's sender bindings; null when it has none, so the From: signal cannot judge. */
  allowedSenders: string[] | null;
  /** Recipient domains (lower case) this principal has never sent to. */
  newDomains: string[];
  openIncident: boolean;
  nearRateLimit: boolean;
  /** Final remote verdicts in the recent window (delivery's reputation feedback). */
  remoteOutcomes: { total: number; rejected: number };
}

export const SIGNALS = [
  'FROM_NOT_BOUND',
  'REPLY_TO_NOT_BOUND',
  'FROM_DISPLAY_NAME_ADDRESS',
  'EXECUTABLE_ATTACHMENT',
  'ARCHIVED_EXECUTABLE',
  'MANY_RECIPIENTS',
  'MANY_DOMAINS',
  'LINK_TEXT_MISMATCH',
  'LINK_TO_IP',
  'LINK_SHORTENER',
  'NEAR_RATE_LIMIT',
  'OPEN_INCIDENT',
  'REMOTE_REJECTIONS',
  'NEW_DOMAIN',
] as const;
export type Signal = (typeof SIGNALS)[number];

/**
 * Signals that may hold a message on their own. Each is close to proof on its own: mail the
 * account may not sign as, or a payload no business mail needs. Every other signal is common
 * in honest mail (newsletters use click trackers and shorteners, a parent mails the class,
 * every first mail goes to a new domain), so it holds only together with another signal,
 * whatever weight an admin gives it.
 */
export const STRONG_SIGNALS: ReadonlySet<Signal> = new Set<Signal>(['FROM_NOT_BOUND', 'EXECUTABLE_ATTACHMENT', 'ARCHIVED_EXECUTABLE']);

export interface ScoringConfig {
  threshold: number;
  weights: Record<Signal, number>;
  manyRecipients: number;
  manyDomains: number;
  /** Registrable domains (lower case) of URL shorteners. */
  shorteners: ReadonlySet<string>;
  rejectionRate: number;
  rejectionMinSample: number;
}

/** Host and registrable-domain helpers the caller supplies (tldts), so policy stays dependency-free. */
export interface DomainTools {
  /** "mail.example.co.uk" -> "example.co.uk"; null for IPs and unknown suffixes. */
  registrable(host: string): string | null;
}

// Windows runs these by double-click; .lnk/.iso/.img are how payloads slipped past
// extension filters once Office began blocking macros from the Internet (2022).
const EXECUTABLE_EXT = new Set(['exe', 'scr', 'js', 'jse', 'vbs', 'vbe', 'wsf', 'wsh', 'bat', 'cmd', 'com', 'pif', 'cpl', 'msi', 'msc', 'ps1', 'lnk', 'iso', 'img', 'vhd', 'vhdx', 'hta', 'jar', 'reg']);
// Office formats that carry VBA macros (the "m" formats, templates and add-ins).
const MACRO_EXT = new Set(['docm', 'dotm', 'xlsm', 'xltm', 'xlsb', 'xlam', 'pptm', 'potm', 'ppam', 'ppsm', 'sldm']);
const EXECUTABLE_TYPES = [
  /^application\/(x-)?(msdownload|msdos-program|ms-dos-executable|dosexec|executable|ms-installer|msi)$/,
  /^(application|text)\/(x-)?(javascript|ecmascript|jscript|vbscript|vbs)$/,
  /^application\/(x-)?(hta|bat|msdos-batch)$/,
  /^application\/(x-)?(iso9660-image|ms-shortcut|raw-disk-image)$/,
  /^application\/vnd\.ms-[a-z]+(\.[a-z]+)*\.macroenabled\.12$/,
];

function extension(name: string): string {
  const base = name.replace(/[\s.]+$/, '').toLowerCase();
  const dot = base.lastIndexOf('.');
  return dot === -1 ? '' : base.slice(dot + 1);
}

/** Why a name or type is dangerous to open, or null. */
export function dangerousName(name: string): string | null {
  // Inside an Office file (itself a zip): the VBA project of a macro document renamed .docx.
  if (/(^|[\\/])vbaproject\.bin$/i.test(name)) return 'VBA macros';
  const ext = extension(name);
  if (EXECUTABLE_EXT.has(ext)) return `.${ext}`;
  if (MACRO_EXT.has(ext)) return `.${ext} (macros)`;
  return null;
}

function dangerousType(contentType: string): boolean {
  const t = contentType.toLowerCase().split(';')[0]!.trim();
  return EXECUTABLE_TYPES.some((re) => re.test(t));
}

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

// An address-looking token in a display name ("ceo@bank.example" <x@elsewhere>): the trick
// that makes a mail client show one address while replies and trust go to another.
const ADDRESS_IN_TEXT = /[^\s<>"'(),;:@]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}/i;

const canonical = (address: string) => canonicalAddress(address) ?? address.toLowerCase();

/** The host a piece of visible text shows ("www.bank.example", "https://bank.example/login"), or null. */
export function hostInText(text: string): string | null {
  const t = text.trim().replace(/^[<([]+|[>)\].,;:!?]+$/g, '');
  const m = /^(?:[a-z][a-z0-9+.-]*:\/\/)?(?:[^\s/@]*@)?((?:[a-z0-9-]+\.)+[a-z]{2,}|\d{1,3}(?:\.\d{1,3}){3})(?::\d+)?(?:[/?#]\S*)?$/i.exec(t);
  return m ? m[1]!.toLowerCase() : null;
}

/** Hostname of an http(s) URL (WHATWG-normalised: 0x7f.1 and 2130706433 become 127.0.0.1), or null. */
export function urlHost(href: string): string | null {
  let u: URL;
  try {
    u = new URL(href.trim());
  } catch {
    return null;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  return u.hostname.toLowerCase().replace(/\.$/, '');
}

const isIpHost = (host: string) => /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.startsWith('[');

/** Keeps details short and on one line: they end up in listings and log lines. */
function detail(items: string[], max = 3): string {
  const uniq = [...new Set(items)];
  const shown = uniq.slice(0, max).map((s) => s.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 80));
  return uniq.length > max ? `${shown.join(', ')} (+${uniq.length - max} more)` : shown.join(', ');
}

/** Scores a message: the signals that fired, each with its configured weight, and the spool state. */
export function scoreMessage(facts: MessageFacts, state: ScoringState, cfg: ScoringConfig, tools: DomainTools): Assessment {
  const reasons: ScoreReason[] = [];
  const add = (id: Signal, d?: string) => {
    if (cfg.weights[id] > 0) reasons.push(d === undefined ? { id, weight: cfg.weights[id] } : { id, weight: cfg.weights[id], detail: d });
  };

  // Header From: the address recipients see and DMARC aligns on; the envelope sender is
  // bound at MAIL FROM (judgeSender), this one only here.
  // Sender and Resent-From name the author as much as From does (DMARC aside, clients show
  // them), so they weigh the same. Reply-To only steers the answers: weak on its own, since
  // people do ask for replies at a personal or a team address.
  if (state.allowedSenders && state.allowedSenders.length) {
    const bound = (a: string) => senderAllowed(a, state.allowedSenders!);
    const unbound = facts.from.filter((f) => !bound(f.address)).map((f) => f.address || '(no address)');
    for (const o of facts.otherSenders) {
      if (o.field !== 'reply-to' && !bound(o.address)) unbound.push(`${o.field === 'sender' ? 'Sender' : o.field === 'resent-from' ? 'Resent-From' : 'Resent-Sender'}: ${o.address || '(no address)'}`);
    }
    if (unbound.length) add('FROM_NOT_BOUND', detail(unbound));
    const replyTo = facts.otherSenders.filter((o) => o.field === 'reply-to' && !bound(o.address)).map((o) => o.address || '(no address)');
    if (replyTo.length) add('REPLY_TO_NOT_BOUND', detail(replyTo));
  }
  const spoofNames = facts.from.flatMap((f) => {
    const m = ADDRESS_IN_TEXT.exec(f.name);
    return m && canonical(m[0]) !== canonical(f.address) ? [m[0]] : [];
  });
  if (spoofNames.length) add('FROM_DISPLAY_NAME_ADDRESS', detail(spoofNames));

  const direct: string[] = [];
  const archived: string[] = [];
  for (const a of facts.attachments) {
    const name = a.filename ?? '';
    const why = (name && dangerousName(name)) || (dangerousType(a.contentType) ? a.contentType.split(';')[0]!.trim().toLowerCase() : null) || (a.executableContent ? 'executable content' : null);
    if (why) direct.push(name ? `${name}` : why);
    for (const entry of a.archiveEntries ?? []) {
      if (dangerousName(entry)) archived.push(`${name || 'archive'}: ${entry}`);
    }
  }
  if (direct.length) add('EXECUTABLE_ATTACHMENT', detail(direct));
  if (archived.length) add('ARCHIVED_EXECUTABLE', detail(archived));

  const domains = new Set(state.rcptTo.map(domainOf));
  if (state.rcptTo.length >= cfg.manyRecipients) add('MANY_RECIPIENTS', `${state.rcptTo.length} recipients`);
  if (domains.size >= cfg.manyDomains) add('MANY_DOMAINS', `${domains.size} domains`);

  const mismatched: string[] = [];
  const ipLinks: string[] = [];
  const shortLinks: string[] = [];
  const targets = [...facts.htmlLinks.map((l) => l.href), ...facts.textUrls];
  for (const l of facts.htmlLinks) {
    const target = urlHost(l.href);
    const shown = hostInText(l.text);
    if (!target || !shown) continue;
    // Compare registrable domains: "www.bank.example" shown over "login.bank.example" is
    // the same owner; "bank.example" shown over "bank.example.evil.test" is not.
    const a = isIpHost(shown) ? shown : (tools.registrable(shown) ?? shown);
    const b = isIpHost(target) ? target : (tools.registrable(target) ?? target);
    if (a !== b) mismatched.push(`${shown} -> ${target}`);
  }
  for (const href of targets) {
    const host = urlHost(href);
    if (!host) continue;
    if (isIpHost(host)) ipLinks.push(host);
    const reg = tools.registrable(host);
    if (cfg.shorteners.has(host.replace(/^www\./, '')) || (reg && cfg.shorteners.has(reg))) shortLinks.push(host);
  }
  if (mismatched.length) add('LINK_TEXT_MISMATCH', detail(mismatched));
  if (ipLinks.length) add('LINK_TO_IP', detail(ipLinks));
  if (shortLinks.length) add('LINK_SHORTENER', detail(shortLinks));

  if (state.nearRateLimit) add('NEAR_RATE_LIMIT');
  if (state.openIncident) add('OPEN_INCIDENT');
  const { total, rejected } = state.remoteOutcomes;
  if (total >= cfg.rejectionMinSample && rejected / total >= cfg.rejectionRate) {
    add('REMOTE_REJECTIONS', `${rejected} of ${total} rejected`);
  }

  // A first message to a new domain is every honest user's Monday; it only sharpens
  // a message that already looks wrong (the compromised account writing to strangers).
  if (reasons.length && state.newDomains.length) add('NEW_DOMAIN', detail(state.newDomains));

  return verdict(reasons, cfg.threshold);
}

/** The spool state for a set of reasons: held at the threshold, unless only one weak signal fired. */
export function verdict(reasons: ScoreReason[], threshold: number): Assessment {
  const score = reasons.reduce((s, r) => s + r.weight, 0);
  const strong = reasons.some((r) => STRONG_SIGNALS.has(r.id as Signal));
  const held = score >= threshold && (strong || reasons.length >= 2);
  return { state: held ? 'held' : 'queued', score, reasons };
}

/**
 * Has the principal used `share` or more of any of its rate windows? An account
 * sending as fast as it is allowed is what a stolen one does; a person rarely is.
 */
export function nearRateLimit(limits: Limits, usage: Usage, share: number): boolean {
  return (
    usage.messagesHour >= share * limits.messagesPerHour ||
    usage.recipientsHour >= share * limits.recipientsPerHour ||
    usage.recipientsDay >= share * limits.recipientsPerDay
  );
}

/**
 * A message that could not be assessed is held, not waved through: an attacker who can
 * break the parser must not thereby skip the checks. An admin sees the reason and decides.
 */
export function unassessable(why: string, threshold: number): Assessment {
  return { state: 'held', score: threshold, reasons: [{ id: 'UNASSESSABLE', weight: threshold, detail: why.slice(0, 200) }] };
}
