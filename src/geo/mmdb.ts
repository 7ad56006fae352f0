import { Reader, type Response } from 'mmdb-lib';
import { GeoDbError } from './error.js';
import type { GeoPlace } from './index.js';
import { formatAddress } from './ip.js';
import type { GeoSource } from './source.js';

/** The fields we read, wherever a MaxMind or ip-location-db database keeps them. */
interface Loose {
  country?: { iso_code?: string };
  country_code?: string;
  autonomous_system_number?: number;
  autonomous_system_organization?: string;
  traits?: { autonomous_system_number?: number; autonomous_system_organization?: string };
}

/**
 * Values by data pointer. A Country database has a few hundred distinct records and an ASN
 * one some tens of thousands; the cap keeps a City database (millions) from growing without
 * bound, at the price of decoding again after a reset.
 */
const CACHE_CAP = 100_000;

/**
 * A MaxMind DB file (GeoLite2/GeoIP2 Country or City for countries, ASN, ISP or Enterprise for
 * ASNs; ip-location-db's `-mmdb` packages too), read whole into memory.
 *
 * mmdb-lib (the format's reader, MIT) checks the file and decodes records. The search tree is
 * walked here, with the address already parsed into words: mmdb-lib parses the address text
 * again with regular expressions on every lookup, which costs more than the walk itself. A
 * record is decoded once per distinct data pointer and kept.
 */
export function openMmdb(kind: 'country' | 'asn', key: string, name: string, data: Buffer, mtime: Date | null): GeoSource {
  let reader: Reader<Response>;
  try {
    reader = new Reader<Response>(data);
  } catch (err) {
    throw new GeoDbError(key, name, null, `is not a MaxMind DB file (${(err as Error).message})`);
  }
  const meta = reader.metadata;
  const type = String(meta.databaseType ?? '');
  if (kind === 'country' && /\b(ASN|ISP)\b/i.test(type) && !/country|city/i.test(type)) {
    throw new GeoDbError(key, name, null, `is a ${type} database: country_db needs a Country or City database`);
  }
  if (kind === 'asn' && /country|city/i.test(type) && !/ASN|ISP|enterprise/i.test(type)) {
    throw new GeoDbError(key, name, null, `is a ${type} database: asn_db needs an ASN database`);
  }
  const nodes = meta.nodeCount;
  const size = meta.recordSize;
  const nodeBytes = meta.nodeByteSize;
  if (![24, 28, 32].includes(size) || nodes * nodeBytes > data.length) throw new GeoDbError(key, name, null, 'is not a MaxMind DB file (bad search tree size)');
  const db = data;
  const child = (node: number, right: number): number => {
    const o = node * nodeBytes;
    if (size === 24) {
      const p = o + 3 * right;
      return (db[p]! << 16) | (db[p + 1]! << 8) | db[p + 2]!;
    }
    if (size === 28) {
      if (right === 0) return (((db[o + 3]! & 0xf0) << 20) | (db[o]! << 16) | (db[o + 1]! << 8) | db[o + 2]!) >>> 0;
      return (((db[o + 3]! & 0x0f) << 24) | (db[o + 4]! << 16) | (db[o + 5]! << 8) | db[o + 6]!) >>> 0;
    }
    return db.readUInt32BE(o + 4 * right);
  };
  // IPv4 addresses sit under ::/96 in an IPv6 tree (MaxMind DB spec, "IPv4 addresses in an IPv6 tree").
  const v4only = meta.ipVersion === 4;
  let v4start = 0;
  if (!v4only) for (let i = 0; i < 96 && v4start < nodes; i++) v4start = child(v4start, 0);

  /** The data pointer for the address in w, or 0 when the tree holds nothing for it. */
  const pointer = (family: 4 | 6, w: Uint32Array): number => {
    // An IPv4-only tree walked with 128 bits would answer nonsense.
    if (family === 6 && v4only) return 0;
    let node = family === 4 ? v4start : 0;
    const first = family === 4 ? 3 : 0;
    for (let k = first; k < 4 && node < nodes; k++) {
      const word = w[k]!;
      for (let bit = 31; bit >= 0 && node < nodes; bit--) node = child(node, (word >>> bit) & 1);
    }
    return node > nodes ? node : 0;
  };
  const record = (family: 4 | 6, w: Uint32Array): Loose | null => reader.get(formatAddress(family, w)) as Loose | null;

  const built = meta.buildEpoch instanceof Date && meta.buildEpoch.getTime() > 0 ? meta.buildEpoch : mtime;
  const common = { source: name, format: 'mmdb' as const, builtAt: built, rows: nodes, bytes: data.length, placesSpecial: true };
  if (kind === 'country') {
    const cache = new Map<number, string | null>();
    return {
      ...common,
      fill(family, w, out: GeoPlace) {
        const p = pointer(family, w);
        if (p === 0) {
          out.country = null;
          return;
        }
        let cc = cache.get(p);
        if (cc === undefined) {
          const r = record(family, w);
          const code = r?.country?.iso_code ?? r?.country_code;
          cc = typeof code === 'string' && /^[A-Z]{2}$/i.test(code) ? code.toUpperCase() : null;
          if (cache.size >= CACHE_CAP) cache.clear();
          cache.set(p, cc);
        }
        out.country = cc;
      },
    };
  }
  const cache = new Map<number, { asn: number; org: string | null } | null>();
  return {
    ...common,
    fill(family, w, out: GeoPlace) {
      const p = pointer(family, w);
      let v = p === 0 ? null : cache.get(p);
      if (v === undefined) {
        const r = record(family, w);
        const asn = r?.autonomous_system_number ?? r?.traits?.autonomous_system_number;
        const org = r?.autonomous_system_organization ?? r?.traits?.autonomous_system_organization;
        v = typeof asn === 'number' && asn > 0 ? { asn, org: typeof org === 'string' && org !== '' ? org : null } : null;
        if (cache.size >= CACHE_CAP) cache.clear();
        cache.set(p, v);
      }
      out.asn = v === null ? null : v.asn;
      out.org = v === null ? null : v.org;
    },
  };
}
