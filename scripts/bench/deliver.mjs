// Delivery benchmark: drains N queued messages to SMTP sinks on loopback addresses
// (127.0.0.10 ...), through a real DNS server on loopback, for 1 and 10 destination domains;
// then runs the submission benchmark with delivery off and on, to show that delivering does
// not slow accepting down. Loopback only, bounded in count and time. Prints one JSON line.
//   npm run bench:deliver
//   node scripts/bench/deliver.mjs --messages 2000 --size 10240 --seconds 60 --submit 1
import { spawn, spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { args, Conn, message, percentile, procStats, ROOT, startChild, tempConfig, SERVE_FLAGS } from './lib.mjs';

const dist = (p) => path.join(ROOT, 'dist', p);
const { parseConfig } = await import(dist('src/config/load.js'));
const { startDelivery } = await import(dist('src/delivery/index.js'));
const { systemClock } = await import(dist('src/domain/clock.js'));
const { createLogger } = await import(dist('src/obs/log.js'));
const { newQueueId } = await import(dist('src/spool/message.js'));
const { Spool } = await import(dist('src/spool/spool.js'));
const { openStore } = await import(dist('src/store/index.js'));
const { startDnsServer } = await import(dist('test/helpers/dnsd.js'));

const o = args({ messages: 2000, size: 10_240, seconds: 60, submit: 1, 'submit-messages': 2000 });
// Each phase stops after --seconds, whatever is left (reported).
let deadline = 0;
const startPhase = () => (deadline = Date.now() + o.seconds * 1000);
const DOMAINS = 10;

// Sinks on 127.0.0.10 .. 127.0.0.19, all on one port ([delivery] port is global), in a child
// process: receiving must not take CPU from the process measured.
const sinkProc = spawn(process.execPath, [path.join(ROOT, 'scripts/bench/sinks.mjs'), String(DOMAINS)], { stdio: ['pipe', 'pipe', 'inherit'] });
const killTimer = setTimeout(() => sinkProc.kill('SIGKILL'), 20 * 60_000);
killTimer.unref();
let received = 0;
const port = await new Promise((resolve, reject) => {
  sinkProc.once('exit', (code) => reject(new Error(`sinks exited with ${code}`)));
  createInterface({ input: sinkProc.stdout }).on('line', (line) => {
    const ev = JSON.parse(line);
    if (ev.event === 'ready') resolve(ev.port);
    else if (typeof ev.received === 'number') received = ev.received;
  });
});
/** The sinks report every 100 ms: wait for the count to catch up. */
const settle = () => new Promise((r) => setTimeout(r, 250));
const records = [];
for (let i = 0; i < DOMAINS; i++) {
  records.push({ type: 'A', name: `mx.d${i}.bench.example`, data: `127.0.0.${10 + i}` });
  records.push({ type: 'MX', name: `d${i}.bench.example`, data: { preference: 10, exchange: `mx.d${i}.bench.example` } });
}
// For the submission run: the submit benchmark sends to sink@example.org.
records.push({ type: 'MX', name: 'example.org', data: { preference: 10, exchange: 'mx.d0.bench.example' } });
const dns = await startDnsServer(records);

const body = Buffer.from(message(o.size), 'latin1');

async function drain(domains) {
  startPhase();
  const { dir } = tempConfig();
  const cfg = parseConfig(
    {
      server: { hostname: 'bench.localhost', data_dir: path.join(dir, 'data') },
      identity: { helo: 'mta-out.bench.example', ptr: 'mail.bench.example' },
      delivery: { dns_servers: [dns.address], port, enabled: true },
      log: { level: 'silent' },
    },
    dir,
  );
  const store = openStore(cfg.server.data_dir);
  const spool = new Spool(store.queue);
  const now = Date.now();
  // Queue first (in group commits of 200), so the figure is delivery alone.
  for (let i = 0; i < o.messages; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(i + 200, o.messages); j++) {
      batch.push(
        spool.accept({
          id: newQueueId(now + j),
          envelope: { mailFrom: 'bench@bench.localhost', rcptTo: [`rcpt${j}@d${j % domains}.bench.example`] },
          principal: null,
          clientIp: '127.0.0.1',
          receivedAt: now,
          state: 'queued',
          data: body,
        }),
      );
    }
    await Promise.all(batch);
  }
  const before = received;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const t0 = performance.now();
  const delivery = startDelivery(cfg, { store, spool, clock: systemClock, log: createLogger(process.env.BENCH_LOG ?? 'silent', process.env.BENCH_LOG ? (await import('pino')).pino.destination(2) : undefined) });
  while (store.queue.count() > 0 && Date.now() < deadline) {
    const n = store.queue.count();
    await delivery.scheduler.drain();
    // Nothing due (deferred by a sink): wait for the timer instead of spinning.
    if (store.queue.count() === n) await new Promise((r) => setTimeout(r, 100));
  }
  const secs = (performance.now() - t0) / 1000;
  loop.disable();
  await settle();
  const left = store.queue.count();
  await delivery.stop();
  spool.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
  return {
    domains,
    messages: o.messages,
    delivered: o.messages - left,
    received_by_sinks: received - before,
    left_in_queue: left,
    drain_s: +secs.toFixed(2),
    msgs_per_s: +((o.messages - left) / secs).toFixed(1),
    event_loop_delay_p99_ms: +(loop.percentile(99) / 1e6).toFixed(1),
    event_loop_delay_max_ms: +(loop.max / 1e6).toFixed(1),
  };
}

/**
 * Submission throughput against a real `postern serve` with the given [delivery] section:
 * 10 connections, STARTTLS + AUTH once each, then messages back to back to sink@example.org.
 */
async function submitBench(delivery) {
  const { dir, file } = tempConfig(delivery);
  const PASS = 'bench password 0123456789';
  const add = spawnSync(
    process.execPath,
    [path.join(ROOT, 'bin/postern.js'), '--config', file, 'user', 'add', 'bench', '--password-stdin', '--sender', 'bench@example.com', '--network', '127.0.0.1', '--notify', 'bench@example.com'],
    { input: PASS },
  );
  if (add.status !== 0) throw new Error(add.stderr.toString());
  startPhase();
  const server = await startChild([...SERVE_FLAGS, path.join(ROOT, 'bin/postern.js'), '--config', file, 'serve']);
  const base = procStats(server.child.pid);
  const total = o['submit-messages'];
  const latencies = [];
  let next = 0;
  let secs = 0;
  let cpu = 0;
  try {
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        const c = await Conn.open(server.port);
        await c.login('bench', PASS);
        while (next < total && Date.now() < deadline) {
          next++;
          latencies.push(await c.send('bench@example.com', 'sink@example.org', body));
        }
        c.close();
      }),
    );
    secs = (performance.now() - t0) / 1000;
    cpu = procStats(server.child.pid).cpuSeconds - base.cpuSeconds;
  } finally {
    server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  latencies.sort((a, b) => a - b);
  return {
    accepted: latencies.length,
    msgs_per_s: +(latencies.length / secs).toFixed(1),
    p50_ms: +percentile(latencies, 50).toFixed(2),
    p99_ms: +percentile(latencies, 99).toFixed(2),
    server_cpu_s: +cpu.toFixed(2),
  };
}

const result = { bench: 'deliver', node: process.version, cpus: os.cpus().length, size: o.size, tls: 'STARTTLS offered by every sink' };
result.one_domain = await drain(1);
result.ten_domains = await drain(DOMAINS);
if (o.submit) {
  // Quarantine watches only, so every message is queued and the two runs do the same work.
  const common = { quarantine: { mode: 'monitor' } };
  result.submit_without_delivery = await submitBench({ ...common, delivery: { enabled: false } });
  const before = received;
  result.submit_with_delivery = await submitBench({ ...common, delivery: { enabled: true, dns_servers: [dns.address], port } });
  await settle();
  result.submit_with_delivery.delivered_meanwhile = received - before;
}
await dns.close();
sinkProc.kill('SIGTERM');
console.log(JSON.stringify(result));
process.exit(0);
