import { createPublicKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import type { LocalDkimKey } from '../local.js';
import type { DoctorDns } from '../lookup.js';
import { addressType, registeredDomain, txtData } from '../names.js';
import { fail, pass, warn, type CheckResult, type DoctorContext } from './result.js';

/** Check 5 (DMARC, DKIM, MX) for one envelope domain. */

type Tags = Map<string, string>;

/** "k=v; k=v" as DMARC (RFC 7489 6.4) and DKIM (RFC 6376 3.2) write them; null when a part is not k=v. */
function parseTags(record: string): Tags | null {
  const tags: Tags = new Map();
  for (const part of record.split(';').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) return null;
    tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return tags;
}

const policy = (v: string) => /^(none|quarantine|reject)$/i.test(v);
const mailtoList = (v: string) => v.split(',').every((u) => /^mailto:[^@\s]+@[^@\s]+$/i.test(u.trim().replace(/!\d+[kmgt]?$/i, '')));

// RFC 7489 6.3: the tags whose values can be wrong; unknown tags are ignored, as receivers do.
const DMARC_TAGS: Record<string, (v: string) => boolean> = {
  p: policy,
  sp: policy,
  adkim: (v) => /^[rs]$/i.test(v),
  aspf: (v) => /^[rs]$/i.test(v),
  pct: (v) => /^\d{1,3}$/.test(v) && Number(v) <= 100,
  fo: (v) => /^[01ds](:[01ds])*$/i.test(v),
  ri: (v) => /^\d+$/.test(v),
  rua: mailtoList,
  ruf: mailtoList,
};

export function dmarcProblem(record: string): string | null {
  if (!/^v\s*=\s*DMARC1\s*(;|$)/.test(record)) return 'does not begin with "v=DMARC1;"';
  const tags = parseTags(record);
  if (!tags) return 'has a part that is not tag=value';
  if (!tags.has('p')) return 'has no p= policy (RFC 7489 6.3 requires it)';
  const bad = [...tags].find(([k, v]) => DMARC_TAGS[k] && !DMARC_TAGS[k](v));
  return bad ? `${bad[0]}=${bad[1]} is not valid` : null;
}

export async function checkDmarc(c: DoctorContext, domain: string): Promise<CheckResult> {
  const lookup = async (name: string) => (await c.dns.txt(`_dmarc.${name}`)).filter((t) => /^v\s*=\s*DMARC1/i.test(t));
  let at = domain;
  let found = await lookup(domain);
  // RFC 7489 6.6.3: with no record at the domain itself, receivers use the organisational domain's.
  const org = registeredDomain(domain);
  if (!found.length && org && org !== domain) [at, found] = [org, await lookup(org)];
  const existingP = found.length === 1 ? parseTags(found[0]!)?.get('p') : undefined;
  const fix = `_dmarc.${domain}. IN TXT ${txtData(`v=DMARC1; p=${existingP && policy(existingP) ? existingP.toLowerCase() : 'none'}; rua=mailto:postmaster@${domain}`)}`;
  if (!found.length) {
    return fail('domain.dmarc', domain, 'no DMARC record: large receivers require one, and without it they judge alignment by their own rules', fix);
  }
  if (found.length > 1) return fail('domain.dmarc', `_dmarc.${at}`, `${found.length} DMARC records: RFC 7489 6.6.3 ignores them all`, fix);
  const problem = dmarcProblem(found[0]!);
  if (problem) return fail('domain.dmarc', `_dmarc.${at}`, `the DMARC record ${problem}, so receivers ignore it`, fix);
  return pass('domain.dmarc', `_dmarc.${at}`, found[0]!);
}

/** How a public key is written in a DKIM record: RSA as SubjectPublicKeyInfo, Ed25519 raw (RFC 8463). */
function dkimForm(key: KeyObject): { k: string; p: string } | null {
  if (key.asymmetricKeyType === 'rsa') return { k: 'rsa', p: key.export({ type: 'spki', format: 'der' }).toString('base64') };
  if (key.asymmetricKeyType === 'ed25519') return { k: 'ed25519', p: Buffer.from(key.export({ format: 'jwk' }).x!, 'base64url').toString('base64') };
  return null;
}

/** Published RSA keys come as SPKI or, from some generators, bare PKCS#1: compare them as SPKI. */
function publishedMatches(tags: Tags, want: { k: string; p: string }): boolean {
  const p = (tags.get('p') ?? '').replace(/\s+/g, '');
  if ((tags.get('k') ?? 'rsa').toLowerCase() !== want.k || !p) return false;
  if (want.k === 'ed25519') return p === want.p;
  for (const type of ['spki', 'pkcs1'] as const) {
    try {
      const spki = createPublicKey({ key: Buffer.from(p, 'base64'), format: 'der', type }).export({ type: 'spki', format: 'der' });
      return spki.toString('base64') === want.p;
    } catch {
      // not this encoding; try the next
    }
  }
  return false;
}

/**
 * What DNS publishes at SELECTOR._domainkey.DOMAIN against a local key: its public half
 * (published), nothing (missing), an empty p= (revoked) or another key (different), each with
 * the record to publish; unusable when the local key cannot sign. DNS failures throw. The
 * doctor and `postern dkim activate` both judge a key by this.
 */
export type DkimRecord =
  | { name: string; state: 'published'; found: string[] }
  | { name: string; state: 'missing' | 'revoked' | 'different'; found: string[]; fix: string }
  | { name: string; state: 'unusable'; reason: string };

export async function dkimRecord(dns: Pick<DoctorDns, 'txt'>, local: LocalDkimKey): Promise<DkimRecord> {
  const name = `${local.selector}._domainkey.${local.domain}`;
  if ('error' in local.key) return { name, state: 'unusable', reason: `cannot read the local key ${local.path}: ${local.key.error}` };
  const want = dkimForm(local.key.publicKey);
  if (!want) return { name, state: 'unusable', reason: `${local.path} is a ${local.key.publicKey.asymmetricKeyType} key; DKIM signs with RSA or Ed25519 only` };
  const fix = `${name}. IN TXT ${txtData(`v=DKIM1; k=${want.k}; p=${want.p}`)}`;
  const txt = await dns.txt(name);
  const found = txt.filter((t) => parseTags(t)?.has('p'));
  const published = found.map((t) => parseTags(t)!);
  if (!published.length) return { name, state: 'missing', found: txt, fix };
  if (published.some((t) => publishedMatches(t, want))) return { name, state: 'published', found };
  return { name, state: published.every((t) => !(t.get('p') ?? '').trim()) ? 'revoked' : 'different', found, fix };
}

async function checkDkimKey(c: DoctorContext, local: LocalDkimKey): Promise<CheckResult> {
  const r = await dkimRecord(c.dns, local);
  const at = r.name;
  if (local.state === 'inactive') {
    // Nothing signs with a staged key yet: a missing record is the step still to take, not a fault.
    const activate = `postern dkim activate ${local.domain} ${local.selector}`;
    // Staged keys are the store's (key files are active), so they are named by selector.
    const staged = `the inactive key of selector ${local.selector} in the store`;
    if (r.state === 'unusable') return fail('domain.dkim', at, r.reason);
    if (r.state === 'published') return pass('domain.dkim', at, `publishes the public half of ${staged}: switch signing to it with ${activate}`);
    const found = r.state === 'missing' ? 'is not published yet' : `is not what the record publishes${r.state === 'revoked' ? ' (empty p=)' : ''}`;
    return warn('domain.dkim', at, `${staged} ${found}: publish its record, then switch signing to it with ${activate}`, r.fix);
  }
  if (r.state === 'unusable') return fail('domain.dkim', at, r.reason);
  if (r.state === 'published') return pass('domain.dkim', at, `publishes the public half of ${local.path}`);
  if (r.state === 'missing') return fail('domain.dkim', at, `no DKIM key published: receivers cannot verify what Postern signs with ${local.path}`, r.fix);
  return fail(
    'domain.dkim',
    at,
    r.state === 'revoked' ? 'the published key is revoked (empty p=): every signature fails' : `the published key is not the public half of ${local.path}: every signature fails, leaving DMARC to SPF alone`,
    r.fix,
  );
}

export async function checkDkim(c: DoctorContext, domain: string): Promise<CheckResult[]> {
  const keys = c.dkimKeys.filter((k) => k.domain === domain);
  const none = `no DKIM key for ${domain} in the store (create one: postern dkim keygen ${domain} --selector SELECTOR): unsigned mail passes DMARC only through SPF`;
  if (!keys.length) return [warn('domain.dkim', domain, none)];
  const checked = await Promise.all(keys.map((k) => checkDkimKey(c, k)));
  // Only staged keys: mail goes unsigned until one is activated.
  if (keys.every((k) => k.state === 'inactive')) {
    checked.unshift(warn('domain.dkim', domain, `no active DKIM key for ${domain}: mail goes unsigned until one is activated (postern dkim activate ${domain} SELECTOR, once its record is published)`));
  }
  return checked;
}

async function addressesOf(c: DoctorContext, name: string): Promise<string[]> {
  const [v4, v6] = await Promise.all([c.dns.addresses(name, 4), c.dns.addresses(name, 6)]);
  return [...v4, ...v6];
}

/** Why one MX target is unusable, or null. */
async function mxTargetProblem(c: DoctorContext, domain: string, m: { exchange: string; priority: number }): Promise<CheckResult | null> {
  const t = m.exchange;
  const literal = t.replace(/^\[|\]$/g, '');
  if (isIP(literal)) {
    return fail(
      'domain.mx.literal',
      domain,
      `MX ${m.priority} ${t} is an IP address: an MX target must be a host name (RFC 5321 5.1), senders look it up as a name and fail`,
      `${domain}. IN MX ${m.priority} mx.${domain}.\nmx.${domain}. IN ${addressType(literal)} ${literal}`,
    );
  }
  const alias = await c.dns.cname(t);
  if (alias.length) {
    const addrs = await addressesOf(c, t);
    const fix = addrs.length ? addrs.map((a) => `${t}. IN ${addressType(a)} ${a}`).join('\n') : `${t}. IN A ADDRESS`;
    return fail('domain.mx.cname', t, `MX target of ${domain} is a CNAME to ${alias[0]}: RFC 2181 10.3 forbids it and some senders refuse; give it its own address records`, fix);
  }
  if (!(await addressesOf(c, t)).length) {
    return fail('domain.mx.address', t, `MX target of ${domain} has no A or AAAA record: mail to ${domain} cannot be delivered`, `; the address of the host that receives mail for ${domain}\n${t}. IN A ADDRESS`);
  }
  return null;
}

/** Bounces and replies come back to the envelope domain: it must receive mail. */
export async function checkMx(c: DoctorContext, domain: string): Promise<CheckResult[]> {
  const mx = [...(await c.dns.mx(domain))].sort((a, b) => a.priority - b.priority);
  const hostFix = (await addressesOf(c, domain)).length ? `${domain}. IN MX 10 ${domain}.` : `; the host that receives mail for ${domain}\n${domain}. IN MX 10 mx.${domain}.`;
  if (mx.length && mx.every((m) => m.exchange === '')) {
    return [fail('domain.mx', domain, 'null MX: the domain refuses all mail, so bounces and replies to its senders are lost and receivers distrust it', hostFix)];
  }
  if (!mx.length) return [fail('domain.mx', domain, 'no MX record: bounces and replies have nowhere to go, and receivers distrust envelope domains that cannot receive', hostFix)];
  const problems = (await Promise.all(mx.map((m) => mxTargetProblem(c, domain, m)))).filter((p): p is CheckResult => p !== null);
  return problems.length ? problems : [pass('domain.mx', domain, `MX ${mx.map((m) => `${m.priority} ${m.exchange}`).join(', ')}`)];
}
