import { execFile, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import dnsPacket, { type Answer, type RecordType } from 'dns-packet';
import { freePort } from './net.js';

/**
 * A DNSSEC-signed DNS for tests, all on loopback: Debian's ldns-keygen/ldns-signzone sign the
 * zones, nsd serves them, and unbound validates them with each signed zone's key as its trust
 * anchor. Both daemons run in the foreground as children of the test process (each in its own
 * process group), with every file in a temp dir; no system service or /etc config is used.
 *
 * unbound answers only for the test zones: each zone is a stub to nsd, and every other name is
 * refused by unbound itself (`local-zone: "." refuse`, logged as ". refuse"), so nothing is asked
 * of the root servers; its queries leave from 127.0.0.1 only (`outgoing-interface`), and it never
 * fetches a root trust anchor.
 *
 * Nothing is cached (`cache-max-ttl: 0`, so answers carry TTL 0): each question goes to nsd
 * again and is validated again. The zones are fixed once started; start another for other data.
 */
export interface TestZone {
  /** "dane.example" (a trailing dot is allowed). Zones must not nest. */
  origin: string;
  /**
   * Zone-file lines with absolute owner names (trailing dot), e.g.
   * "mx.dane.example. 300 IN A 127.0.0.2", "_25._tcp.mx.dane.example. 300 IN TLSA 3 1 1 <hex>",
   * "dane.example. 300 IN MX 10 mx.dane.example.". SOA and apex NS (ns.ORIGIN with A 127.0.0.1)
   * are added when missing.
   */
  records: string[];
  /** Signed (ECDSAP256SHA256 KSK + ZSK, NSEC) and its KSK's DS given to unbound as a trust anchor. */
  signed: boolean;
  /**
   * Signed, then the signature of some RRsets broken (their data stays as written, so only a
   * client that validates can tell): unbound answers SERVFAIL for them. `true` breaks every TLSA
   * RRset of the zone (or, in a zone without TLSA, every A RRset but the nameserver's); a list
   * names the RRsets, e.g. [{ name: 'dane.example.', type: 'MX' }]. Requires `signed: true`.
   */
  bogus?: boolean | Array<{ name: string; type: string }>;
}

export interface SignedDns {
  /** "127.0.0.1:PORT" of the validating resolver (unbound): for [delivery] dns_servers. */
  resolver: string;
  /** "127.0.0.1:PORT" of the authoritative server (nsd), for tests that want the raw zone. */
  authoritative: string;
  /** What each daemon has logged so far (unbound logs every question and each validation failure). */
  logs(): { nsd: string; unbound: string };
  /** Kills both daemons and removes the temp dir (keys, zones, configs). */
  stop(): Promise<void>;
}

export const NO_DNSSEC_MESSAGE =
  'DNSSEC tests did not run: nsd, unbound or ldns-signzone/ldns-keygen is not installed. Install them with "apt-get install nsd unbound ldnsutils" (.ci/run does).';

const TOOLS = ['nsd', 'unbound', 'ldns-keygen', 'ldns-signzone'] as const;
type Tool = (typeof TOOLS)[number];

/** The tool's path: PATH first, then the sbin dirs a non-root PATH may lack. */
function which(tool: Tool): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), '/usr/sbin', '/sbin', '/usr/bin'];
  for (const dir of dirs) {
    const p = path.join(dir, tool);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

let available: boolean | undefined;
/** Whether nsd, unbound, ldns-keygen and ldns-signzone are installed (.ci/run installs them). */
export function dnssecToolsAvailable(): boolean {
  available ??= TOOLS.every((t) => which(t) !== undefined);
  return available;
}

function tool(t: Tool): string {
  const p = which(t);
  if (!p) throw new Error(NO_DNSSEC_MESSAGE);
  return p;
}

const run = promisify(execFile);
const fqdn = (n: string) => `${n.toLowerCase().replace(/\.$/, '')}.`;

/** Owner and type of a zone-file line: owner [ttl] [class] type rdata. */
function parseRecord(line: string, origin: string): { owner: string; type: string } {
  const tokens = line.trim().split(/\s+/);
  const owner = tokens[0] ?? '';
  let i = 1;
  while (i < tokens.length && (/^\d+$/.test(tokens[i]!) || /^(IN|CH|HS|CS)$/i.test(tokens[i]!))) i++;
  const type = tokens[i]?.toUpperCase();
  if (!type || i + 1 >= tokens.length) throw new Error(`test zone ${origin}: cannot read record "${line}" (want "owner ttl IN TYPE data")`);
  if (!owner.endsWith('.')) throw new Error(`test zone ${origin}: record "${line}" needs an absolute owner name with a trailing dot`);
  const o = owner.toLowerCase();
  if (o !== origin && !o.endsWith(`.${origin}`)) throw new Error(`test zone ${origin}: record "${line}" is outside the zone`);
  return { owner: o, type };
}

/** The zone file text: the caller's records, with SOA and apex NS added when they lack them. */
function zoneFile(origin: string, records: string[]): string {
  const parsed = records.map((r) => parseRecord(r, origin));
  const lines = [`$ORIGIN ${origin}`, '$TTL 300'];
  if (!parsed.some((r) => r.owner === origin && r.type === 'SOA')) lines.push(`${origin} 300 IN SOA ns.${origin} hostmaster.${origin} 1 3600 600 86400 300`);
  if (!parsed.some((r) => r.owner === origin && r.type === 'NS')) {
    lines.push(`${origin} 300 IN NS ns.${origin}`);
    if (!parsed.some((r) => r.owner === `ns.${origin}` && r.type === 'A')) lines.push(`ns.${origin} 300 IN A 127.0.0.1`);
  }
  return `${[...lines, ...records].join('\n')}\n`;
}

/**
 * Breaks the RRSIGs over the given RRsets in ldns-signzone's output (one record a line:
 * owner ttl class RRSIG covered alg labels ttl expiry inception tag signer signature).
 * The signature's first base64 digit changes, so r of the ECDSA signature no longer verifies.
 */
function breakSignatures(signed: string, origin: string, targets: Array<{ name: string; type: string }>): string {
  const hit = new Set<string>();
  const out = signed.split('\n').map((line) => {
    const t = line.trim().split(/\s+/);
    if (t[3] !== 'RRSIG' || t.length < 13) return line;
    const key = `${t[0]!.toLowerCase()} ${t[4]!.toUpperCase()}`;
    if (!targets.some((x) => `${fqdn(x.name)} ${x.type.toUpperCase()}` === key)) return line;
    hit.add(key);
    const sig = t[t.length - 1]!;
    return line.slice(0, line.lastIndexOf(sig)) + (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
  });
  for (const x of targets) {
    if (!hit.has(`${fqdn(x.name)} ${x.type.toUpperCase()}`)) throw new Error(`test zone ${origin}: bogus RRset ${fqdn(x.name)} ${x.type} is not in the zone`);
  }
  return out.join('\n');
}

function bogusTargets(zone: TestZone, origin: string): Array<{ name: string; type: string }> {
  if (Array.isArray(zone.bogus)) return zone.bogus;
  const parsed = zone.records.map((r) => parseRecord(r, origin));
  const tlsa = parsed.filter((r) => r.type === 'TLSA');
  const pick = tlsa.length ? tlsa : parsed.filter((r) => r.type === 'A' && r.owner !== `ns.${origin}`);
  if (!pick.length) throw new Error(`test zone ${origin}: bogus: true needs a TLSA or A record to break (or name the RRsets)`);
  return [...new Set(pick.map((r) => `${r.owner} ${r.type}`))].map((k) => ({ name: k.split(' ')[0]!, type: k.split(' ')[1]! }));
}

/** Writes the zone (signed when asked) into dir; returns the zone file and the trust anchor file. */
async function prepareZone(dir: string, zone: TestZone): Promise<{ origin: string; file: string; anchor?: string }> {
  const origin = fqdn(zone.origin);
  const base = origin.slice(0, -1);
  const plain = path.join(dir, `${base}.zone`);
  await writeFile(plain, zoneFile(origin, zone.records));
  if (!zone.signed) {
    if (zone.bogus) throw new Error(`test zone ${origin}: bogus needs signed: true`);
    return { origin, file: plain };
  }
  const keygen = tool('ldns-keygen');
  const [ksk, zsk] = await Promise.all([
    run(keygen, ['-a', 'ECDSAP256SHA256', '-k', base], { cwd: dir }),
    run(keygen, ['-a', 'ECDSAP256SHA256', base], { cwd: dir }),
  ]);
  const kskBase = ksk.stdout.trim();
  const signedFile = path.join(dir, `${base}.zone.signed`);
  // Signatures valid from a day ago (no clock-skew surprises) for ldns's default four weeks; the
  // keys' DNSKEYs are added to the zone by ldns-signzone.
  const inception = new Date(Date.now() - 86_400_000).toISOString().replace(/[-:T]/g, '').slice(0, 14);
  await run(tool('ldns-signzone'), ['-i', inception, '-f', signedFile, plain, kskBase, zsk.stdout.trim()], { cwd: dir });
  if (zone.bogus) await writeFile(signedFile, breakSignatures(await readFile(signedFile, 'utf8'), origin, bogusTargets(zone, origin)));
  return { origin, file: signedFile, anchor: path.join(dir, `${kskBase}.ds`) };
}

/** A loopback port free for both TCP and UDP at this moment. */
async function freeDnsPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await freePort();
    const udpFree = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket('udp4');
      s.once('error', () => {
        s.close();
        resolve(false);
      });
      s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no loopback port free for both TCP and UDP after 20 tries');
}

function nsdConf(dir: string, port: number, zones: Array<{ origin: string; file: string }>): string {
  return `# Written by test/helpers/dnssec.ts: a throwaway authoritative server on loopback.
server:
  ip-address: 127.0.0.1@${port}
  do-ip4: yes
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "${dir}"
  database: ""
  zonelistfile: "${dir}/nsd.zone.list"
  xfrdfile: "${dir}/nsd.xfrd.state"
  xfrdir: "${dir}"
  pidfile: "${dir}/nsd.pid"
  cookie-secret-file: "${dir}/nsd.cookiesecrets"
  zonefiles-write: 0
  server-count: 1
  verbosity: 1
  hide-version: yes
remote-control:
  control-enable: no
${zones.map((z) => `zone:\n  name: "${z.origin}"\n  zonefile: "${z.file}"\n`).join('')}`;
}

function unboundConf(dir: string, port: number, nsdPort: number, zones: Array<{ origin: string; anchor?: string }>): string {
  return `# Written by test/helpers/dnssec.ts: a throwaway validating resolver that only knows the test zones.
server:
  verbosity: 1
  interface: 127.0.0.1@${port}
  port: ${port}
  do-ip4: yes
  do-ip6: no
  outgoing-interface: 127.0.0.1
  username: ""
  chroot: ""
  directory: "${dir}"
  pidfile: "${dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  do-daemonize: no
  num-threads: 1
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "validator iterator"
  harden-dnssec-stripped: yes
  val-log-level: 2
  log-servfail: yes
  log-local-actions: yes
  trust-anchor-signaling: no
  root-key-sentinel: no
  qname-minimisation: no
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
  val-bogus-ttl: 0
  local-zone: "." refuse
${zones.map((z) => `  local-zone: "${z.origin}" transparent\n`).join('')}${zones
    .filter((z) => z.anchor)
    .map((z) => `  trust-anchor-file: "${z.anchor}"\n`)
    .join('')}${zones.map((z) => `stub-zone:\n  name: "${z.origin}"\n  stub-addr: 127.0.0.1@${nsdPort}\n`).join('')}remote-control:
  control-enable: no
`;
}

/** Every daemon still running in this process: killed if the test process exits without stop(). */
const running = new Set<ChildProcess>();
let exitHook = false;

function killGroup(c: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-c.pid!, signal);
  } catch {
    // the whole group is gone already
  }
}

interface Daemon {
  child: ChildProcess;
  output: string[];
  exited: Promise<void>;
}

class EarlyExit extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
  }
}

const tail = (lines: string[]) => lines.slice(-25).join('\n');

/** Starts a daemon in its own process group; resolves once it logs `ready`, rejects with its log tail if it exits first. */
function startDaemon(name: string, bin: string, args: string[], ready: RegExp): Promise<Daemon> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => running.forEach((r) => killGroup(r, 'SIGKILL')));
  }
  const output: string[] = [];
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      running.delete(child);
      resolve();
    }),
  );
  return new Promise<Daemon>((resolve, reject) => {
    let started = false;
    const onLine = (line: string) => {
      output.push(line);
      if (!started && ready.test(line)) {
        started = true;
        resolve({ child, output, exited });
      }
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    child.once('error', (e) => reject(new Error(`${name} could not start: ${e.message}`)));
    child.once('exit', (code, signal) => {
      if (!started) reject(new EarlyExit(`${name} exited with ${code ?? signal} before it was ready; its log:\n${tail(output)}`, output.join('\n')));
    });
  });
}

async function stopDaemon(d: Daemon): Promise<void> {
  if (!running.has(d.child)) return;
  killGroup(d.child, 'SIGTERM');
  const hard = setTimeout(() => killGroup(d.child, 'SIGKILL'), 5000);
  await d.exited;
  clearTimeout(hard);
  // nsd's server and xfrd children share its group; make sure none outlives it.
  killGroup(d.child, 'SIGKILL');
}

export interface DnsAnswer {
  /** 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED. */
  rcode: number;
  /** The AD flag: the resolver validated the answer (DNSSEC secure). */
  ad: boolean;
  aa: boolean;
  answers: Answer[];
  authorities: Answer[];
}

/**
 * One question over UDP with RD, the AD bit (unless `adBit: false`) and EDNS with DO (unless
 * `dnssecOk: false`; DO also brings the RRSIGs). Resolves with the rcode and flags, whatever the
 * rcode; rejects on timeout. unbound sets AD on a secure answer when the query has AD or DO.
 */
export function dnsQuery(server: string, name: string, type: RecordType, opts: { adBit?: boolean; dnssecOk?: boolean; timeoutMs?: number } = {}): Promise<DnsAnswer> {
  const [host, port] = server.split(':');
  const socket = dgram.createSocket('udp4');
  const id = Math.floor(Math.random() * 65_536);
  return new Promise<DnsAnswer>((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`query ${type} ${name} to ${server}: no answer within ${opts.timeoutMs ?? 2000} ms`)), opts.timeoutMs ?? 2000);
    let finished = false;
    function done(err: Error | null, res?: DnsAnswer) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(res!);
    }
    socket.on('error', (e) => done(e));
    socket.on('message', (msg) => {
      let res;
      try {
        res = dnsPacket.decode(msg);
      } catch {
        return;
      }
      if (res.id !== id) return;
      if (res.flag_tc) return done(new Error(`query ${type} ${name} to ${server}: answer truncated`));
      done(null, { rcode: (res.flags ?? 0) & 0xf, ad: res.flag_ad, aa: res.flag_aa, answers: res.answers ?? [], authorities: res.authorities ?? [] });
    });
    const query = dnsPacket.encode({
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED | (opts.adBit === false ? 0 : dnsPacket.AUTHENTIC_DATA),
      questions: [{ type, name }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, flags: opts.dnssecOk === false ? 0 : dnsPacket.DNSSEC_OK } as Answer],
    });
    socket.send(query, Number(port), host);
  });
}

/** Asks until an answer comes (a lost UDP packet is retried), at most `attempts` times. */
async function askReady(server: string, name: string, type: RecordType, attempts = 3): Promise<DnsAnswer> {
  let last: Error | undefined;
  for (let i = 0; i < attempts; i++) {
    try {
      return await dnsQuery(server, name, type, { timeoutMs: 1000 });
    } catch (e) {
      last = e as Error;
    }
  }
  throw last!;
}

/**
 * Signs the zones, starts nsd with them and unbound in front of it, and resolves once unbound
 * answers each zone's SOA (validated for signed zones). Ports taken meanwhile by someone else
 * make a daemon exit; it is then started again on new ports (three tries).
 */
export async function startSignedDns(zones: TestZone[]): Promise<SignedDns> {
  if (!zones.length) throw new Error('startSignedDns: give at least one zone');
  const origins = zones.map((z) => fqdn(z.origin));
  for (const a of origins) {
    const nested = origins.find((b) => b !== a && a.endsWith(`.${b}`));
    if (nested) throw new Error(`test zones must not nest: ${a} is inside ${nested}`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postern-dnssec-'));
  const daemons: Daemon[] = [];
  const stopAll = async () => {
    for (const d of daemons.splice(0).reverse()) await stopDaemon(d);
  };
  try {
    const prepared = await Promise.all(zones.map((z) => prepareZone(dir, z)));
    for (let attempt = 1; ; attempt++) {
      try {
        const nsdPort = await freeDnsPort();
        await writeFile(path.join(dir, 'nsd.conf'), nsdConf(dir, nsdPort, prepared));
        daemons.push(await startDaemon('nsd', tool('nsd'), ['-d', '-c', path.join(dir, 'nsd.conf')], /nsd started/));
        const port = await freeDnsPort();
        await writeFile(path.join(dir, 'unbound.conf'), unboundConf(dir, port, nsdPort, prepared));
        daemons.push(await startDaemon('unbound', tool('unbound'), ['-d', '-c', path.join(dir, 'unbound.conf')], /start of service/));
        const [nsd, unbound] = daemons as [Daemon, Daemon];
        const resolver = `127.0.0.1:${port}`;
        for (const z of zones) {
          const origin = fqdn(z.origin);
          const soaBroken = Array.isArray(z.bogus) && z.bogus.some((b) => fqdn(b.name) === origin && b.type.toUpperCase() === 'SOA');
          const res = await askReady(resolver, origin, 'SOA');
          if (!soaBroken && (res.rcode !== 0 || res.ad !== z.signed)) {
            throw new Error(`unbound answered SOA ${origin} with rcode ${res.rcode}, AD ${res.ad} (want 0, ${z.signed}).\nunbound's log:\n${tail(unbound.output)}\nnsd's log:\n${tail(nsd.output)}`);
          }
        }
        let stopped: Promise<void> | undefined;
        return {
          resolver,
          authoritative: `127.0.0.1:${nsdPort}`,
          logs: () => ({ nsd: nsd.output.join('\n'), unbound: unbound.output.join('\n') }),
          stop: () =>
            (stopped ??= (async () => {
              await stopAll();
              await rm(dir, { recursive: true, force: true });
            })()),
        };
      } catch (e) {
        await stopAll();
        if (!(e instanceof EarlyExit && /already in use/i.test(e.output) && attempt < 3)) throw e;
      }
    }
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
