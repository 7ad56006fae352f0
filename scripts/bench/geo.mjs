// IP database benchmark: the cost of loading the bundled country and ASN data (wall and CPU
// time, memory at rest), and of one lookup for random public IPv4 and IPv6 addresses.
// Runs on the built tree; prints one JSON line.
//   npx tsc -p . && node --expose-gc scripts/bench/geo.mjs [--lookups 1000000 --loads 1]
//   node --expose-gc scripts/bench/geo.mjs --country-db a.csv,b.csv --asn-db x.mmdb   (other files)
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { args, ROOT } from './lib.mjs';

const { loadGeo, isSpecial } = await import(path.join(ROOT, 'dist/src/geo/index.js'));

const o = args({ lookups: 1_000_000, loads: 1, 'country-db': '', 'asn-db': '' });
const gc = globalThis.gc;
if (!gc) console.error('run with --expose-gc for memory at rest');
const settle = () => {
  gc?.();
  gc?.();
};
const list = (v) => (v === '' ? '' : v.split(','));
const mb = (b) => +(b / 1048576).toFixed(1);

// Each load replaces the last one, as a SIGHUP reload does; the first is the cold one.
let db = null;
const loads = [];
settle();
const before = process.memoryUsage();
let peakRss = before.rss;
const stall = monitorEventLoopDelay({ resolution: 10 });
for (let i = 0; i < o.loads; i++) {
  db = null;
  settle();
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
  stall.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  db = await loadGeo({ countryDb: list(o['country-db']), asnDb: list(o['asn-db']) });
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  stall.disable();
  clearInterval(sampler);
  loads.push({ wall_ms: Math.round(wall), cpu_ms: Math.round((cpu.user + cpu.system) / 1000) });
}
settle();
const after = process.memoryUsage();
const info = db.info();

// Random public addresses: drawn uniformly, special-use ones skipped (they stop at a table of
// ranges, which would flatter the figure). IPv6 from 2000::/3, where the data lives.
const w = new Uint32Array(4);
const rnd = () => (Math.random() * 2 ** 32) >>> 0;
function randomV4() {
  for (;;) {
    w[3] = rnd();
    if (!isSpecial(4, w)) return `${w[3] >>> 24}.${(w[3] >>> 16) & 255}.${(w[3] >>> 8) & 255}.${w[3] & 255}`;
  }
}
function randomV6() {
  for (;;) {
    const g = Array.from({ length: 8 }, () => Math.floor(Math.random() * 65536));
    // Half from the allocated space that the data knows best (2001::/16, 2400::/6 and 2a00::/7).
    g[0] = [0x2001, 0x2400 + (g[0] & 0x3ff), 0x2a00 + (g[0] & 0x1ff), 0x2000 + (g[0] & 0x1fff)][g[1] & 3];
    w[0] = ((g[0] << 16) | g[1]) >>> 0;
    if (!isSpecial(6, w)) return g.map((x) => x.toString(16)).join(':');
  }
}
const POOL = 1 << 14;
function time(make) {
  const pool = Array.from({ length: POOL }, make);
  let placed = 0;
  for (let i = 0; i < POOL; i++) db.lookup(pool[i]); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < o.lookups; i++) if (db.lookup(pool[i & (POOL - 1)]).country !== null) placed++;
  const ns = ((performance.now() - t0) * 1e6) / o.lookups;
  return { ns_per_lookup: Math.round(ns), lookups_per_s: Math.round(1e9 / ns), placed_pct: +((100 * placed) / o.lookups).toFixed(1) };
}
const v4 = time(randomV4);
const v6 = time(randomV6);

console.log(
  JSON.stringify({
    bench: 'geo',
    country: info.countrySource,
    asn: info.asnSource,
    built_at: info.builtAt?.toISOString() ?? null,
    rows: info.rows,
    loads,
    longest_stall_ms: +(stall.max / 1e6).toFixed(1),
    at_rest_heap_mb: mb(after.heapUsed - before.heapUsed),
    at_rest_array_buffers_mb: mb(after.arrayBuffers - before.arrayBuffers),
    at_rest_total_mb: mb(after.heapUsed - before.heapUsed + after.arrayBuffers - before.arrayBuffers),
    info_bytes_mb: mb(info.bytes),
    rss_before_mb: mb(before.rss),
    rss_mb: mb(after.rss),
    peak_rss_mb: mb(peakRss),
    ipv4: v4,
    ipv6: v6,
  }),
);
