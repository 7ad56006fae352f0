import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import type { Store } from '../store/index.js';
import type { StsPolicy } from '../store/mta-sts.js';

export type { StsPolicy };

/** What MTA-STS needs of DNS: the _mta-sts TXT record and the policy host's addresses. */
export interface StsResolver {
  resolveTxt(name: string): Promise<string[][]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

export interface MtaStsOptions {
  store: Pick<Store['mtaSts'], 'get' | 'put'>;
  resolver: StsResolver;
  /** 443; tests serve policies on another port. */
  port: number;
  /** CA certificates the policy host's certificate may chain to (the system's, plus [delivery] tls_ca_file). */
  ca?: string[];
  timeoutMs: number;
  clock: Clock;
  log: Logger;
}

/**
 * After a failed fetch, the same policy (domain and TXT id) is not fetched again for this long:
 * RFC 8461 3.3 suggests five minutes or more per id, so that a policy host in trouble is not
 * also flooded by every message for its domain. A new id is fetched at once.
 */
export const STS_FETCH_RETRY_MS = 5 * 60_000;
/** Failed fetches remembered at most (expired ones are dropped first). */
const MAX_FAILED = 10_000;

/** The policy to apply, and why there is none (for the log and TLS reports). */
export type StsLookup = { policy: StsPolicy; cached: boolean } | { policy: null; error: string | null };

const NO_DATA = new Set(['ENODATA', 'ENOTFOUND']);
const MAX_POLICY_BYTES = 64 * 1024;
/** RFC 8461 3.2: max_age is at most 31557600 seconds (a year). */
const MAX_AGE = 31_557_600;

/** RFC 8461 3.1: "v=STSv1; id=...;" as the one TXT record beginning with v=STSv1, else null. */
export function parseStsTxt(records: string[][]): { id: string } | 'none' | 'many' | 'invalid' {
  const sts = records.map((r) => r.join('')).filter((t) => /^v=STSv1(;|\s|$)/.test(t));
  if (sts.length === 0) return 'none';
  if (sts.length > 1) return 'many';
  const fields = new Map(sts[0]!.split(';').map((f) => f.trim()).filter(Boolean).map((f) => [f.slice(0, f.indexOf('=')).trim(), f.slice(f.indexOf('=') + 1).trim()] as const));
  const id = fields.get('id');
  return id && /^[A-Za-z0-9]{1,32}$/.test(id) ? { id } : 'invalid';
}

/** RFC 8461 3.2: the policy file; throws with what is wrong. */
export function parseStsPolicy(text: string): Pick<StsPolicy, 'mode' | 'mx' | 'maxAge' | 'text'> {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  let version: string | undefined;
  let mode: string | undefined;
  let maxAge: number | undefined;
  const mx: string[] = [];
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (key === 'version') version = value;
    else if (key === 'mode') mode = value;
    else if (key === 'max_age') maxAge = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
    else if (key === 'mx') mx.push(value.toLowerCase().replace(/\.$/, ''));
  }
  if (version !== 'STSv1') throw new Error('version is not STSv1');
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') throw new Error(`mode ${JSON.stringify(mode ?? '')} is not enforce, testing or none`);
  if (maxAge === undefined || !Number.isFinite(maxAge) || maxAge > MAX_AGE) throw new Error('max_age is missing or out of range');
  if (mode !== 'none' && mx.length === 0) throw new Error('no mx lines');
  return { mode, mx: [...new Set(mx)], maxAge, text: lines };
}

/**
 * RFC 8461 4.1: an MX host name matches a pattern exactly, or a "*." pattern by exactly one
 * leftmost label ("*.example.com" matches mx1.example.com, not a.b.example.com nor
 * example.com). Case and a trailing dot do not matter.
 */
export function stsMxMatches(patterns: string[], host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => {
    if (!p.startsWith('*.')) return p === name;
    const dot = name.indexOf('.');
    return dot > 0 && name.slice(dot) === p.slice(1);
  });
}

/**
 * MTA-STS for delivery (RFC 8461 section 5): the recipient domain's policy, from the store's
 * cache while it is fresh and its TXT id unchanged, else fetched from
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt with the certificate checked. A refresh that
 * fails keeps the cached policy until it expires; with none cached the domain is treated as
 * having no policy (the RFC's fallback), and the error is logged.
 */
export class MtaSts {
  /** One fetch per domain at a time: a burst of mail to one domain fetches once. */
  private readonly inflight = new Map<string, Promise<StsLookup>>();
  /** Domains whose cached policy is being refreshed in the background. */
  private readonly refreshing = new Set<string>();
  /**
   * Fetches that failed, per domain: the TXT id asked for, until when it is not asked again,
   * and the error. In this process only: it spares the policy host, and delivery runs in one
   * process per node.
   */
  private readonly failed = new Map<string, { id: string; at: number; until: number; error: string; refresh: boolean }>();

  constructor(private readonly o: MtaStsOptions) {}

  policy(domain: string): Promise<StsLookup> {
    const d = domain.toLowerCase();
    let p = this.inflight.get(d);
    if (!p) {
      p = this.lookup(d).finally(() => this.inflight.delete(d));
      this.inflight.set(d, p);
    }
    return p;
  }

  private async lookup(domain: string): Promise<StsLookup> {
    const now = this.o.clock.now();
    const cached = await this.o.store.get(domain);
    const fresh = cached && cached.expiresAt > now ? cached : null;
    let txt: ReturnType<typeof parseStsTxt>;
    try {
      txt = parseStsTxt(await this.o.resolver.resolveTxt(`_mta-sts.${domain}`));
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'EUNKNOWN';
      // No record now: a policy still cached stays in force (RFC 8461 8.3: domains publish
      // mode none, not a missing record, to leave MTA-STS).
      if (NO_DATA.has(code)) return fresh ? { policy: fresh, cached: true } : { policy: null, error: null };
      return fresh ? { policy: fresh, cached: true } : { policy: null, error: `_mta-sts.${domain} TXT lookup failed: ${code}` };
    }
    if (txt === 'none') return fresh ? { policy: fresh, cached: true } : { policy: null, error: null };
    if (txt === 'many' || txt === 'invalid') {
      return fresh ? { policy: fresh, cached: true } : { policy: null, error: `_mta-sts.${domain} TXT record is ${txt === 'many' ? 'there more than once' : 'not valid'}` };
    }
    const failed = this.failed.get(domain);
    // A failed background refresh holds back only further refreshes: once the cached policy
    // has expired, the next delivery fetches. A clock set back does not stretch the wait.
    const backingOff = failed && failed.id === txt.id && now >= failed.at && now < failed.until && (fresh || !failed.refresh) ? failed : null;
    if (fresh && fresh.id === txt.id) {
      // RFC 8461 10.2: refreshed before it lapses, so an attacker who blocks the lookups when
      // it expires finds a new max_age in place. In the background: this delivery uses the cache.
      if (now > fresh.fetchedAt + fresh.maxAge * 500 && !this.refreshing.has(domain) && !backingOff) {
        this.refreshing.add(domain);
        void this.refresh(domain, txt.id, now).finally(() => this.refreshing.delete(domain));
      }
      return { policy: fresh, cached: true };
    }
    if (backingOff) {
      const error = `${backingOff.error} (not fetched again before ${new Date(backingOff.until).toISOString()}, RFC 8461 3.3)`;
      return fresh ? { policy: fresh, cached: true } : { policy: null, error };
    }
    try {
      const parsed = parseStsPolicy(await this.fetch(domain));
      const policy: StsPolicy = { domain, id: txt.id, ...parsed, fetchedAt: now, expiresAt: now + parsed.maxAge * 1000 };
      // A store that cannot keep it does not unmake a policy fetched fine: it applies now.
      await this.o.store.put(policy).catch((e: unknown) => this.o.log.error({ event: 'mta_sts.error', domain, err: `the policy could not be stored: ${(e as Error).message}`, cached: null }));
      this.o.log.info({ event: 'mta_sts.fetched', domain, id: txt.id, mode: policy.mode, max_age: policy.maxAge, mx: policy.mx });
      this.failed.delete(domain);
      return { policy, cached: false };
    } catch (e) {
      const error = this.fetchFailed(domain, txt.id, e, fresh ? fresh.id : null, false);
      return fresh ? { policy: fresh, cached: true } : { policy: null, error };
    }
  }

  /**
   * Logs a failed fetch of `id` and remembers it (counted from the failure, not the fetch's
   * start) so it is not asked again for a while; returns the error as deliveries give it.
   */
  private fetchFailed(domain: string, id: string, e: unknown, cached: string | null, refresh: boolean): string {
    const now = this.o.clock.now();
    const error = `MTA-STS policy of ${domain} could not be fetched: ${(e as Error).message}`;
    if (this.failed.size >= MAX_FAILED) {
      for (const [d, f] of this.failed) if (f.until <= now) this.failed.delete(d);
      // Still full of live entries: the oldest goes (a Map keeps insertion order).
      if (this.failed.size >= MAX_FAILED) this.failed.delete(this.failed.keys().next().value!);
    }
    const until = now + STS_FETCH_RETRY_MS;
    this.failed.delete(domain);
    this.failed.set(domain, { id, at: now, until, error, refresh });
    this.o.log.warn({ event: 'mta_sts.error', domain, err: (e as Error).message, cached, retry_at: new Date(until).toISOString() });
    return error;
  }

  /** Fetches and stores the policy again; a failure leaves the cached one (logged). */
  private async refresh(domain: string, id: string, now: number): Promise<void> {
    try {
      const parsed = parseStsPolicy(await this.fetch(domain));
      await this.o.store.put({ domain, id, ...parsed, fetchedAt: now, expiresAt: now + parsed.maxAge * 1000 });
      this.o.log.info({ event: 'mta_sts.fetched', domain, id, mode: parsed.mode, max_age: parsed.maxAge, mx: parsed.mx, refresh: true });
      // Only this id's failure: a newer id's, recorded while this ran, stands.
      if (this.failed.get(domain)?.id === id) this.failed.delete(domain);
    } catch (e) {
      this.fetchFailed(domain, id, e, id, true);
    }
  }

  /** GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt: 200, text/plain, no redirects, at most 64 KiB. */
  private fetch(domain: string): Promise<string> {
    const host = `mta-sts.${domain}`;
    // The policy host is found with the delivery resolver, as the MX hosts are.
    const lookup: LookupFunction = (name, opts, cb) => {
      const all = (opts as { all?: boolean }).all === true;
      const done = (addrs: { address: string; family: number }[]) => {
        if (!addrs.length) return cb(Object.assign(new Error(`${name} has no address`), { code: 'ENOTFOUND' }), all ? [] : '', 4);
        if (all) return (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, addrs);
        cb(null, addrs[0]!.address, addrs[0]!.family);
      };
      Promise.all([this.o.resolver.resolve4(name).catch(() => []), this.o.resolver.resolve6(name).catch(() => [])])
        .then(([v4, v6]) => done([...v4.map((address) => ({ address, family: 4 })), ...v6.map((address) => ({ address, family: 6 }))]))
        .catch((e: Error) => cb(e, '', 4));
    };
    return new Promise((resolve, reject) => {
      const req = https.get(
        { host, port: this.o.port, path: '/.well-known/mta-sts.txt', servername: host, lookup, ca: this.o.ca, timeout: this.o.timeoutMs, headers: { 'user-agent': 'Postern MTA-STS' }, agent: false },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            return reject(new Error(`HTTP ${res.statusCode} from https://${host}/.well-known/mta-sts.txt`));
          }
          if (!/^text\/plain\b/i.test(res.headers['content-type'] ?? '')) {
            res.resume();
            return reject(new Error(`https://${host}/.well-known/mta-sts.txt is ${res.headers['content-type'] ?? 'untyped'}, not text/plain`));
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_POLICY_BYTES) {
              req.destroy(new Error('the policy is larger than 64 KiB'));
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer from https://${host}/ within ${this.o.timeoutMs} ms`)));
      // A server that trickles bytes resets the idle timeout: the whole fetch has a deadline too.
      const deadline = setTimeout(() => req.destroy(new Error(`https://${host}/.well-known/mta-sts.txt took longer than ${2 * this.o.timeoutMs} ms`)), 2 * this.o.timeoutMs);
      req.on('close', () => clearTimeout(deadline));
      req.on('error', (e: Error & { code?: string }) => reject(new Error(e.code && !e.message.includes(e.code) ? `${e.code} ${e.message}` : e.message)));
    });
  }
}
