import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { accessSync, constants, readFileSync, statSync, type Stats } from 'node:fs';
import net from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { z } from 'zod';
import { outboundIdentityProblem } from './identity.js';
import { ConfigError, readConfigDoc, resolveGeoPaths } from './load.js';
import { crossCheckProblems, problem, tomlKey, type Problem } from './problems.js';
import { configSchema, type Config } from './schema.js';

export type { Problem } from './problems.js';

/**
 * The relay refused to start over problems with its config or what it names (files, the data
 * directory, listen addresses). The message has one line per problem, the same lines
 * `postern config check` prints.
 */
export class StartupError extends ConfigError {
  override name = 'StartupError';
  constructor(readonly problems: Problem[]) {
    super(problems.map((p) => p.message).join('\n'));
  }
}

/** "the user postern (uid 998)": whose permissions a check ran with. */
function who(): string {
  const uid = process.getuid?.();
  let name: string | undefined;
  try {
    name = userInfo().username;
  } catch {
    name = undefined;
  }
  return `${name ? `user ${name}` : 'this user'}${uid === undefined ? '' : ` (uid ${uid})`}`;
}

const errno = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? '';

/** The problem with the identity guard's text as it is: it names the key and value already. */
export function identityProblems(identity: { helo: string; ptr: string }): Problem[] {
  const why = outboundIdentityProblem(identity);
  if (!why) return [];
  const key = why.startsWith('identity.ptr') ? 'identity.ptr' : 'identity.helo';
  return [{ key, value: key === 'identity.ptr' ? identity.ptr : identity.helo, problem: why, fix: null, message: why }];
}

/** A file tls.cert or tls.key names, read, or the problem with reading it. */
function readTlsFile(key: 'tls.cert' | 'tls.key', file: string, out: Problem[]): Buffer | null {
  const fixMissing =
    key === 'tls.cert'
      ? 'set tls.cert to a PEM file or leave both empty for a self-signed certificate'
      : "set tls.key to the certificate's private key (PEM) or leave both empty for a self-signed certificate";
  return readConfigFile(key, file, out, fixMissing);
}

/** A file a key names, read; or why not pushed to `out` as that key's problem (`fixMissing`: what to set instead). */
function readConfigFile(key: string, file: string, out: Problem[], fixMissing: string): Buffer | null {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') out.push(problem(key, file, 'no such file', fixMissing));
    else if (code === 'EACCES' || code === 'EPERM') {
      out.push(problem(key, file, `not readable by ${who()}`, `make it readable by the user the relay runs as (e.g. chgrp postern ${file}; chmod 0640 ${file})`));
    } else if (code === 'EISDIR') out.push(problem(key, file, 'is a directory, not a file', fixMissing));
    else out.push(problem(key, file, `cannot be read (${(e as Error).message})`, fixMissing));
    return null;
  }
}

/**
 * The certificate and key: readable, parseable, and one pair (what smtp-server needs to build
 * its TLS context). Both empty is fine: the relay makes a self-signed certificate in data_dir.
 */
export function tlsProblems(t: { cert: string; key: string }): Problem[] {
  const out: Problem[] = [];
  const certPem = t.cert ? readTlsFile('tls.cert', t.cert, out) : null;
  const keyPem = t.key ? readTlsFile('tls.key', t.key, out) : null;
  let cert: X509Certificate | null = null;
  let key: KeyObject | null = null;
  if (certPem) {
    try {
      cert = new X509Certificate(certPem);
    } catch (e) {
      out.push(problem('tls.cert', t.cert, `is not a certificate (${(e as Error).message})`, 'set tls.cert to the certificate chain in PEM ("-----BEGIN CERTIFICATE-----"), the server\'s own certificate first'));
    }
  }
  if (keyPem) {
    try {
      key = createPrivateKey(keyPem);
    } catch (e) {
      if (errno(e) === 'ERR_MISSING_PASSPHRASE') {
        out.push(problem('tls.key', t.key, 'is encrypted with a passphrase, which the relay cannot ask for', `decrypt it (openssl pkey -in ${t.key} -out KEY) and set tls.key to that file, readable by the relay only`));
      } else {
        out.push(problem('tls.key', t.key, `is not a private key (${(e as Error).message})`, 'set tls.key to the certificate\'s private key in PEM ("-----BEGIN PRIVATE KEY-----")'));
      }
    }
  }
  if (cert && key && certPem && keyPem) {
    if (!cert.checkPrivateKey(key)) {
      out.push(problem('tls.key', t.key, `does not match the certificate in tls.cert (${JSON.stringify(t.cert)})`, "set tls.key to that certificate's private key, or tls.cert to this key's certificate"));
    } else {
      // Whatever else OpenSSL refuses (a key too weak for its security level, say).
      try {
        tls.createSecureContext({ cert: certPem, key: keyPem, minVersion: 'TLSv1.2' });
      } catch (e) {
        out.push(problem('tls.cert', t.cert, `cannot be used with tls.key (${(e as Error).message})`, 'replace the certificate and key with a pair OpenSSL accepts'));
      }
    }
  }
  return out;
}

/**
 * The data directory: an existing directory this user can write, or one it can create (the
 * relay creates it at first start), and a database file in it that it can write. Checked
 * with access(2), so nothing is created by checking; the result holds for the user that runs
 * the check (run it as the service user: sudo -u postern postern config check).
 */
export function dataDirProblems(dir: string): Problem[] {
  const key = 'server.data_dir';
  const fix = `make it writable by the user the relay runs as (e.g. chown postern: ${dir}) or set server.data_dir to a directory that user can write`;
  let st: Stats;
  try {
    st = statSync(dir);
  } catch (e) {
    if (errno(e) !== 'ENOENT' && errno(e) !== 'ENOTDIR') return [problem(key, dir, `cannot be reached by ${who()} (${(e as Error).message})`, fix)];
    // Missing: can it be made? The nearest existing ancestor must be a directory we may write.
    for (let parent = path.dirname(dir); ; parent = path.dirname(parent)) {
      let ps: Stats;
      try {
        ps = statSync(parent);
      } catch (pe) {
        if ((errno(pe) === 'ENOENT' || errno(pe) === 'ENOTDIR') && parent !== path.dirname(parent)) continue;
        return [problem(key, dir, `cannot be created: ${parent} cannot be reached (${(pe as Error).message})`, fix)];
      }
      if (!ps.isDirectory()) return [problem(key, dir, `cannot be created: ${parent} is a file, not a directory`, 'set server.data_dir to a directory path (it is created if missing)')];
      try {
        accessSync(parent, constants.W_OK | constants.X_OK);
      } catch {
        return [problem(key, dir, `does not exist and cannot be created: ${parent} is not writable by ${who()}`, `create it for the relay's user (install -d -o postern -m 0750 ${dir}) or set server.data_dir to a directory that user can write`)];
      }
      return [];
    }
  }
  if (!st.isDirectory()) return [problem(key, dir, 'is a file, not a directory', 'set server.data_dir to a directory (it is created if missing)')];
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    return [problem(key, dir, `is not writable by ${who()}`, fix)];
  }
  const out: Problem[] = [];
  for (const name of ['postern.db', 'postern.db-wal', 'postern.db-shm']) {
    const file = path.join(dir, name);
    let fst: Stats;
    try {
      fst = statSync(file);
    } catch {
      continue;
    }
    if (!fst.isFile()) out.push(problem(key, dir, `${name} in it is not a file`, `move ${file} out of the way`));
    else {
      try {
        accessSync(file, constants.R_OK | constants.W_OK);
      } catch {
        out.push(problem(key, dir, `${name} in it is not writable by ${who()}`, `give it to the user the relay runs as (e.g. chown postern: ${file})`));
      }
    }
  }
  return out;
}

/**
 * The files [geo] names: each is a file this user can read. They are not loaded here (the
 * relay loads them only once a binding names a country or an ASN, and a load takes a second):
 * a file that is there but does not parse is named with its line by geo.load_failed.
 */
export function geoProblems(geo: Config['geo']): Problem[] {
  const out: Problem[] = [];
  for (const name of ['country_db', 'asn_db'] as const) {
    const v = geo[name];
    const files = typeof v === 'string' ? (v ? [v] : []) : v;
    const fix = `set geo.${name} to an ip-location-db CSV file or a MaxMind .mmdb file, or to "" for the data bundled with Postern`;
    files.forEach((file, i) => {
      const key = typeof v === 'string' ? `geo.${name}` : `geo.${name}[${i}]`;
      let st: Stats;
      try {
        st = statSync(file);
      } catch (e) {
        const code = errno(e);
        if (code === 'ENOENT' || code === 'ENOTDIR') out.push(problem(key, file, 'no such file', fix));
        else if (code === 'EACCES') out.push(problem(key, file, `cannot be reached by ${who()}`, `make its directory searchable by the user the relay runs as, or ${fix}`));
        else out.push(problem(key, file, `cannot be read (${(e as Error).message})`, fix));
        return;
      }
      if (st.isDirectory()) {
        out.push(problem(key, file, 'is a directory, not a file', fix));
        return;
      }
      try {
        accessSync(file, constants.R_OK);
      } catch {
        out.push(problem(key, file, `not readable by ${who()}`, `make it readable by the user the relay runs as (e.g. chmod 0644 ${file})`));
      }
    });
  }
  return out;
}

/** What `postern serve` checks before it opens anything: the files the config names. */
export function startupProblems(cfg: Config): Problem[] {
  return [...tlsProblems(cfg.tls), ...dataDirProblems(cfg.server.data_dir), ...geoProblems(cfg.geo), ...caFileProblems(cfg.delivery.tls_ca_file)];
}

/** [delivery] tls_ca_file: readable, and holding at least one certificate. */
export function caFileProblems(file: string): Problem[] {
  if (!file) return [];
  const fix = 'set delivery.tls_ca_file to a PEM file of CA certificates ("-----BEGIN CERTIFICATE-----"), readable by the relay, or "" for Node\'s CAs only';
  const out: Problem[] = [];
  const pem = readConfigFile('delivery.tls_ca_file', file, out, fix)?.toString('utf8');
  if (pem === undefined) return out;
  const first = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem)?.[0];
  try {
    if (!first) throw new Error('no "-----BEGIN CERTIFICATE-----" block');
    new X509Certificate(first);
  } catch (e) {
    return [problem('delivery.tls_ca_file', file, `holds no certificate (${(e as Error).message})`, fix)];
  }
  return [];
}

/**
 * A SQLite store that would not open although the checks above passed (a database file
 * SQLite refuses, a disk that filled up): the data directory named as the place to look.
 */
export function storeOpenProblem(cfg: { server: { data_dir: string }; store: { url: string } }, e: unknown): Problem | null {
  if (cfg.store.url) return null;
  const code = errno(e);
  if (!/^SQLITE_(CANTOPEN|READONLY|PERM|IOERR|FULL|NOTADB)/.test(code) && !['EACCES', 'EPERM', 'EROFS', 'ENOTDIR', 'ENOSPC', 'EISDIR'].includes(code)) return null;
  const file = path.join(cfg.server.data_dir, 'postern.db');
  return problem('server.data_dir', cfg.server.data_dir, `cannot open the database ${file} (${(e as Error).message})`, `make ${cfg.server.data_dir} and the postern.db files in it writable by the user the relay runs as, or restore postern.db from a backup`);
}

export interface ListenEntry {
  /** "submission.listen[0]". */
  key: string;
  /** "submission.listen": the key to change. */
  base: string;
  spec: string;
}

/** Every address the relay listens on, with the key that names it. */
export function listenEntries(cfg: { submission: { listen: string[]; listen_tls: string[] }; metrics: { enabled: boolean; listen: string } }): ListenEntry[] {
  return [
    ...cfg.submission.listen.map((spec, i) => ({ key: `submission.listen[${i}]`, base: 'submission.listen', spec })),
    ...cfg.submission.listen_tls.map((spec, i) => ({ key: `submission.listen_tls[${i}]`, base: 'submission.listen_tls', spec })),
    ...(cfg.metrics.enabled ? [{ key: 'metrics.listen', base: 'metrics.listen', spec: cfg.metrics.listen }] : []),
  ];
}

/** "[::]:587" -> { host: "::", port: 587 } (protocol/listen.ts has the relay's own copy). */
function hostPort(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec);
  return m ? { host: m[1] ?? m[2]!, port: Number(m[3]) } : { host: spec, port: NaN };
}

/** Binds as the relay does (net listen on host and port) and returns the server, or the error. */
function bind(spec: string): Promise<net.Server | Error> {
  const { host, port } = hostPort(spec);
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (e) => resolve(e));
    try {
      srv.listen({ port, host }, () => resolve(srv));
    } catch (e) {
      resolve(e as Error);
    }
  });
}

const close = (srv: net.Server) => new Promise<void>((r) => srv.close(() => r()));

/** Does something accept connections there? For an address this user may not bind. */
function answers(spec: string): Promise<boolean> {
  const { host, port } = hostPort(spec);
  const to = host === '::' ? '::1' : host === '0.0.0.0' ? '127.0.0.1' : host;
  return new Promise((resolve) => {
    const s = net.connect({ host: to, port, timeout: 1000 });
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.once('timeout', () => done(false));
  });
}

function inUse(e: ListenEntry): Problem {
  const { port } = hostPort(e.spec);
  return problem(e.key, e.spec, 'in use by another process (is the relay already running?)', `stop it (ss -ltnp 'sport = :${port}' names it) or set ${e.base} to a free address`);
}

/** The problem with one address the relay could not listen on, from the error listen(2) gave. */
function listenError(e: ListenEntry, err: Error): Problem {
  const { host, port } = hostPort(e.spec);
  switch (errno(err)) {
    case 'EADDRINUSE':
      return inUse(e);
    case 'EACCES':
      return problem(
        e.key,
        e.spec,
        port < 1024 ? `port ${port} is below 1024 and ${who()} may not bind it` : `${who()} may not bind this address`,
        `run the relay as root or with CAP_NET_BIND_SERVICE (config/postern.service grants it), or set ${e.base} to a port of 1024 or above`,
      );
    case 'EADDRNOTAVAIL':
      return problem(e.key, e.spec, `no network interface of this host has the address ${host}`, `set ${e.base} to an address of this host, or "[::]:${port}" for all of them`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
      return problem(e.key, e.spec, `the host name ${host} does not resolve`, `set ${e.base} to an IP address of this host`);
    case 'ERR_SOCKET_BAD_PORT':
      return problem(e.key, e.spec, `port ${port} is out of range`, `set ${e.base} to a port from 1 to 65535`);
    default:
      return problem(e.key, e.spec, `cannot listen (${err.message})`, null);
  }
}

/**
 * Can the relay listen on every address? Each is bound and held until all are tried (so two
 * keys naming one port are caught), then released. An address that failed as in use is tried
 * once more alone: free then, it clashes with another address of this config, not with some
 * other process. With `unprivileged`, an address this user may not bind (a port below 1024
 * for a check run without CAP_NET_BIND_SERVICE) is only tested for something answering there,
 * and otherwise left as a note: the relay under systemd has the capability.
 */
export async function listenProblems(entries: ListenEntry[], opts: { unprivileged?: boolean } = {}): Promise<{ problems: Problem[]; notes: string[] }> {
  const held: net.Server[] = [];
  const failed: Array<{ entry: ListenEntry; err: Error }> = [];
  for (const entry of entries) {
    const r = await bind(entry.spec);
    if (r instanceof net.Server) held.push(r);
    else failed.push({ entry, err: r });
  }
  await Promise.all(held.map(close));
  const problems: Problem[] = [];
  const notes: string[] = [];
  for (const { entry, err } of failed) {
    if (errno(err) === 'EADDRINUSE') {
      const alone = await bind(entry.spec);
      if (alone instanceof net.Server) {
        await close(alone);
        const { port } = hostPort(entry.spec);
        const other = entries.find((o) => o !== entry && hostPort(o.spec).port === port) ?? entries.find((o) => o !== entry)!;
        problems.push(problem(entry.key, entry.spec, `clashes with ${other.key} (${JSON.stringify(other.spec)}) on port ${port}`, 'give each port once (an address of [::] or 0.0.0.0 takes the port on every address)'));
        continue;
      }
    }
    if (errno(err) === 'EACCES' && opts.unprivileged) {
      if (await answers(entry.spec)) problems.push(inUse(entry));
      else notes.push(`${entry.key} = ${JSON.stringify(entry.spec)}: not bound by this check (${who()} may not bind it) and nothing answers there; the relay needs root or CAP_NET_BIND_SERVICE`);
      continue;
    }
    problems.push(listenError(entry, err));
  }
  return { problems, notes };
}

const LISTEN_CODES = new Set(['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'ERR_SOCKET_BAD_PORT']);

/**
 * A start that failed on a listen address, said as config check says it: the addresses are
 * tried again once everything the relay started is stopped, so the one at fault is named with
 * its key. Anything else, or an address that is free by now, is the error as it was.
 */
export async function explainListenError(cfg: Config, e: unknown): Promise<unknown> {
  // Only errors of listen(2) and its name lookup: an EACCES from a file is not an address's.
  const syscall = (e as { syscall?: string }).syscall;
  if (!LISTEN_CODES.has(errno(e)) || (syscall !== undefined && !['listen', 'bind', 'getaddrinfo'].includes(syscall))) return e;
  const { problems } = await listenProblems(listenEntries(cfg));
  return problems.length ? new StartupError(problems) : e;
}

/** "submission.listen[0]" from a zod issue's path. */
function keyOf(at: ReadonlyArray<PropertyKey>): string {
  return at.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${tomlKey(String(p))}`)).join('');
}

function valueAt(doc: unknown, at: ReadonlyArray<PropertyKey>): unknown {
  let v = doc;
  for (const p of at) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** Every schema issue, one problem each (load.ts joins them into one refusal). */
export function schemaProblems(doc: unknown): Problem[] {
  const r = configSchema.safeParse(doc);
  if (r.success) return [];
  return r.error.issues.flatMap((issue: z.core.$ZodIssue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => problem(keyOf([...issue.path, k]), valueAt(doc, [...issue.path, k]) ?? null, 'unknown key', 'remove it or correct its spelling (config/postern.example.toml lists every key)'));
    }
    return [problem(keyOf(issue.path) || '(top level)', valueAt(doc, issue.path) ?? null, issue.message, null)];
  });
}

export interface CheckReport {
  file: string;
  problems: Problem[];
  /** What could not be checked from here, said once; not a problem. */
  notes: string[];
  /** What was checked, for the OK line. */
  checked: { certificate: string; dataDir: string | null; listen: string[] };
}

/**
 * Everything `serve` would refuse, listed in one pass: TOML syntax, the schema key by key,
 * the checks between keys, the HELO guard, the certificate and key, the data directory and
 * the listen addresses. A section that does not validate is left out of the checks that need
 * it; every other section is still checked. A file that cannot be read at all is an error.
 */
export async function checkConfigFile(file?: string, opts: { unprivileged?: boolean } = {}): Promise<CheckReport> {
  let read: { file: string; doc: unknown };
  try {
    read = readConfigDoc(file);
  } catch (e) {
    if (e instanceof ConfigError && !/^cannot read config /.test(e.message)) {
      const p = path.resolve(file ?? process.env.POSTERN_CONFIG ?? '/etc/postern/postern.toml');
      return { file: p, problems: [problem(null, null, e.message, null)], notes: [], checked: { certificate: '', dataDir: null, listen: [] } };
    }
    throw e;
  }
  const { doc } = read;
  const baseDir = path.dirname(read.file);
  const problems = schemaProblems(doc);
  const shape = configSchema.shape as unknown as Record<string, z.ZodType>;
  const section = <K extends keyof Config>(name: K): Config[K] | null => {
    const r = shape[name]!.safeParse((doc as Record<string, unknown>)[name]);
    return r.success ? (r.data as Config[K]) : null;
  };
  const server = section('server');
  const tlsCfg = section('tls');
  const submission = section('submission');
  const identity = section('identity');
  const metrics = section('metrics');
  const geo = section('geo');
  if (server) server.data_dir = path.resolve(baseDir, server.data_dir);
  if (tlsCfg?.cert) tlsCfg.cert = path.resolve(baseDir, tlsCfg.cert);
  if (tlsCfg?.key) tlsCfg.key = path.resolve(baseDir, tlsCfg.key);
  const delivery = section('delivery');
  if (delivery?.tls_ca_file) delivery.tls_ca_file = path.resolve(baseDir, delivery.tls_ca_file);
  if (geo) {
    geo.country_db = resolveGeoPaths(baseDir, geo.country_db);
    geo.asn_db = resolveGeoPaths(baseDir, geo.asn_db);
  }

  problems.push(...crossCheckProblems({ tls: tlsCfg ?? { cert: '', key: '' }, submission: submission ?? { proxy_protocol: false, trusted_proxies: [] }, auth: section('auth') ?? undefined, delivery: delivery ?? undefined }));
  if (identity) problems.push(...identityProblems(identity));
  if (tlsCfg) problems.push(...tlsProblems(tlsCfg));
  if (server) problems.push(...dataDirProblems(server.data_dir));
  if (geo) problems.push(...geoProblems(geo));
  if (delivery) problems.push(...caFileProblems(delivery.tls_ca_file));
  const entries = submission && metrics ? listenEntries({ submission, metrics }) : [];
  const listen = await listenProblems(entries, opts);
  problems.push(...listen.problems);
  return {
    file: read.file,
    problems,
    notes: listen.notes,
    checked: {
      certificate: tlsCfg?.cert ? tlsCfg.cert : 'self-signed, made in server.data_dir',
      dataDir: server?.data_dir ?? null,
      listen: entries.map((e) => e.spec),
    },
  };
}
