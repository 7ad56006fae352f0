// Idle benchmark: N TLS connections held open on the implicit-TLS listener, each
// past the greeting and EHLO, then the server's RSS: memory per idle connection. One JSON line.
//   node scripts/bench/idle.mjs --conns 2000
//   node scripts/bench/idle.mjs --conns 2000 --workers 2   ([server] workers = 2)
// RSS is of the serve process and every process below it: server_rss_mb is the sum, and
// `processes` gives each one's (the primary's and each worker's; "main" when there is one
// process). server_rss_mb is taken as soon as the last connection is open, with the garbage
// of 2,000 handshakes still in the heap; server_rss_settled_mb once the connections have sat
// idle for --settle seconds (default 20: V8's memory reducer collects after about 10 s of
// quiet), which is what idle connections cost for as long as they stay.
//   node scripts/bench/idle.mjs --conns 2000 --settle 0   (no wait: the first figure only)
import path from 'node:path';
import tls from 'node:tls';
import { args, processTree, ROOT, startChild, tempConfig, treeUsage, SERVE_FLAGS } from './lib.mjs';

const o = args({ conns: 2000, seconds: 120, settle: 20, workers: '', label: '' });
if (o.workers !== '' && !/^\d+$/.test(o.workers)) throw new Error(`--workers takes a number of processes (0: one per core), not "${o.workers}"`);
const { file } = tempConfig({
  submission: { listen: ['127.0.0.1:0'], listen_tls: ['127.0.0.1:0'] },
  ...(o.workers !== '' ? { server: { workers: Number(o.workers) } } : {}),
});
const server = await startChild([...SERVE_FLAGS, path.join(ROOT, 'bin/postern.js'), '--config', file, 'serve']);
const port = server.event.tls[0];
const deadline = Date.now() + o.seconds * 1000;
const before = processTree(server.child.pid);
const beforeRss = before.list.reduce((n, p) => n + p.rss, 0);

function open() {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d) => {
      buf += d;
      if (/^220 /m.test(buf) && !buf.includes('EHLO-SENT')) {
        buf += 'EHLO-SENT';
        s.write('EHLO idle.example\r\n');
      } else if (/\r\n250 /.test(buf)) {
        s.removeAllListeners('data');
        resolve(s);
      }
    });
    s.once('error', reject);
  });
}

const sockets = [];
let errors = 0;
const t0 = performance.now();
// Open in waves of 100: a real fleet reconnects over time, not in one SYN flood.
while (sockets.length + errors < o.conns && Date.now() < deadline) {
  const wave = await Promise.allSettled(Array.from({ length: Math.min(100, o.conns - sockets.length - errors) }, open));
  for (const r of wave) {
    if (r.status === 'fulfilled') sockets.push(r.value);
    else errors++;
  }
}
const openSecs = (performance.now() - t0) / 1000;
const held = treeUsage(server.child.pid, before);
const rssBefore = new Map(before.list.map((p) => [p.pid, p.rss]));
// The connections sit idle; RSS is read again once they have for --settle seconds (the wait
// is the measurement's, not a wait for an event).
if (o.settle > 0) await new Promise((r) => setTimeout(r, o.settle * 1000));
const settled = o.settle > 0 ? treeUsage(server.child.pid, before) : null;
const settledRss = new Map((settled?.processes ?? []).map((p) => [p.pid, p.rss_mb]));
console.log(
  JSON.stringify({
    ...(o.label ? { case: o.label } : {}),
    bench: 'idle',
    connections: sockets.length,
    errors,
    open_s: +openSecs.toFixed(2),
    workers: o.workers === '' ? null : Number(o.workers),
    server_rss_before_mb: +(beforeRss / 1048576).toFixed(1),
    server_rss_mb: +(held.rss / 1048576).toFixed(1),
    server_peak_rss_mb: +(held.peakRss / 1048576).toFixed(1),
    kb_per_connection: +((held.rss - beforeRss) / 1024 / Math.max(1, sockets.length)).toFixed(1),
    settle_s: o.settle,
    server_rss_settled_mb: settled ? +(settled.rss / 1048576).toFixed(1) : null,
    kb_per_connection_settled: settled ? +((settled.rss - beforeRss) / 1024 / Math.max(1, sockets.length)).toFixed(1) : null,
    processes: held.processes.map(({ role, pid, rss_mb, peak_rss_mb }) => ({ role, pid, rss_before_mb: +((rssBefore.get(pid) ?? 0) / 1048576).toFixed(1), rss_mb, rss_settled_mb: settledRss.get(pid) ?? null, peak_rss_mb })),
  }),
);
for (const s of sockets) s.destroy();
server.stop();
process.exit(0);
