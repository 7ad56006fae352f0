/**
 * A small MaxMind DB writer for tests (format spec 2.0: a binary search tree of 24-bit
 * records, a 16-byte separator, the data section, then the metadata map after the
 * "\xAB\xCD\xEFMaxMind.com" marker). npm has no maintained JavaScript writer; this one knows
 * just enough to build the tiny databases that test/geo/geo.test.ts reads with mmdb-lib.
 */
import ipaddr from 'ipaddr.js';

type Value = string | number | bigint | boolean | Value[] | { [key: string]: Value };

function withSize(type: number, size: number, payload: Buffer): Buffer {
  const head: number[] = [];
  let ext: number[] = [];
  let bits: number;
  if (size < 29) bits = size;
  else if (size < 29 + 256) {
    bits = 29;
    ext = [size - 29];
  } else if (size < 285 + 65536) {
    bits = 30;
    ext = [(size - 285) >> 8, (size - 285) & 255];
  } else {
    bits = 31;
    const s = size - 65821;
    ext = [(s >> 16) & 255, (s >> 8) & 255, s & 255];
  }
  if (type <= 7) head.push((type << 5) | bits);
  else head.push(bits, type - 7);
  return Buffer.concat([Buffer.from([...head, ...ext]), payload]);
}

function uint(type: number, v: number | bigint): Buffer {
  let x = BigInt(v);
  const bytes: number[] = [];
  while (x > 0n) {
    bytes.unshift(Number(x & 255n));
    x >>= 8n;
  }
  return withSize(type, bytes.length, Buffer.from(bytes));
}

/** Encodes a value: strings, unsigned integers (uint32, or uint64 as bigint), booleans, arrays, maps. */
export function encode(v: Value): Buffer {
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return withSize(2, b.length, b);
  }
  if (typeof v === 'bigint') return uint(9, v);
  if (typeof v === 'number') return uint(v < 65536 ? 5 : 6, v);
  if (typeof v === 'boolean') return withSize(14, v ? 1 : 0, Buffer.alloc(0));
  if (Array.isArray(v)) return withSize(11, v.length, Buffer.concat(v.map(encode)));
  const entries = Object.entries(v);
  return withSize(7, entries.length, Buffer.concat(entries.flatMap(([k, x]) => [encode(k), encode(x)])));
}

type Rec = { node: number } | { data: number } | null;

export interface MmdbSpec {
  ipVersion: 4 | 6;
  /** Bits per record: 24 (GeoLite2 Country and ASN), 28 (City), 32. */
  recordSize?: 24 | 28 | 32;
  databaseType: string;
  /** Seconds since the epoch. */
  buildEpoch: number;
  /** CIDR -> record. IPv4 networks in an IPv6 tree go under ::/96, as MaxMind's do. */
  networks: [string, { [key: string]: Value }][];
}

export function writeMmdb(spec: MmdbSpec): Buffer {
  const nodes: [Rec, Rec][] = [[null, null]];
  const data: Buffer[] = [];
  let dataLen = 0;
  for (const [cidr, record] of spec.networks) {
    const [addr, len] = ipaddr.parseCIDR(cidr);
    let bytes = addr.toByteArray();
    let prefix = len;
    if (spec.ipVersion === 6 && addr.kind() === 'ipv4') {
      bytes = [...new Array<number>(12).fill(0), ...bytes];
      prefix += 96;
    }
    if (spec.ipVersion === 4 && addr.kind() === 'ipv6') throw new Error(`${cidr} in an IPv4 database`);
    const bit = (i: number) => (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
    const enc = encode(record);
    const rec: Rec = { data: dataLen };
    data.push(enc);
    dataLen += enc.length;
    let node = 0;
    for (let i = 0; i < prefix - 1; i++) {
      const b = bit(i);
      const next = nodes[node]![b];
      if (next && 'node' in next) node = next.node;
      else {
        nodes.push([null, null]);
        nodes[node]![b] = { node: nodes.length - 1 };
        node = nodes.length - 1;
      }
    }
    nodes[node]![bit(prefix - 1)] = rec;
  }
  const count = nodes.length;
  const size = spec.recordSize ?? 24;
  const nodeBytes = size / 4;
  const tree = Buffer.alloc(count * nodeBytes);
  const value = (r: Rec) => (r === null ? count : 'node' in r ? r.node : count + 16 + r.data);
  nodes.forEach(([l, r], i) => {
    const o = i * nodeBytes;
    const [a, b] = [value(l), value(r)];
    if (size === 24) {
      tree.writeUIntBE(a, o, 3);
      tree.writeUIntBE(b, o + 3, 3);
    } else if (size === 28) {
      // The middle byte holds the top four bits of each record.
      tree.writeUIntBE(a & 0xffffff, o, 3);
      tree[o + 3] = ((a >>> 24) << 4) | (b >>> 24);
      tree.writeUIntBE(b & 0xffffff, o + 4, 3);
    } else {
      tree.writeUInt32BE(a, o);
      tree.writeUInt32BE(b, o + 4);
    }
  });
  const metadata = encode({
    node_count: count,
    record_size: size,
    ip_version: spec.ipVersion,
    database_type: spec.databaseType,
    languages: ['en'],
    binary_format_major_version: 2,
    binary_format_minor_version: 0,
    build_epoch: BigInt(spec.buildEpoch),
    description: { en: `${spec.databaseType} written by test/geo/mmdb-writer.ts` },
  });
  return Buffer.concat([tree, Buffer.alloc(16), ...data, Buffer.from('abcdef4d61784d696e642e636f6d', 'hex'), metadata]);
}
