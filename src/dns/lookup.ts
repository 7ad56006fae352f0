import type { Resolver } from 'node:dns/promises';
import { reverseName } from './names.js';
import { rawQuery } from './rawquery.js';

export interface MxHost {
  exchange: string;
  priority: number;
}
export interface SrvHost {
  priority: number;
  weight: number;
  port: number;
  name: string;
}
export interface RpRecord {
  mbox: string;
  txt: string;
}

/**
 * What the doctor asks of DNS. A name or record that does not exist is an empty list; any
 * other failure (timeout, SERVFAIL) throws, so a dead resolver is never reported as a
 * missing record.
 */
export interface DoctorDns {
  addresses(name: string, family: 4 | 6): Promise<string[]>;
  cname(name: string): Promise<string[]>;
  ptr(ip: string): Promise<string[]>;
  mx(name: string): Promise<MxHost[]>;
  /** Each record's strings joined, as RFC 7208 3.3 and RFC 6376 3.6.2.2 read them. */
  txt(name: string): Promise<string[]>;
  srv(name: string): Promise<SrvHost[]>;
  rp(name: string): Promise<RpRecord[]>;
  /** node:dns resolve(name, type) with its error codes intact: the SPF evaluator counts void lookups by them. */
  raw(name: string, type: string): Promise<unknown>;
  /**
   * One question before any check: null when the resolver answers (NXDOMAIN is an answer),
   * else the servers asked and the error, so a dead resolver is one verdict, not one per check.
   */
  probe(): Promise<{ servers: string; code: string; message: string } | null>;
}

/** Errors that say the resolver itself does not serve us, whatever the name asked. */
const RESOLVER_DOWN = new Set(['ECONNREFUSED', 'ETIMEOUT', 'ETIMEDOUT', 'ECONNRESET', 'ENETUNREACH', 'EHOSTUNREACH', 'ECANCELLED', 'EREFUSED', 'ESERVFAIL']);

const ABSENT = new Set(['ENOTFOUND', 'ENODATA']);

async function orEmpty<T>(p: Promise<T[]>): Promise<T[]> {
  try {
    return await p;
  } catch (e) {
    if (ABSENT.has((e as { code?: string }).code ?? '')) return [];
    throw e;
  }
}

const strip = (n: string) => n.toLowerCase().replace(/\.$/, '');

/**
 * DoctorDns over a node:dns Resolver (see createResolver). Answers are memoised for one
 * doctor run: many checks ask about the same names, and asking once keeps the run fast and
 * every check looking at the same answer.
 */
export function doctorDns(resolver: Resolver, opts: { timeoutMs?: number } = {}): DoctorDns {
  const memo = new Map<string, Promise<unknown>>();
  function once<T>(key: string, ask: () => Promise<T>): Promise<T> {
    let p = memo.get(key) as Promise<T> | undefined;
    if (!p) {
      p = ask();
      memo.set(key, p);
    }
    return p;
  }
  return {
    addresses: (name, family) =>
      once(`${family} ${name}`, () => orEmpty(family === 6 ? resolver.resolve6(name) : resolver.resolve4(name))),
    cname: (name) => once(`CNAME ${name}`, () => orEmpty(resolver.resolveCname(name)).then((l) => l.map(strip))),
    // Not resolver.reverse(): it reports every failure, even a refused query, as ENOTFOUND.
    ptr: (ip) => once(`PTR ${ip}`, () => orEmpty(resolver.resolvePtr(reverseName(ip))).then((l) => l.map(strip))),
    mx: (name) =>
      once(`MX ${name}`, () => orEmpty(resolver.resolveMx(name)).then((l) => l.map((m) => ({ exchange: strip(m.exchange), priority: m.priority })))),
    txt: (name) => once(`TXT ${name}`, () => orEmpty(resolver.resolveTxt(name)).then((l) => l.map((parts) => parts.join('')))),
    srv: (name) => once(`SRV ${name}`, () => orEmpty(resolver.resolveSrv(name)).then((l) => l.map((s) => ({ ...s, name: strip(s.name) })))),
    rp: (name) =>
      once(`RP ${name}`, async () => {
        const answers = await rawQuery(resolver.getServers(), name, 'RP', opts.timeoutMs ?? 2000);
        return answers.flatMap((a) => (a.type === 'RP' ? [{ mbox: strip(a.data.mbox), txt: strip(a.data.txt) }] : []));
      }),
    raw: (name, type) => once(`raw ${type} ${name}`, () => resolver.resolve(name, type)),
    // The root's NS: every recursive resolver answers it from its hints, so a failure is the
    // resolver's (refused, timed out, SERVFAIL for lack of upstream), not a zone's.
    probe: async () => {
      try {
        await resolver.resolveNs('.');
        return null;
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        if (!RESOLVER_DOWN.has(code)) return null;
        return { servers: resolver.getServers().join(', ') || '(none)', code, message: (e as Error).message };
      }
    },
  };
}
