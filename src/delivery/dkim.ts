import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { fieldAddresses, headerFields } from '../policy/headers.js';
import { headerEnd } from '../spool/message.js';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import type { DkimKey } from '../store/dkim.js';
import type { DkimStore, Store } from '../store/index.js';

import { DKIM_LABEL as LABEL, isDkimDomain as isDomain, readDkimFiles } from '../dns/local.js';

/** The DNS TXT record that publishes a key: name and value. */
export function dkimTxtRecord(domain: string, selector: string, privateKeyPem: string): { name: string; value: string } {
  const spki = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'der' }).toString('base64');
  return { name: `${selector}._domainkey.${domain.toLowerCase()}`, value: `v=DKIM1; k=rsa; p=${spki}` };
}

/**
 * A new RSA-2048 key (RFC 8301: at least 1024, 2048 recommended; 2048 still fits one TXT
 * record in strings of 255) for the store, and the TXT record to publish. The caller adds it
 * with store.dkim.add, which refuses a selector already taken: a replaced key silently breaks
 * every signature until DNS catches up. It is inactive: it signs once `dkim activate` has
 * seen its record in DNS, not before receivers can find it.
 */
export function newDkimKey(domain: string, selector: string, now: number): { key: DkimKey; name: string; value: string } {
  if (!isDomain(domain)) throw new Error(`invalid domain ${JSON.stringify(domain)}`);
  if (!LABEL.test(selector)) throw new Error(`invalid selector ${JSON.stringify(selector)}: letters, digits and hyphens`);
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const key = { domain: domain.toLowerCase(), selector: selector.toLowerCase(), privateKeyPem: pem, createdAt: now, activatedAt: null };
  return { key, ...dkimTxtRecord(key.domain, key.selector, pem) };
}

/**
 * Imports the key files of data_dir/dkim into the store, on every start: a key is added under
 * its file's domain and selector, made and activated as of the file's modification time. An
 * admin who puts a key file there means it to sign, as it did before keys moved to the store
 * (and the newest file still signs), unless a key activated later in the store signs already.
 * A name the store already has keeps the stored key; a file that differs from it is reported,
 * never imported over it. The files are left in place.
 */
export async function importDkimFiles(store: Pick<Store, 'dkim'>, dataDir: string, log: Logger): Promise<void> {
  for (const f of readDkimFiles(dataDir)) {
    if ('error' in f) {
      log.warn({ event: 'dkim.import_failed', path: f.path, err: f.error });
      continue;
    }
    const outcome = await store.dkim.importKey({ domain: f.domain, selector: f.selector, privateKeyPem: f.pem, createdAt: f.mtime, activatedAt: f.mtime });
    if (outcome === 'added') log.info({ event: 'dkim.imported', path: f.path, domain: f.domain, selector: f.selector });
    else if (outcome === 'different') log.warn({ event: 'dkim.import_conflict', path: f.path, domain: f.domain, selector: f.selector });
  }
}

/** Splits a TXT value into quoted strings of at most 255 bytes (RFC 1035 character-strings). */
export function txtZoneLine(name: string, value: string): string {
  const parts = value.match(/.{1,255}/g) ?? [''];
  return `${name}. IN TXT ( ${parts.map((p) => `"${p}"`).join(' ')} )`;
}

/**
 * The domain of the header From address: DKIM aligns with it (DMARC), not the envelope.
 * Null unless the message has exactly one From field with exactly one address: with two,
 * which one a receiver shows is anyone's guess, and signing would lend the domain to both.
 */
export function headerFromDomain(raw: Buffer): string | null {
  const parsed = headerFields(raw.toString('latin1', 0, headerEnd(raw)));
  if ('badLine' in parsed) return null;
  const froms = parsed.fields.filter((f) => f.name === 'from');
  if (froms.length !== 1) return null;
  const addrs = fieldAddresses(froms[0]!.value);
  const address = addrs.length === 1 ? addrs[0]!.address : '';
  const at = address.lastIndexOf('@');
  return at > 0 ? address.slice(at + 1).toLowerCase() : null;
}

/**
 * Fields signed, each over-signed (RFC 6376 section 8.15): listed in h= once more than the
 * message has them, so a field of that name added later, above ours (a second From, a
 * Reply-To), breaks the signature instead of riding on it. A field the message lacks is
 * listed once: its absence is signed. No library offers this: nodemailer's signer lists each
 * name once and mailauth's lists only the instances present, so the signature is made here;
 * mailauth verifies it in the tests.
 */
const SIGNED_FIELDS = ['from', 'sender', 'reply-to', 'subject', 'date', 'to', 'cc', 'message-id', 'in-reply-to', 'references', 'mime-version', 'content-type', 'content-transfer-encoding'];

/**
 * RFC 6376 3.4.2 relaxed header canonicalization: lower-case name, unfolded, runs of WSP as
 * one SP, no WSP at either end. WSP is SP and HTAB only: String.trim() would also strip
 * 0xA0, the last byte of many UTF-8 characters in a Latin-1 string (à, Р, だ).
 */
export function relaxedHeader(name: string, value: string): string {
  return `${name}:${value.replace(/\r\n(?=[ \t])/g, '').replace(/[ \t]+/g, ' ').replace(/^ | $/g, '')}`;
}

/**
 * RFC 6376 3.4.4 relaxed body canonicalization. Latin-1 keeps every byte as one char. The
 * trailing empty lines are cut by a scan from the end, not a regex: an unanchored
 * /(\r\n)*$/ is quadratic on a long run of CRLFs, and delivery shares the event loop.
 */
export function relaxedBody(body: string): string {
  const s = body.replace(/[ \t]+/g, ' ').replace(/ (?=\r\n|$)/g, '');
  let end = s.length;
  while (end >= 2 && s.charCodeAt(end - 2) === 13 && s.charCodeAt(end - 1) === 10) end -= 2;
  return end ? `${s.slice(0, end)}\r\n` : '';
}

/** The message with an rsa-sha256 relaxed/relaxed DKIM-Signature prepended. */
export function dkimSign(raw: Buffer, opts: { domain: string; selector: string; key: string }): Buffer {
  const end = headerEnd(raw);
  const parsed = headerFields(raw.toString('latin1', 0, end));
  if ('badLine' in parsed) throw new Error(`header line ${parsed.badLine} is not a header field`);
  const bodyStart = raw[end] === 0x0d && raw[end + 1] === 0x0a ? end + 2 : end;
  const bh = createHash('sha256').update(relaxedBody(raw.toString('latin1', bodyStart)), 'latin1').digest('base64');
  const names: string[] = [];
  const hashed: string[] = [];
  for (const name of SIGNED_FIELDS) {
    // Instances are taken bottom-up (RFC 6376 5.4.2); the extra listing selects nothing.
    const present = parsed.fields.filter((f) => f.name === name).reverse();
    for (const f of present) hashed.push(`${relaxedHeader(name, f.value)}\r\n`);
    for (let i = 0; i <= present.length; i++) names.push(name);
  }
  // h= folds after a colon (RFC 6376 3.5 allows FWS there), keeping lines short.
  const lines = [''];
  for (const n of names) {
    const last = lines.at(-1)!;
    if (last && last.length + n.length > 64) lines.push(n);
    else lines[lines.length - 1] = last ? `${last}:${n}` : n;
  }
  const h = lines.join(':\r\n\t');
  const header = `DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=${opts.domain}; s=${opts.selector};\r\n\th=${h};\r\n\tbh=${bh};\r\n\tb=`;
  const input = hashed.join('') + relaxedHeader('dkim-signature', header.slice('DKIM-Signature:'.length));
  const b = sign('sha256', Buffer.from(input, 'latin1'), opts.key).toString('base64');
  const folded = `${header}${b.replace(/(.{1,72})/g, '$1\r\n\t').replace(/\r\n\t$/, '')}\r\n`;
  return Buffer.concat([Buffer.from(folded, 'latin1'), raw]);
}

/**
 * Signs outgoing mail whose header From domain has an activated key in the store
 * (relaxed/relaxed, rsa-sha256, see dkimSign); a domain whose keys are all inactive is sent
 * unsigned, as one without keys. When a domain has several the one activated last signs:
 * keygen a new selector, publish its record, `dkim activate` it, and signing moves over on
 * every node at its next cache refresh (within cacheMs, a minute by default), while the old
 * record is still published. A store that cannot be read fails the attempt (it is retried)
 * rather than sending the mail unsigned.
 */
export class DkimSigner {
  // Misses are cached too (most domains have no key), so the store is asked at most once per
  // domain per cacheMs. The cache is by time, not by notification: every node on a shared
  // store sees an activation within cacheMs, whichever node made it.
  private readonly cache = new Map<string, { entry: DkimKey | null; at: number }>();

  constructor(
    private readonly keys: Pick<DkimStore, 'signing'>,
    private readonly clock: Clock,
    private readonly cacheMs = 60_000,
  ) {}

  private async keyFor(domain: string): Promise<DkimKey | null> {
    const now = this.clock.now();
    const hit = this.cache.get(domain);
    if (hit && now - hit.at < this.cacheMs) return hit.entry;
    const entry = await this.keys.signing(domain);
    this.cache.set(domain, { entry, at: now });
    return entry;
  }

  /** The message with a DKIM-Signature prepended, or the same bytes when there is no key. */
  async sign(raw: Buffer): Promise<{ raw: Buffer; domain: string | null; selector: string | null }> {
    const domain = headerFromDomain(raw);
    if (!domain || !isDomain(domain)) return { raw, domain: null, selector: null };
    const k = await this.keyFor(domain);
    if (!k) return { raw, domain: null, selector: null };
    return { raw: dkimSign(raw, { domain, selector: k.selector, key: k.privateKeyPem }), domain, selector: k.selector };
  }
}
