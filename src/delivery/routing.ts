import { isIP } from 'node:net';
import type { MxRecord } from 'node:dns';

/** The part of node:dns's Resolver that routing uses (tests hand in a real one on loopback). */
export interface MxResolver {
  resolveMx(name: string): Promise<MxRecord[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
}

export interface MxHost {
  /** MX host name (or the domain itself for an implicit MX, or the smarthost). */
  name: string;
  addresses: string[];
  port: number;
}

export type Route =
  | { kind: 'hosts'; hosts: MxHost[] }
  | { kind: 'fail'; status: string; text: string }
  | { kind: 'defer'; status: string; text: string };

export interface RouterOptions {
  resolver: MxResolver;
  port: number;
  /** "host:port" or "" for MX delivery. */
  smarthost: string;
  /** [0, 1): injected so tests can pin the order of equal-preference MX hosts. */
  random: () => number;
  /** Address family of [identity] outbound_ip: a v4 source cannot reach a v6 MX. 0 = both. */
  family: 0 | 4 | 6;
}

const code = (e: unknown) => (e as { code?: string }).code ?? 'EUNKNOWN';
/** Answers meaning "this name has no such records", as opposed to "ask again later". */
const NO_DATA = new Set(['ENODATA', 'ENOTFOUND']);

function shuffle<T>(items: T[], random: () => number): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/**
 * RFC 5321 section 5.1: MX records in preference order, equal preferences in random order
 * (load spreading); no MX means the domain's own address is the implicit MX; RFC 7505 null MX
 * ("MX 0 .") means the domain accepts no mail, a permanent failure without any connection.
 */
export class Router {
  constructor(private readonly opts: RouterOptions) {}

  async route(domain: string): Promise<Route> {
    if (this.opts.smarthost) return this.smarthost();
    const literal = /^\[(?:ipv6:)?([0-9a-f:.]+)\]$/i.exec(domain)?.[1];
    if (literal && isIP(literal)) return { kind: 'hosts', hosts: [{ name: literal, addresses: [literal], port: this.opts.port }] };

    let mx: MxRecord[];
    try {
      mx = await this.opts.resolver.resolveMx(domain);
    } catch (e) {
      if (code(e) === 'ENOTFOUND') return { kind: 'fail', status: '5.1.2', text: `domain ${domain} does not exist (NXDOMAIN)` };
      if (code(e) !== 'ENODATA') return { kind: 'defer', status: '4.4.3', text: `MX lookup for ${domain} failed: ${code(e)}` };
      mx = [];
    }
    const real = mx.filter((r) => r.exchange !== '' && r.exchange !== '.');
    if (mx.length > 0 && real.length === 0) {
      return { kind: 'fail', status: '5.1.10', text: `domain ${domain} accepts no mail (null MX, RFC 7505)` };
    }
    if (real.length === 0) {
      const addresses = await this.addresses(domain);
      if (addresses === 'defer') return { kind: 'defer', status: '4.4.3', text: `address lookup for ${domain} failed` };
      if (!addresses.length) return { kind: 'fail', status: '5.1.2', text: `domain ${domain} has neither MX nor address records` };
      return { kind: 'hosts', hosts: [{ name: domain, addresses, port: this.opts.port }] };
    }
    const byPref = new Map<number, MxRecord[]>();
    for (const r of real) byPref.set(r.priority, [...(byPref.get(r.priority) ?? []), r]);
    const ordered = [...byPref.keys()].sort((a, b) => a - b).flatMap((p) => shuffle(byPref.get(p)!, this.opts.random));
    const hosts: MxHost[] = [];
    let deferred = false;
    for (const r of ordered) {
      const name = r.exchange.replace(/\.$/, '').toLowerCase();
      if (hosts.some((h) => h.name === name)) continue;
      const addresses = await this.addresses(name);
      if (addresses === 'defer') deferred = true;
      else if (addresses.length) hosts.push({ name, addresses, port: this.opts.port });
    }
    if (!hosts.length) {
      return { kind: 'defer', status: '4.4.3', text: `no address for any MX host of ${domain}${deferred ? ' (lookup failed)' : ''}` };
    }
    return { kind: 'hosts', hosts };
  }

  private async smarthost(): Promise<Route> {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(this.opts.smarthost)!;
    const host = m[1]!;
    const port = Number(m[2]);
    if (isIP(host)) return { kind: 'hosts', hosts: [{ name: host, addresses: [host], port }] };
    const addresses = await this.addresses(host);
    if (addresses === 'defer' || !addresses.length) return { kind: 'defer', status: '4.4.3', text: `no address for smarthost ${host}` };
    return { kind: 'hosts', hosts: [{ name: host, addresses, port }] };
  }

  /** A and AAAA records of a name in the usable families; 'defer' when the lookup itself failed. */
  private async addresses(name: string): Promise<string[] | 'defer'> {
    const lookups: Promise<string[]>[] = [];
    if (this.opts.family !== 6) lookups.push(this.opts.resolver.resolve4(name));
    if (this.opts.family !== 4) lookups.push(this.opts.resolver.resolve6(name));
    const results = await Promise.allSettled(lookups);
    const out: string[] = [];
    let failed = false;
    for (const r of results) {
      if (r.status === 'fulfilled') out.push(...r.value);
      else if (!NO_DATA.has(code(r.reason))) failed = true;
    }
    return out.length ? out : failed ? 'defer' : [];
  }
}
