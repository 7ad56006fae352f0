import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import DKIM from 'nodemailer/lib/dkim';
import addressparser from 'nodemailer/lib/addressparser';
import type { Clock } from '../domain/clock.js';

/**
 * DKIM keys live at data_dir/dkim/<domain>/<selector>.key (PKCS#8 PEM, mode 0600). The doctor
 * reads the same layout to check the published TXT record, so the layout is an interface.
 */
export const dkimDir = (dataDir: string) => path.join(dataDir, 'dkim');
export const dkimKeyPath = (dataDir: string, domain: string, selector: string) =>
  path.join(dkimDir(dataDir), domain.toLowerCase(), `${selector}.key`);

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;
const isDomain = (d: string) => d.length <= 253 && d.includes('.') && d.split('.').every((l) => LABEL.test(l));

export class DkimKeyExistsError extends Error {}

/** The DNS TXT record that publishes a key: name and value. */
export function dkimTxtRecord(domain: string, selector: string, privateKeyPem: string): { name: string; value: string } {
  const spki = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'der' }).toString('base64');
  return { name: `${selector}._domainkey.${domain.toLowerCase()}`, value: `v=DKIM1; k=rsa; p=${spki}` };
}

/**
 * Creates an RSA-2048 key (RFC 8301: at least 1024, 2048 recommended; 2048 still fits one TXT
 * record in strings of 255). Refuses to overwrite: a replaced key silently breaks every
 * signature until DNS catches up.
 */
export function generateDkimKey(dataDir: string, domain: string, selector: string): { path: string; name: string; value: string } {
  if (!isDomain(domain)) throw new Error(`invalid domain ${JSON.stringify(domain)}`);
  if (!LABEL.test(selector)) throw new Error(`invalid selector ${JSON.stringify(selector)}: letters, digits and hyphens`);
  const file = dkimKeyPath(dataDir, domain, selector);
  if (existsSync(file)) throw new DkimKeyExistsError(file);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  writeFileSync(`${file}.tmp`, pem, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
  return { path: file, ...dkimTxtRecord(domain, selector, pem) };
}

/** Splits a TXT value into quoted strings of at most 255 bytes (RFC 1035 character-strings). */
export function txtZoneLine(name: string, value: string): string {
  const parts = value.match(/.{1,255}/g) ?? [''];
  return `${name}. IN TXT ( ${parts.map((p) => `"${p}"`).join(' ')} )`;
}

/** The domain of the header From address: DKIM aligns with it (DMARC), not the envelope. */
export function headerFromDomain(raw: Buffer): string | null {
  const end = raw.indexOf('\r\n\r\n');
  const header = raw.subarray(0, end === -1 ? raw.length : end + 2).toString('latin1');
  const m = /^from[ \t]*:((?:.*)(?:\r\n[ \t].*)*)/im.exec(header);
  if (!m) return null;
  const addrs = addressparser(m[1]!.replace(/\r\n/g, ''), { flatten: true });
  const address = addrs[0]?.address;
  const at = address?.lastIndexOf('@') ?? -1;
  return at > 0 ? address!.slice(at + 1).toLowerCase() : null;
}

// RFC 6376 5.4.1 requires From; these are the fields the issue asks to cover. A field absent
// from the message is still listed once by nodemailer, which in DKIM terms "signs its
// absence" and stops it being added later.
const SIGNED_FIELDS = 'From:To:Subject:Date:Message-ID';

interface CachedKey {
  selector: string;
  key: string;
}

/**
 * Signs outgoing mail whose header From domain has a key, with nodemailer's DKIM signer
 * (relaxed/relaxed, rsa-sha256). When a domain has several selectors the newest file wins:
 * keygen a new selector, publish its record, and signing moves over on the next cache refresh.
 */
export class DkimSigner {
  // Misses are cached too (most domains have no key), so the data dir is read at most once
  // per domain per cacheMs.
  private readonly cache = new Map<string, { entry: CachedKey | null; at: number }>();

  constructor(
    private readonly dataDir: string,
    private readonly clock: Clock,
    private readonly cacheMs = 60_000,
  ) {}

  private keyFor(domain: string): CachedKey | null {
    const now = this.clock.now();
    const hit = this.cache.get(domain);
    if (hit && now - hit.at < this.cacheMs) return hit.entry;
    const dir = path.join(dkimDir(this.dataDir), domain);
    let best: { selector: string; mtime: number; file: string } | null = null;
    try {
      for (const f of readdirSync(dir)) {
        const sel = /^([a-z0-9-]+)\.key$/i.exec(f)?.[1];
        if (!sel) continue;
        const mtime = statSync(path.join(dir, f)).mtimeMs;
        if (!best || mtime > best.mtime) best = { selector: sel, mtime, file: path.join(dir, f) };
      }
    } catch {
      best = null;
    }
    const entry = best ? { selector: best.selector, key: readFileSync(best.file, 'utf8') } : null;
    this.cache.set(domain, { entry, at: now });
    return entry;
  }

  /** The message with a DKIM-Signature prepended, or the same bytes when there is no key. */
  async sign(raw: Buffer): Promise<{ raw: Buffer; domain: string | null; selector: string | null }> {
    const domain = headerFromDomain(raw);
    if (!domain || !isDomain(domain)) return { raw, domain: null, selector: null };
    const k = this.keyFor(domain);
    if (!k) return { raw, domain: null, selector: null };
    const signer = new DKIM({ domainName: domain, keySelector: k.selector, privateKey: k.key, headerFieldNames: SIGNED_FIELDS });
    const chunks: Buffer[] = [];
    for await (const c of signer.sign(raw)) chunks.push(c as Buffer);
    return { raw: Buffer.concat(chunks), domain, selector: k.selector };
  }
}
