// Quarantine scoring benchmark: the cost per message of the assessor that runs
// between DATA and the spool commit, for a 10 KB and a 5 MB message. Two figures each:
//   parse+score  mailparser + link/zip analysis + the pure policy (CPU only)
//   assess       the wired Quarantine.assess, i.e. that plus its reads of a real SQLite store
// One process, sequential, after a warm-up. Prints one JSON line: wall µs per message (mean,
// p50, p95), CPU µs per message, and the longest event-loop stall in ms (what every other
// session would have waited).
//   npm run build && node scripts/bench/scoring.mjs [--small 2000 --large 30]
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { args, percentile, ROOT } from './lib.mjs';

const dist = (p) => path.join(ROOT, 'dist', p);
const { configSchema } = await import(dist('src/config/schema.js'));
const { scoreMessage } = await import(dist('src/policy/scoring.js'));
const { Quarantine, domainTools } = await import(dist('src/quarantine/index.js'));
const { parseFacts } = await import(dist('src/quarantine/parse.js'));
const { systemClock } = await import(dist('src/domain/clock.js'));
const { createLogger } = await import(dist('src/obs/log.js'));
const { Spool } = await import(dist('src/spool/spool.js'));
const { openStore } = await import(dist('src/store/index.js'));
const { mime, zip } = await import(dist('test/helpers/mime.js'));

const o = args({ small: 2000, large: 30 });

const headers = { From: 'Alice <alice@corp.example>', To: 'Bob <bob@partner.example>', Subject: 'Quarterly figures', Date: 'Sun, 22 Nov 2026 12:00:00 +0000', 'Message-ID': '<bench@corp.example>' };
const para = 'Please find the figures for the third quarter below; the summary is on https://intranet.corp.example/q3 as usual. ';

/** ~10 KB: text and HTML alternatives with a dozen links, no attachment (an ordinary business mail). */
function small() {
  const text = para.repeat(45);
  const links = Array.from({ length: 12 }, (_, i) => `<a href="https://intranet.corp.example/q3/${i}">intranet.corp.example/q3/${i}</a>`).join('<br>');
  const html = `<html><body><p>${para.repeat(31)}</p>${links}</body></html>`;
  return Buffer.from(mime(headers, [{ type: 'text/plain; charset=utf-8', body: text }, { type: 'text/html; charset=utf-8', body: html }]));
}

/** ~5 MB: a short text, an HTML part, and a 3.7 MB zip (base64: 5 MB) whose 40 entries are listed. */
function large() {
  const entries = Array.from({ length: 40 }, (_, i) => ({ name: `scans/page-${i}.pdf`, data: randomBytes(92_000) }));
  return Buffer.from(
    mime(headers, [
      { type: 'text/plain', body: para },
      { type: 'text/html', body: `<p>${para}<a href="https://bank.example/">https://bank.example/</a></p>` },
      { type: 'application/zip', filename: 'scans.zip', body: zip(entries) },
    ]),
  );
}

const cfg = configSchema.parse({ server: { hostname: 'bench.example' } });
const q0 = new Quarantine(cfg, { store: null, spool: null, clock: systemClock, log: createLogger('silent') });
const state = { rcptTo: ['bob@partner.example'], allowedSenders: ['alice@corp.example'], newDomains: [], openIncident: false, nearRateLimit: false, remoteOutcomes: { total: 0, rejected: 0 } };

const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-bench-scoring-'));
const store = openStore(dir);
const user = store.users.add('alice', 'x', Date.now());
store.bindings.add('user', user.id, 'sender', 'alice@corp.example', Date.now());
store.quarantine.addDomains('user:alice', ['partner.example'], Date.now());
const q = new Quarantine(cfg, { store, spool: new Spool(store.queue), clock: systemClock, log: createLogger('silent') });

// The longest the event loop (every other SMTP session) waited during the runs.
async function measure(fn, n) {
  for (let i = 0; i < Math.min(20, n); i++) await fn();
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  // CPU time is the figure that holds on a busy machine: wall time there includes waiting for a core.
  const cpu0 = process.cpuUsage();
  const t = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await fn();
    t.push((performance.now() - s) * 1000);
  }
  const cpu = process.cpuUsage(cpu0);
  loop.disable();
  t.sort((a, b) => a - b);
  const r = (x) => Math.round(x);
  return { n, mean_us: r(t.reduce((a, b) => a + b, 0) / n), p50_us: r(percentile(t, 50)), p95_us: r(percentile(t, 95)), cpu_us: r((cpu.user + cpu.system) / n), loop_max_ms: r(loop.max / 1e6) };
}

const out = { cpus: os.cpus().length, node: process.version };
for (const [name, data, n] of [['10KB', small(), o.small], ['5MB', large(), o.large]]) {
  const input = { id: 'BENCH', data, envelope: { mailFrom: 'alice@corp.example', rcptTo: ['bob@partner.example'] }, principal: { kind: 'user', id: user.id, name: 'alice' }, clientIp: '127.0.0.1', now: Date.now() };
  const check = await q.assess(input);
  out[name] = {
    bytes: data.length,
    verdict: `${check.state}/${check.score}`,
    parse_score: await measure(async () => scoreMessage(await parseFacts(data), state, q0.scoring, domainTools), n),
    assess: await measure(() => q.assess(input), n),
  };
}
store.close();
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify(out));
