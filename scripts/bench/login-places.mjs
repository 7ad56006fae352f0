// Login path cost of the network check: a user bound to CIDRs against one bound to countries
// and ASNs (the IP database lookup), on the built tree, for random public IPv4 addresses; and
// the memory the bundled IP database holds at rest once a binding needs it. One JSON line.
//   npx tsc -p . && node --expose-gc scripts/bench/login-places.mjs [--checks 1000000]
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { args, ROOT } from './lib.mjs';

const { loadGeo } = await import(path.join(ROOT, 'dist/src/geo/index.js'));
const { placeAllowed } = await import(path.join(ROOT, 'dist/src/policy/places.js'));

const o = args({ checks: 1_000_000 });
const settle = () => {
  globalThis.gc?.();
  globalThis.gc?.();
};
const mb = (b) => +(b / 1048576).toFixed(1);
const atRest = () => {
  settle();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.arrayBuffers };
};

// A fixed pseudo-random sequence of public-looking IPv4 addresses (same on every run).
let seed = 12345;
const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0);
const ips = Array.from({ length: 4096 }, () => {
  let a;
  do a = (rnd() % 223) + 1;
  while (a === 10 || a === 127);
  return `${a}.${rnd() % 256}.${rnd() % 256}.${rnd() % 256}`;
});

const cidrUser = { networks: ['192.0.2.0/24', '2001:db8::/32'], countries: [], asns: [] };
const geoUser = { networks: ['192.0.2.0/24'], countries: ['DE', 'AT'], asns: ['3320'] };

function time(places, geo) {
  let hits = 0;
  const t0 = performance.now();
  for (let i = 0; i < o.checks; i++) if (placeAllowed(ips[i & 4095], places, geo)) hits++;
  const ms = performance.now() - t0;
  return { ns_per_check: +((ms * 1e6) / o.checks).toFixed(0), hits };
}

const before = atRest();
time(cidrUser, null); // warm-up
const cidr = time(cidrUser, null);
const t0 = performance.now();
const geo = await loadGeo({ countryDb: '', asnDb: '' });
const loadMs = Math.round(performance.now() - t0);
const after = atRest();
time(geoUser, geo); // warm-up
const geoCheck = time(geoUser, geo);
console.log(
  JSON.stringify({
    node: process.version,
    checks: o.checks,
    cidr_only: cidr,
    country_and_asn: geoCheck,
    geo_load_ms: loadMs,
    memory_at_rest_mb: { rss_before: mb(before.rss), rss_after: mb(after.rss), heap_and_buffers_added: mb(after.heap - before.heap) },
    geo_info: { rows: geo.info().rows, bytes_mb: mb(geo.info().bytes), data_date: geo.info().builtAt },
  }),
);
