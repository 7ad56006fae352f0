// Idle benchmark: N TLS connections held open on the implicit-TLS listener, each
// past the greeting and EHLO, then the server's RSS: memory per idle connection. One JSON line.
//   node scripts/bench/idle.mjs --conns 2000
import path from 'node:path';
import tls from 'node:tls';
import { args, procStats, ROOT, startChild, tempConfig, SERVE_FLAGS } from './lib.mjs';

const o = args({ conns: 2000, seconds: 120 });
const { file } = tempConfig({ submission: { listen: ['127.0.0.1:0'], listen_tls: ['127.0.0.1:0'] } });
const server = await startChild([...SERVE_FLAGS, path.join(ROOT, 'bin/postern.js'), '--config', file, 'serve']);
const port = server.event.tls[0];
const deadline = Date.now() + o.seconds * 1000;
const before = procStats(server.child.pid);

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
const held = procStats(server.child.pid);
console.log(
  JSON.stringify({
    bench: 'idle',
    connections: sockets.length,
    errors,
    open_s: +openSecs.toFixed(2),
    server_rss_before_mb: +(before.rss / 1048576).toFixed(1),
    server_rss_mb: +(held.rss / 1048576).toFixed(1),
    server_peak_rss_mb: +(held.peakRss / 1048576).toFixed(1),
    kb_per_connection: +((held.rss - before.rss) / 1024 / Math.max(1, sockets.length)).toFixed(1),
  }),
);
for (const s of sockets) s.destroy();
server.stop();
process.exit(0);
