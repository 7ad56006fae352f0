// Shared pieces of the benchmarks: a lean SMTP client, child-process servers, /proc readings.
// All traffic stays on loopback; every loop is bounded in count and time.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify as stringifyToml } from 'smol-toml';

/**
 * Node flags the relay runs with in production (config/postern.service, npm start): a young
 * generation of 2 MB semi-spaces instead of up to 16 MB, which keeps ~40 MB of garbage from
 * sitting in RSS between scavenges (no measurable cost in submit runs). Benchmarks start the
 * relay the same way.
 */
// BENCH_SERVE_FLAGS adds Node flags to the relay's, for profiling a case, e.g.
// BENCH_SERVE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (the relay is then stopped with SIGTERM,
// not SIGKILL, so it writes the profile).
export const SERVE_FLAGS = ['--max-semi-space-size=2', ...(process.env.BENCH_SERVE_FLAGS ?? '').split(' ').filter(Boolean)];

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function args(defaults) {
  const out = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in defaults)) throw new Error(`unknown option --${k}; known: ${Object.keys(defaults).join(', ')}`);
    const v = argv[++i];
    out[k] = typeof defaults[k] === 'number' ? Number(v) : v;
  }
  return out;
}

/** Minimal SMTP conversation over one socket: reads whole replies, upgrades with STARTTLS. */
/**
 * One client TLS context for every connection, as a device's TLS library keeps one: without
 * it Node builds a context per connection (the CA store included), which made the load
 * client, not the server, the limit of the one-login-per-message runs.
 */
const CLIENT_TLS = tls.createSecureContext({});

export class Conn {
  static open(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, async () => {
        const c = new Conn(s);
        await c.reply();
        resolve(c);
      });
      s.once('error', reject);
    });
  }
  constructor(sock) {
    this.buf = '';
    this.wait = null;
    this.use(sock);
  }
  use(sock) {
    this.sock = sock;
    sock.setEncoding('latin1');
    sock.on('data', (d) => {
      this.buf += d;
      this.wait?.();
    });
    sock.on('error', () => this.wait?.());
    sock.on('close', () => {
      this.closed = true;
      this.wait?.();
    });
  }
  async reply() {
    for (;;) {
      const m = /(?:^|\r\n)(\d{3}) [^\r\n]*\r\n/.exec(this.buf);
      if (m) {
        const end = m.index + m[0].length;
        const r = this.buf.slice(0, end);
        this.buf = this.buf.slice(end);
        return r.trimEnd().split('\r\n').pop();
      }
      if (this.closed) throw new Error('connection closed');
      await new Promise((r) => (this.wait = r));
      this.wait = null;
    }
  }
  async cmd(line) {
    this.sock.write(line + '\r\n');
    return this.reply();
  }
  /**
   * Upgrades with STARTTLS, offering `session` (a previous connection's, from `this.session`)
   * for resumption; `this.resumed` tells whether the server took it. `this.session` follows
   * the 'session' events: TLS 1.3 tickets arrive after the handshake, and the latest wins.
   */
  async starttls(session) {
    const r = await this.cmd('STARTTLS');
    if (!r.startsWith('220')) throw new Error(r);
    const plain = this.sock;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const s = await new Promise((resolve, reject) => {
      const t = tls.connect({ socket: plain, rejectUnauthorized: false, secureContext: CLIENT_TLS, ...(session ? { session } : {}) }, () => resolve(t));
      t.on('session', (ticket) => (this.session = ticket));
      t.once('error', reject);
    });
    this.resumed = s.isSessionReused();
    this.use(s);
  }
  async login(user, pass, session) {
    await this.cmd('EHLO bench.example');
    await this.starttls(session);
    await this.cmd('EHLO bench.example');
    const r = await this.cmd('AUTH PLAIN ' + Buffer.from(`\0${user}\0${pass}`).toString('base64'));
    if (!r.startsWith('235')) throw new Error(`AUTH: ${r}`);
  }
  /** One transaction; returns ms from MAIL to the reply after the final dot. */
  async send(from, to, body) {
    const t0 = performance.now();
    let r = await this.cmd(`MAIL FROM:<${from}>`);
    if (!r.startsWith('250')) throw new Error(`MAIL: ${r}`);
    r = await this.cmd(`RCPT TO:<${to}>`);
    if (!r.startsWith('250')) throw new Error(`RCPT: ${r}`);
    r = await this.cmd('DATA');
    if (!r.startsWith('354')) throw new Error(`DATA: ${r}`);
    this.sock.write(body);
    r = await this.reply();
    if (!r.startsWith('250')) throw new Error(`end of DATA: ${r}`);
    return performance.now() - t0;
  }
  close() {
    this.sock.destroy();
  }
}

/** A CRLF message of about `size` bytes, dot-terminated. */
export function message(size) {
  const head = 'From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n';
  const line = 'x'.repeat(76) + '\r\n';
  let body = head;
  while (body.length + line.length <= size) body += line;
  return body + '.\r\n';
}

export function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Peak resident set (VmHWM) and CPU seconds of a process, from /proc. */
export function procStats(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024;
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ticks = Number(stat[11]) + Number(stat[12]);
  return { peakRss: hwm, rss, cpuSeconds: ticks / 100, sysSeconds: Number(stat[12]) / 100 };
}

/**
 * The serve process `pid` and every process below it (with [server] workers, the primary and
 * its workers; children from /proc/<pid>/task/<tid>/children), each with procStats and a role:
 * "main" when it has no children, else "primary"; below it "worker N" (node:cluster's
 * NODE_UNIQUE_ID from the environment; else the pid). `reapedCpuSeconds` is CPU of children
 * already reaped (a worker that died), counted in the primary's cutime/cstime. A process that
 * exits while being read is left out.
 */
export function processTree(pid) {
  const kids = (p) => {
    const out = [];
    try {
      for (const t of readdirSync(`/proc/${p}/task`)) {
        for (const c of readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ').filter(Boolean)) out.push(Number(c));
      }
    } catch {
      // exited meanwhile
    }
    return out;
  };
  const list = [];
  const walk = (p, depth) => {
    let st;
    try {
      st = procStats(p);
    } catch {
      return;
    }
    let role = depth === 0 ? 'primary' : `pid ${p}`;
    if (depth > 0) {
      try {
        const id = /(?:^|\0)NODE_UNIQUE_ID=(\d+)/.exec(readFileSync(`/proc/${p}/environ`, 'latin1'));
        if (id) role = `worker ${id[1]}`;
      } catch {
        // not readable: keep the pid
      }
    }
    list.push({ pid: p, role, ...st });
    for (const c of kids(p)) walk(c, depth + 1);
  };
  walk(pid, 0);
  if (list.length === 1) list[0].role = 'main';
  let reapedCpuSeconds = 0;
  let reapedSysSeconds = 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    reapedCpuSeconds = (Number(stat[13]) + Number(stat[14])) / 100;
    reapedSysSeconds = Number(stat[14]) / 100;
  } catch {
    // exited
  }
  return { list, reapedCpuSeconds, reapedSysSeconds };
}

/**
 * CPU and memory of the serve process tree since `base` (a processTree taken at start): totals
 * (CPU summed over every process, RSS summed, peak RSS as the sum of each process's own peak,
 * an upper bound of the tree's) and one row per process, in MB and seconds.
 */
export function treeUsage(pid, base) {
  const now = processTree(pid);
  const was = new Map(base.list.map((p) => [p.pid, p]));
  const mb = (b) => +(b / 1048576).toFixed(1);
  const rows = now.list.map((p) => ({
    role: p.role,
    pid: p.pid,
    cpu_s: +(p.cpuSeconds - (was.get(p.pid)?.cpuSeconds ?? 0)).toFixed(2),
    sys_s: +(p.sysSeconds - (was.get(p.pid)?.sysSeconds ?? 0)).toFixed(2),
    rss_mb: mb(p.rss),
    peak_rss_mb: mb(p.peakRss),
  }));
  // A process gone since `base` was reaped by its parent: its whole CPU moved into the
  // parent's children times, so totals are (live + reaped) now minus the same at start.
  const total = (t, k, reaped) => t.list.reduce((n, p) => n + p[k], 0) + t[reaped];
  return {
    cpuSeconds: total(now, 'cpuSeconds', 'reapedCpuSeconds') - total(base, 'cpuSeconds', 'reapedCpuSeconds'),
    sysSeconds: total(now, 'sysSeconds', 'reapedSysSeconds') - total(base, 'sysSeconds', 'reapedSysSeconds'),
    rss: now.list.reduce((n, p) => n + p.rss, 0),
    peakRss: now.list.reduce((n, p) => n + p.peakRss, 0),
    processes: rows,
  };
}

/** The postmaster listening on `port` (its command line has "-p PORT"), or null. */
export function postmasterPid(port) {
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('/postgres') && argv.includes('-p') && argv[argv.indexOf('-p') + 1] === String(port)) return Number(p);
    } catch {
      // exited meanwhile
    }
  }
  return null;
}

/**
 * CPU seconds used so far by every process of the PostgreSQL server whose postmaster is `pid`
 * (its backends included: those still running, and those already reaped into its children's
 * times).
 */
export function pgCpuSeconds(pid) {
  const ticks = (p, withChildren) => {
    const stat = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(stat[11]) + Number(stat[12]) + (withChildren ? Number(stat[13]) + Number(stat[14]) : 0);
  };
  let total = ticks(pid, true);
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1] === String(pid)) total += ticks(p, false);
    } catch {
      // exited meanwhile
    }
  }
  return total / 100;
}

/** Spawns a node script and resolves once it prints a JSON line with event "relay.started" or "ready". */
export function startChild(argv, env = {}) {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const timer = setTimeout(() => child.kill('SIGKILL'), 15 * 60_000).unref();
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${argv.join(' ')} exited with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      let ev;
      try {
        ev = JSON.parse(line);
      } catch {
        return;
      }
      if (ev.event === 'relay.started' || ev.event === 'ready') {
        child.removeAllListeners('exit');
        // stop() ends the workers too ([server] workers: they are children of the serve process).
        const stop = () => {
          clearTimeout(timer);
          const below = processTree(child.pid).list.slice(1);
          // Profiling (BENCH_SERVE_FLAGS): SIGTERM, so the relay stops and writes its profile.
          const signal = process.env.BENCH_SERVE_FLAGS ? 'SIGTERM' : 'SIGKILL';
          child.kill(signal);
          for (const p of below) {
            try {
              process.kill(p.pid, signal);
            } catch {
              // already gone
            }
          }
        };
        resolve({ child, event: ev, port: ev.starttls ? ev.starttls[0] : ev.port, stop });
      }
    });
  });
}

/**
 * A throwaway config for a benchmark run. Limits are set far above what a run sends and the
 * per-address connection cap above its connection count, so they cost what they cost on
 * every message without ever refusing; `overrides` ({section: {key: value}}) is merged in.
 * Delivery stays off unless the caller configures it: left on, it would ask the system
 * resolver about example.org.
 */
export function tempConfig(overrides = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-bench-'));
  const file = path.join(dir, 'postern.toml');
  const cfg = {
    server: { hostname: 'bench.localhost', data_dir: 'data', max_clients: 5000, max_connections_per_ip: 10000 },
    submission: { listen: ['127.0.0.1:0'], listen_tls: [] },
    limits: { messages_per_hour: 1_000_000, recipients_per_hour: 1_000_000, recipients_per_day: 1_000_000 },
    identity: { helo: 'mta-out.bench.example', ptr: 'mail.bench.example' },
    delivery: { enabled: false },
    metrics: { listen: '127.0.0.1:0' },
    log: { level: 'info' },
  };
  for (const [section, values] of Object.entries(overrides)) cfg[section] = { ...cfg[section], ...values };
  writeFileSync(file, stringifyToml(cfg));
  return { dir, file };
}
