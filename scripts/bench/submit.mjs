// Submission benchmark: N concurrent clients, STARTTLS + AUTH PLAIN,
// M messages of S bytes, one login per connection or per message; against Postern or the
// bare smtp-server ceiling. Prints one JSON line.
//   node scripts/bench/submit.mjs --target postern --conns 50 --messages 5000 --size 10240
//   node scripts/bench/submit.mjs --target bare ...         (the ceiling)
//   node scripts/bench/submit.mjs --storm 200               (200 logins at once)
//   node scripts/bench/submit.mjs --conns 50 --rate 400      (paced: latency at a given load)
//   node scripts/bench/submit.mjs --pg 1 --nodes 2           (two nodes on one throwaway PostgreSQL)
//   node scripts/bench/submit.mjs --dovecot 1 --mode message --set auth.cache_ttl_seconds=0
//                                                            (passwords checked by a throwaway Dovecot)
//   node scripts/bench/submit.mjs --mode message --resume 1  (devices that resume their TLS session)
//   node scripts/bench/submit.mjs --workers 2                ([server] workers = 2)
//   scripts/bench/issue20.sh                                 (issue 20's cases, each next to the ceiling)
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { args, Conn, message, percentile, pgCpuSeconds, postmasterPid, processTree, ROOT, startChild, tempConfig, treeUsage, SERVE_FLAGS } from './lib.mjs';

// --set limits.enabled=false,quarantine.mode=monitor changes the relay's config for the run.
// --target smtp-sink runs Postfix's smtp-sink (no TLS, no AUTH): use --plain 1 for it and for
// the bare smtp-server figure it is compared with.
// --pg 1 starts a throwaway PostgreSQL (Debian's server binaries, as the tests do; needs the
// build: npm run build) and points the relay at a fresh database in it. --nodes N starts N
// relays on one store (PostgreSQL: use with --pg 1); connections are spread over them in turn,
// as a TCP load balancer would.
// --dovecot 1 starts a throwaway Dovecot (Debian's dovecot-core, as the tests do; needs the
// build) with the bench user in a passwd-file, and sets [auth] backend = "dovecot".
// --resume 1: each client slot offers the TLS session of its previous connection (the latest
// ticket the server sent on it) at its next STARTTLS, as a device that keeps its TLS session
// does; the JSON counts the handshakes and how many the server resumed (with --resume 0 the
// client offers none, so resumed is 0). Meant for --mode message; works on both targets.
// --workers N sets [server] workers = N (0: one per core), as --set server.workers=N would.
// CPU and RSS are of the serve process and every process below it (primary and workers):
// server_cpu_s is their sum, and `processes` lists each one (role, pid, cpu_s, rss_mb, ...).
// errors are split into dropped (the connection failed: refused, reset, closed, TLS failed, or
// a 421 reply, after which the server closes) and refused (any other unexpected SMTP reply).
const o = args({ target: 'postern', conns: 10, messages: 2000, size: 10_240, mode: 'conn', storm: 0, seconds: 120, set: '', plain: 0, rate: 0, pg: 0, nodes: 1, dovecot: 0, resume: 0, workers: '', label: '' });
if (o.workers !== '' && !/^\d+$/.test(o.workers)) throw new Error(`--workers takes a number of processes (0: one per core), not "${o.workers}"`);
if (o.workers !== '' && o.target !== 'postern') throw new Error('--workers applies to --target postern only (the bare server is one process)');
if (o.resume && o.plain) throw new Error('--resume needs TLS: leave out --plain');
const PASS = 'bench password 0123456789';

let server;
/** Every relay started (one unless --nodes). */
let servers = [];
let pgServer = null;
let dovecot = null;
let pgPid = null;
if (o.target === 'smtp-sink') {
  const { spawn } = await import('node:child_process');
  const net = await import('node:net');
  const probe = net.createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const port = probe.address().port;
  await new Promise((r) => probe.close(r));
  const child = spawn('smtp-sink', ['-u', 'nobody', `127.0.0.1:${port}`, '1000'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((r) => net.connect(port, '127.0.0.1').once('connect', function () { this.destroy(); r(true); }).once('error', () => r(false)));
    if (ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  server = { child, port, stop: () => child.kill('SIGKILL') };
} else if (o.target === 'bare') {
  server = await startChild([path.join(ROOT, 'scripts/bench/bare-server.mjs')], { BARE_PLAIN: o.plain ? '1' : '0' });
} else {
  const overrides = {};
  for (const kv of o.set.split(',').filter(Boolean)) {
    const [k, v] = kv.split('=');
    const [section, key] = k.split('.');
    overrides[section] = { ...overrides[section], [key]: v === 'true' ? true : v === 'false' ? false : /^\d+$/.test(v) ? Number(v) : v };
  }
  if (o.workers !== '') overrides.server = { ...overrides.server, workers: Number(o.workers) };
  if (o.pg) {
    const { startPostgres } = await import(path.join(ROOT, 'dist/test/helpers/postgres.js'));
    pgServer = await startPostgres();
    const url = await pgServer.database();
    overrides.store = { url };
    pgPid = postmasterPid(new URL(url).port);
  }
  if (o.dovecot) {
    const { startDovecot } = await import(path.join(ROOT, 'dist/test/helpers/dovecot.js'));
    dovecot = await startDovecot({ bench: PASS });
    overrides.auth = { ...overrides.auth, backend: 'dovecot', dovecot_socket: dovecot.inet };
  }
  if (o.nodes > 1 && !overrides.store?.url) throw new Error('--nodes needs a shared store: add --pg 1 (or --set store.url=postgres://...)');
  const files = Array.from({ length: o.nodes }, (_, i) => tempConfig({ ...overrides, server: { ...overrides.server, node_id: `bench-${i + 1}` } }).file);
  const add = spawnSync(process.execPath, [path.join(ROOT, 'bin/postern.js'), '--config', files[0], 'user', 'add', 'bench', ...(o.dovecot ? [] : ['--password-stdin']), '--sender', '@example.com', '--network', '127.0.0.1'], { input: PASS });
  if (add.status !== 0) throw new Error(add.stderr.toString());
  servers = await Promise.all(files.map((file) => startChild([...SERVE_FLAGS, path.join(ROOT, 'bin/postern.js'), '--config', file, 'serve'])));
  server = { ...servers[0], stop: () => servers.forEach((s) => s.stop()) };
}
if (!servers.length) servers = [server];
const { child, port } = server;
const ports = servers.map((s) => s.port);
const base = processTree(child.pid);
const bases = servers.map((s) => processTree(s.child.pid));
const pgBase = pgPid ? pgCpuSeconds(pgPid) : 0;
let handshakes = 0;
let resumed = 0;
const login = async (c, session) => {
  if (o.plain) return c.cmd('EHLO bench.example');
  await c.login('bench', PASS, o.resume ? session : undefined);
  handshakes++;
  if (c.resumed) resumed++;
};
let dropped = 0;
let refused = 0;
/** A failed session: refused when the server answered with an unexpected reply, else dropped (421 too: the server closes). */
const failed = (e) => {
  const code = /^(?:\w+(?: of DATA)?: )?(\d{3})[ -]/.exec(e.message)?.[1];
  if (code && code !== '421') refused++;
  else dropped++;
};

// --seconds bounds the load itself: the clock starts once the servers are up.
const deadline = Date.now() + o.seconds * 1000;
// --label names the case in the JSON line (scripts/bench/issue20.sh sets it).
const result = { ...(o.label ? { case: o.label } : {}), bench: o.storm ? 'login-storm' : 'submit', target: o.target, node: process.version, cpus: (await import('node:os')).cpus().length };
if (o.storm) {
  // All connections complete TLS first, then AUTH at the same instant.
  const t0 = performance.now();
  const conns = await Promise.all(Array.from({ length: o.storm }, () => Conn.open(port)));
  await Promise.all(conns.map(async (c) => { await c.cmd('EHLO bench.example'); await c.starttls(); await c.cmd('EHLO bench.example'); }));
  const t1 = performance.now();
  const replies = await Promise.all(conns.map((c) => c.cmd('AUTH PLAIN ' + Buffer.from(`\0bench\0${PASS}`).toString('base64'))));
  const t2 = performance.now();
  const st = treeUsage(child.pid, base);
  Object.assign(result, {
    connections: o.storm,
    tls_setup_s: +((t1 - t0) / 1000).toFixed(2),
    auth_s: +((t2 - t1) / 1000).toFixed(2),
    ok: replies.filter((r) => r.startsWith('235')).length,
    tempfail: replies.filter((r) => r.startsWith('454')).length,
    server_peak_rss_mb: +(st.peakRss / 1048576).toFixed(1),
    server_idle_rss_mb: +(base.list.reduce((n, p) => n + p.rss, 0) / 1048576).toFixed(1),
    processes: st.processes,
  });
  for (const c of conns) c.close();
} else {
  const body = message(o.size);
  const latencies = [];
  let errors = 0;
  let next = 0;
  let t0 = performance.now();
  // --rate R: open loop. Each connection sends on a fixed schedule (together R msgs/s) and
  // latency counts from the scheduled moment, so time spent behind schedule is counted too
  // (no coordinated omission). Without it, closed loop: each sends as soon as it can, and
  // latency is bound to connections / throughput (Little's law).
  const interval = o.rate ? (o.conns / o.rate) * 1000 : 0;
  // Paced runs log every connection in first and start the schedule together, so it measures
  // submission and not 50 argon2 verifications queueing. (The pacing waits are the load's
  // schedule, not a test waiting for an event.)
  let loggedIn = 0;
  let startAll;
  const started = new Promise((r) => (startAll = r));
  async function worker(_, index) {
    let c = null;
    // --resume: this slot's TLS session, taken from its connection as that one ends.
    let session;
    const end = () => {
      if (c?.session) session = c.session;
      c?.close();
      c = null;
    };
    const port = ports[index % ports.length];
    if (interval) {
      c = await Conn.open(port);
      await login(c);
      if (++loggedIn === o.conns) startAll(performance.now());
    }
    let due = interval ? (await started) + (index * interval) / o.conns : 0;
    while (next < o.messages && Date.now() < deadline) {
      next++;
      try {
        if (!c) {
          c = await Conn.open(port);
          await login(c, session);
        }
        if (interval) {
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          const ms = await c.send('bench@example.com', 'sink@example.org', body);
          latencies.push(ms + Math.max(0, -wait));
          due += interval;
        } else {
          latencies.push(await c.send('bench@example.com', 'sink@example.org', body));
        }
        if (o.mode === 'message') {
          c.sock.write('QUIT\r\n');
          end();
        }
      } catch (e) {
        errors++;
        failed(e);
        if (errors < 5) console.error(String(e));
        end();
      }
    }
    end();
  }
  if (interval) void started.then((t) => (t0 = t));
  await Promise.all(Array.from({ length: o.conns }, worker));
  const secs = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const st = treeUsage(child.pid, base);
  Object.assign(result, {
    mode: o.mode === 'message' ? 'login-per-message' : 'login-per-connection',
    load: o.rate ? `paced at ${o.rate} msgs/s` : 'closed loop (as fast as replies come)',
    protocol: o.plain ? 'plain SMTP' : 'STARTTLS + AUTH PLAIN',
    connections: o.conns,
    size: o.size,
    accepted: latencies.length,
    errors,
    dropped,
    refused,
    seconds: +secs.toFixed(2),
    msgs_per_s: +(latencies.length / secs).toFixed(1),
    p50_ms: latencies.length ? +percentile(latencies, 50).toFixed(2) : null,
    p99_ms: latencies.length ? +percentile(latencies, 99).toFixed(2) : null,
    ...(o.plain ? {} : { resume: !!o.resume, handshakes, resumed, resumed_share: handshakes ? +(resumed / handshakes).toFixed(3) : null }),
    workers: o.workers === '' ? null : Number(o.workers),
    server_rss_mb: +(st.rss / 1048576).toFixed(1),
    server_peak_rss_mb: +(st.peakRss / 1048576).toFixed(1),
    server_cpu_s: +st.cpuSeconds.toFixed(2),
    server_sys_s: +st.sysSeconds.toFixed(2),
    server_cpu_ms_per_msg: latencies.length ? +((st.cpuSeconds * 1000) / latencies.length).toFixed(2) : null,
    // The load client's own CPU (this process, setup included): on a shared machine it is CPU
    // the server does not get.
    client_cpu_s: +((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(2),
    processes: st.processes,
  });
  if (servers.length > 1 || pgPid) {
    const nodesCpu = servers.reduce((n, s, i) => n + treeUsage(s.child.pid, bases[i]).cpuSeconds, 0);
    Object.assign(result, {
      engine: o.pg || o.set.includes('store.url') ? 'postgres' : 'sqlite',
      nodes: servers.length,
      nodes_cpu_s: +nodesCpu.toFixed(2),
      nodes_cpu_ms_per_msg: +((nodesCpu * 1000) / latencies.length).toFixed(2),
      ...(pgPid ? { postgres_cpu_s: +(pgCpuSeconds(pgPid) - pgBase).toFixed(2), postgres_cpu_ms_per_msg: +(((pgCpuSeconds(pgPid) - pgBase) * 1000) / latencies.length).toFixed(2) } : {}),
    });
  }
}
server.stop();
await pgServer?.stop();
await dovecot?.close();
if (o.dovecot) result.passwords = 'dovecot';
console.log(JSON.stringify(result));
process.exit(0);
