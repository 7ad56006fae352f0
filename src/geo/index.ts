/**
 * The IP database behind country and ASN bindings: where an address is (ISO 3166-1 country)
 * and whose network it is in (autonomous system number and organisation).
 *
 * Nothing is loaded at import: the caller calls `loadGeo` once some binding names a country
 * or an ASN, and again on SIGHUP (a new GeoDb; the old one is dropped whole). Everything is in
 * memory; a lookup is a binary search over typed arrays (CSV) or a walk of the mmdb tree.
 *
 * Sources, per half (`[geo] country_db`, `asn_db`):
 *  - "" : the data bundled with Postern, from npm packages installed with it (nothing is
 *    downloaded at run time): `@ip-location-db/geo-whois-asn-country` (GeoFeed + RIR whois +
 *    RIR ASN country; NRO data, CC BY 4.0) and `@ip-location-db/asn` (RouteViews, RIR and
 *    DB-IP ASN Lite; CC BY 4.0: attribution to RouteViews, NRO and DB-IP.com).
 *  - a path ending in `.mmdb`: a MaxMind DB (GeoLite2/GeoIP2 Country or City; ASN, ISP or
 *    Enterprise for ASNs), read with mmdb-lib.
 *  - any other path: ip-location-db CSV, `first_ip,last_ip,country` or
 *    `first_ip,last_ip,asn,organisation`, addresses as text or as `-num` decimals; several
 *    paths (e.g. the -ipv4 and -ipv6 files) may be given as a list.
 *
 * Private and special-use addresses (loopback, RFC 1918, CGNAT, link-local, ULA, documentation,
 * multicast; see `isSpecial`) are never placed by the bundled data, whatever its rows say (they
 * do cover 192.168/16, 172.16/12 and 2001:db8::/32). An admin's own file places whatever rows
 * it holds: the admin may mean it (an office LAN in its country, a test database of loopback
 * addresses).
 */
import { readFile, stat, open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { readCsv } from './csv.js';
import { GeoDbError, unreadable } from './error.js';
import { isSpecial, parseAddress } from './ip.js';
import { openMmdb } from './mmdb.js';
import type { GeoSource } from './source.js';

export { GeoDbError } from './error.js';
export { isSpecial } from './ip.js';

/** Where an address is. All null when the database does not place it. */
export interface GeoPlace {
  /** ISO 3166-1 alpha-2, upper case ("DE"). */
  country: string | null;
  /** Autonomous system number (3320). */
  asn: number | null;
  /** The AS's organisation as the data names it ("Deutsche Telekom AG"). */
  org: string | null;
}

export interface GeoInfo {
  countrySource: string;
  asnSource: string;
  /** The older of the two halves' data dates (what staleness warnings go by), if known. */
  builtAt: Date | null;
  countryBuiltAt: Date | null;
  asnBuiltAt: Date | null;
  /** Ranges held (CSV), or search-tree nodes (mmdb), both halves together. */
  rows: number;
  /** Memory held at rest by both halves (typed arrays, strings estimated, mmdb files). */
  bytes: number;
}

export interface GeoDb {
  lookup(ip: string): GeoPlace;
  info(): GeoInfo;
}

export interface GeoOptions {
  /** "" (or []) for the bundled data; a path, or a list of CSV paths read as one database. */
  countryDb: string | readonly string[];
  asnDb: string | readonly string[];
}

const require = createRequire(import.meta.url);

/**
 * The bundled CSV files, in the forms that parse fastest (scripts/bench/geo.mjs with
 * --country-db/--asn-db compares them): plain decimals for IPv4, text for IPv6 (hex groups;
 * the decimal form is 39 digits of 128-bit arithmetic).
 */
const BUNDLED = {
  country: { pkg: '@ip-location-db/geo-whois-asn-country', files: ['geo-whois-asn-country-ipv4-num.csv', 'geo-whois-asn-country-ipv6.csv'] },
  asn: { pkg: '@ip-location-db/asn', files: ['asn-ipv4-num.csv', 'asn-ipv6.csv'] },
} as const;

export interface BundledData {
  package: string;
  version: string;
  /** ip-location-db versions end in the build time: 2.3.2026061719 is 2026-06-17 19:00 UTC. */
  builtAt: Date | null;
  files: string[];
}

/** Package, version, data date and files of the bundled data, without reading the data. */
export function bundledData(kind: 'country' | 'asn'): BundledData {
  const { pkg, files } = BUNDLED[kind];
  const manifest = require.resolve(`${pkg}/package.json`);
  const { version } = require(manifest) as { version: string };
  return { package: pkg, version, builtAt: versionDate(version), files: files.map((f) => path.join(path.dirname(manifest), f)) };
}

export function versionDate(version: string): Date | null {
  const m = /(\d{4})(\d{2})(\d{2})(\d{2})$/.exec(version);
  if (!m) return null;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4])));
  return Number.isNaN(d.getTime()) ? null : d;
}

const KEYS = { country: 'country_db', asn: 'asn_db' } as const;

function paths(v: string | readonly string[]): string[] {
  return (typeof v === 'string' ? [v] : [...v]).filter((p) => p !== '');
}

const isMmdb = (p: string) => /\.mmdb$/i.test(p);

async function readWhole(key: string, file: string): Promise<{ data: Buffer; mtime: Date }> {
  try {
    const [data, st] = await Promise.all([readFile(file), stat(file)]);
    return { data, mtime: st.mtime };
  } catch (err) {
    throw unreadable(key, file, err);
  }
}

/** V8 keeps Latin-1 strings at one byte a character, others at two, behind a ~16-byte header. */
function stringBytes(strings: readonly (string | null)[]): number {
  let n = strings.length * 8;
  for (const s of strings) if (s !== null) n += 16 + (/[^\u0000-\u00ff]/.test(s) ? 2 : 1) * s.length;
  return n;
}

async function loadHalf(kind: 'country' | 'asn', configured: string | readonly string[]): Promise<GeoSource> {
  const key = KEYS[kind];
  let list = paths(configured);
  let source: string;
  let builtAt: Date | null = null;
  const bundled = list.length === 0;
  if (bundled) {
    const b = bundledData(kind);
    list = b.files;
    source = `bundled ${b.package} ${b.version}`;
    builtAt = b.builtAt;
  } else {
    source = list.join(', ');
    const mmdb = list.filter(isMmdb);
    if (mmdb.length > 0) {
      if (list.length > 1) throw new GeoDbError(key, source, null, 'a .mmdb file must be the only file of its database');
      const { data, mtime } = await readWhole(key, list[0]!);
      return openMmdb(kind, key, list[0]!, data, mtime);
    }
    for (const file of list) {
      const { mtime } = await stat(file).catch((err: unknown) => {
        throw unreadable(key, file, err);
      });
      if (builtAt === null || mtime < builtAt) builtAt = mtime;
    }
  }
  const common = { source, format: 'csv' as const, builtAt, placesSpecial: !bundled };
  if (kind === 'country') {
    const { table, codes } = await readCsv('country', key, list);
    return {
      ...common,
      rows: table.rows,
      bytes: table.bytes + stringBytes(codes),
      fill(family, w, out) {
        const i = table.find(family, w);
        out.country = i < 0 ? null : codes[i]!;
      },
    };
  }
  const { table, asns, orgs } = await readCsv('asn', key, list);
  return {
    ...common,
    rows: table.rows,
    bytes: table.bytes + asns.byteLength + stringBytes(orgs),
    fill(family, w, out) {
      const i = table.find(family, w);
      if (i < 0) {
        out.asn = null;
        out.org = null;
      } else {
        out.asn = asns[i]!;
        out.org = orgs[i]!;
      }
    },
  };
}

/**
 * Loads both halves. Throws GeoDbError naming the key, the file and (for CSV) the line:
 * `country_db = /etc/postern/geo.csv: line 12: bad address "1.2.3"`. Relative paths are
 * taken from the process's working directory: resolve them against the config file first.
 */
export async function loadGeo(opts: GeoOptions): Promise<GeoDb> {
  const country = await loadHalf('country', opts.countryDb);
  const asn = await loadHalf('asn', opts.asnDb);
  const filter = !country.placesSpecial || !asn.placesSpecial;
  const w = new Uint32Array(4);
  return {
    lookup(ip: string): GeoPlace {
      const out: GeoPlace = { country: null, asn: null, org: null };
      const family = parseAddress(ip, w);
      if (family === 0) return out;
      const special = filter && isSpecial(family, w);
      if (!special || country.placesSpecial) country.fill(family, w, out);
      if (!special || asn.placesSpecial) asn.fill(family, w, out);
      return out;
    },
    info(): GeoInfo {
      const dates = [country.builtAt, asn.builtAt].filter((d): d is Date => d !== null);
      return {
        countrySource: country.source,
        asnSource: asn.source,
        builtAt: dates.length === 0 ? null : new Date(Math.min(...dates.map((d) => d.getTime()))),
        countryBuiltAt: country.builtAt,
        asnBuiltAt: asn.builtAt,
        rows: country.rows + asn.rows,
        bytes: country.bytes + asn.bytes,
      };
    },
  };
}

/**
 * The sources and data dates without loading the data (for `postern doctor`): the bundled
 * package's version, an mmdb file's build epoch (read from its metadata at the end of the
 * file), a CSV file's mtime (the oldest, for a list). Unreadable files give null.
 */
export async function geoDataDates(opts: GeoOptions): Promise<{ country: { source: string; builtAt: Date | null }; asn: { source: string; builtAt: Date | null } }> {
  const one = async (kind: 'country' | 'asn', configured: string | readonly string[]) => {
    const list = paths(configured);
    if (list.length === 0) {
      const b = bundledData(kind);
      return { source: `bundled ${b.package} ${b.version}`, builtAt: b.builtAt };
    }
    let builtAt: Date | null = null;
    for (const file of list) {
      const d = isMmdb(file) ? await mmdbBuildEpoch(file) : await stat(file).then((s) => s.mtime, () => null);
      if (d === null) return { source: list.join(', '), builtAt: null };
      if (builtAt === null || d < builtAt) builtAt = d;
    }
    return { source: list.join(', '), builtAt };
  };
  return { country: await one('country', opts.countryDb), asn: await one('asn', opts.asnDb) };
}

/** The metadata section sits in the last 128 KiB of an mmdb file (MaxMind DB spec). */
async function mmdbBuildEpoch(file: string): Promise<Date | null> {
  try {
    const fh = await open(file, 'r');
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 128 * 1024);
      const tail = Buffer.alloc(len);
      await fh.read(tail, 0, len, size - len);
      const { parseMetadata } = require('mmdb-lib/lib/metadata.js') as typeof import('mmdb-lib/lib/metadata.js');
      const epoch = parseMetadata(tail).buildEpoch;
      return Number.isNaN(epoch.getTime()) ? null : epoch;
    } finally {
      await fh.close();
    }
  } catch {
    return null;
  }
}
