import { open } from 'node:fs/promises';
import path from 'node:path';
import { GeoDbError, unreadable } from './error.js';
import { Form, parseToken } from './ip.js';
import { RangeBuilder, RangeTable } from './table.js';

/** Country codes by index; a table row holds the index (uint16), so each code is one string. */
export interface CountryData {
  table: RangeTable;
  codes: string[];
}

/** ASNs and their organisation names by index: the name is stored once per ASN, not per row. */
export interface AsnData {
  table: RangeTable;
  asns: Uint32Array;
  orgs: (string | null)[];
}

const COMMA = 0x2c;
const QUOTE = 0x22;
const LF = 0x0a;
const CR = 0x0d;
const HASH = 0x23;
/** Bytes read and parsed at a time (some 20,000 lines): about 20 ms of work between turns of the event loop. */
const CHUNK = 1 << 19;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Bytes that cannot appear in an address: a first line holding one is a header. */
function isHeaderLike(b: Uint8Array, s: number, e: number): boolean {
  for (let i = s; i < e; i++) {
    const c = b[i]! | 0x20;
    if (!((c >= 0x30 && c <= 0x3a) || (c >= 0x61 && c <= 0x66) || c === 0x2e)) return true;
  }
  return false;
}

/** A quoted CSV field (RFC 4180: `""` is a quote) or a bare one, as UTF-8 text. */
function fieldText(b: Buffer, s: number, e: number): string {
  if (b[s] === QUOTE && e - s >= 2 && b[e - 1] === QUOTE) return b.toString('utf8', s + 1, e - 1).replaceAll('""', '"');
  return b.toString('utf8', s, e);
}

function excerpt(b: Buffer, s: number, e: number): string {
  const t = b.toString('utf8', s, Math.min(e, s + 60));
  return JSON.stringify(e - s > 60 ? `${t}…` : t);
}

/**
 * Reads ip-location-db CSV files (`first_ip,last_ip,country` or `first_ip,last_ip,asn,org`)
 * into range tables. Addresses may be dotted/colon text or the `-num` decimal form; IPv4 and
 * IPv6 rows may share a file or come in several. A number is an IPv6 address in a file whose
 * name says `ipv6` (ip-location-db's `-ipv6-num.csv`); elsewhere a row of numbers is IPv6 when
 * its last address does not fit in 32 bits. Blank lines, `#` comments and a header line are
 * skipped; columns after the ones used are ignored (so a city file serves as a country file).
 * Rows may come in any order and may overlap: the narrower range wins (see RangeBuilder). A
 * quoted organisation may hold commas and `""`, not line breaks.
 */
export async function readCsv(kind: 'country', key: string, files: string[]): Promise<CountryData>;
export async function readCsv(kind: 'asn', key: string, files: string[]): Promise<AsnData>;
export async function readCsv(kind: 'country' | 'asn', key: string, files: string[]): Promise<CountryData | AsnData> {
  const r = new CsvReader(kind, key);
  // The files are read a chunk at a time, not whole: the bundled ones are 50 MB of text, and
  // memory that a daemon once took it rarely gives back. Each chunk is also a turn of the
  // event loop, so a reload on SIGHUP does not stall live sessions for the second it takes.
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const name of files) {
    const fh = await open(name, 'r').catch((err: unknown) => {
      throw unreadable(key, name, err);
    });
    try {
      r.start(name);
      const { size } = await fh.stat();
      let have = 0;
      let total = 0;
      let consumed = 0;
      // Small reads first: the parser runs unoptimised until V8 has seen it at work.
      let want = CHUNK >> 4;
      for (;;) {
        want = Math.min(CHUNK, want * 2);
        // Never a read of 0 bytes (that would look like the end): room past a carried-over line.
        const len = Math.min(CHUNK, Math.max(want, have + 4096)) - have;
        const { bytesRead } = await fh.read(buf, have, len, null).catch((err: unknown) => {
          throw unreadable(key, name, err);
        });
        if (total === 0 && bytesRead >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) throw new GeoDbError(key, name, null, 'is gzip-compressed: unpack it first (gunzip)');
        total += bytesRead;
        have += bytesRead;
        const last = bytesRead === 0;
        const used = r.lines(buf, have, last);
        if (last) break;
        // From the first chunk, size the tables for the whole file at once.
        if (consumed === 0 && used > 0 && size > have) r.reserve((size / used) * 1.02);
        consumed += used;
        if (used === 0 && have === CHUNK) throw new GeoDbError(key, name, r.line + 1, `line longer than ${CHUNK} bytes`);
        buf.copy(buf, 0, used, have);
        have -= used;
      }
      if (total === 0) throw new GeoDbError(key, name, null, 'is empty');
    } finally {
      await fh.close();
    }
  }
  return r.finish(files.join(', '));
}

/**
 * uint32 -> index, open addressing in typed arrays. A Map keyed by ASNs (many above 2^31,
 * so heap numbers) cost most of the ASN file's parse time.
 */
class IntMap {
  private keys = new Uint32Array(1 << 16);
  private vals = new Int32Array(1 << 16).fill(-1);
  private size = 0;

  private slot(k: number): number {
    const mask = this.keys.length - 1;
    let h = Math.imul(k, 0x9e3779b1) >>> 0;
    for (;;) {
      h &= mask;
      if (this.vals[h]! < 0 || this.keys[h] === k) return h;
      h++;
    }
  }

  get(k: number): number {
    return this.vals[this.slot(k)]!;
  }

  set(k: number, v: number): void {
    if (2 * (this.size + 1) > this.keys.length) {
      const { keys, vals } = this;
      this.keys = new Uint32Array(keys.length * 2);
      this.vals = new Int32Array(keys.length * 2).fill(-1);
      for (let i = 0; i < keys.length; i++) {
        if (vals[i]! < 0) continue;
        const h = this.slot(keys[i]!);
        this.keys[h] = keys[i]!;
        this.vals[h] = vals[i]!;
      }
    }
    const h = this.slot(k);
    if (this.vals[h]! < 0) this.size++;
    this.keys[h] = k;
    this.vals[h] = v;
  }
}

/** The reading state across chunks and files. */
class CsvReader {
  private readonly b4 = new RangeBuilder(1);
  private readonly b6 = new RangeBuilder(4);
  private readonly sw = new Uint32Array(4);
  private readonly ew = new Uint32Array(4);
  /** Countries: packed two-letter code -> index in codes. */
  private readonly codeIndex = new Int16Array(65536).fill(-1);
  private readonly codes: string[] = [];
  /** ASNs: number -> index in asns and orgs. */
  private readonly asnIndex = new IntMap();
  private readonly asns: number[] = [];
  private readonly orgs: (string | null)[] = [];
  private readonly shape: string;
  private b: Buffer = Buffer.alloc(0);
  private name = '';
  /** Numbers are IPv6 addresses in a file named like ip-location-db's `-ipv6-num.csv`. */
  private v6nums = false;
  line = 0;

  /** Rows in b4 and b6 when the current file began. */
  private at4 = 0;
  private at6 = 0;

  constructor(
    private readonly kind: 'country' | 'asn',
    private readonly key: string,
  ) {
    this.shape = kind === 'country' ? 'first_ip,last_ip,country' : 'first_ip,last_ip,asn,organisation';
  }

  start(name: string): void {
    this.at4 = this.b4.count;
    this.at6 = this.b6.count;
    this.name = name;
    this.v6nums = /ipv6/i.test(path.basename(name));
    this.line = 0;
  }

  /** Reserves room for `factor` times the rows this file gave so far, family by family. */
  reserve(factor: number): void {
    this.b4.reserve(this.at4 + Math.ceil((this.b4.count - this.at4) * factor));
    this.b6.reserve(this.at6 + Math.ceil((this.b6.count - this.at6) * factor));
  }

  private bad(line: number, problem: string): GeoDbError {
    return new GeoDbError(this.key, this.name, line, problem);
  }

  /**
   * Reads the complete lines in b[0, have) (all of it when `last`), returns the bytes used.
   * Synchronous, so that V8 optimises it whole.
   */
  lines(b: Buffer, have: number, last: boolean): number {
    this.b = b;
    const { sw, ew, kind } = this;
    const end = last ? have : b.lastIndexOf(LF, have - 1) + 1;
    let pos = 0;
    let line = this.line;
    while (pos < end) {
      // One pass finds the first three commas and the line's end.
      const ls = pos;
      let c1 = -1;
      let c2 = -1;
      let c3 = -1;
      let le = pos;
      for (; le < end; le++) {
        const c = b[le]!;
        if (c === LF) break;
        if (c !== COMMA) continue;
        if (c1 < 0) c1 = le;
        else if (c2 < 0) c2 = le;
        else {
          c3 = le;
          while (le < end && b[le] !== LF) le++;
          break;
        }
      }
      pos = le + 1;
      if (le > ls && b[le - 1] === CR) le--;
      line++;
      if (le === ls || b[ls] === HASH) continue;
      if (line === 1 && isHeaderLike(b, ls, c1 < 0 ? le : c1)) continue;
      if (c2 < 0) throw this.bad(line, `expected ${this.shape}`);
      if (c3 < 0) c3 = le;

      const fs = parseToken(b, ls, c1, sw);
      if (fs === Form.Bad) throw this.bad(line, `bad address ${excerpt(b, ls, c1)}`);
      const fe = parseToken(b, c1 + 1, c2, ew);
      if (fe === Form.Bad) throw this.bad(line, `bad address ${excerpt(b, c1 + 1, c2)}`);
      let family: 4 | 6;
      if (fs === Form.Num && fe === Form.Num) family = this.v6nums || ew[0] !== 0 || ew[1] !== 0 || ew[2] !== 0 ? 6 : 4;
      else if (fs === fe) family = fs === Form.V4 ? 4 : 6;
      else throw this.bad(line, 'first_ip and last_ip are not the same kind of address');
      // An IPv4-mapped IPv6 range is an IPv4 range: lookups of ::ffff:a.b.c.d go to IPv4.
      if (family === 6 && fs === Form.V6 && sw[0] === 0 && sw[1] === 0 && sw[2] === 0xffff && ew[0] === 0 && ew[1] === 0 && ew[2] === 0xffff) {
        family = 4;
        sw[2] = ew[2] = 0;
      }
      if (family === 4) {
        if (sw[0] !== 0 || sw[1] !== 0 || sw[2] !== 0 || sw[3]! > ew[3]!) throw this.bad(line, 'first_ip is after last_ip');
      } else {
        let d = 0;
        for (let k = 0; k < 4 && d === 0; k++) d = sw[k]! - ew[k]!;
        if (d > 0) throw this.bad(line, 'first_ip is after last_ip');
      }

      const value = kind === 'country' ? this.country(line, c2 + 1, c3) : this.asn(line, c2 + 1, c3, le);
      if (value < 0) continue;
      if (family === 4) this.b4.push(sw, ew, value);
      else this.b6.push(sw, ew, value);
    }
    this.line = line;
    return end;
  }

  /** The country field b[s, e) -> index in codes. */
  private country(line: number, s: number, e: number): number {
    const b = this.b;
    const x = b[s]! & 0xdf;
    const y = b[s + 1]! & 0xdf;
    if (e - s !== 2 || x < 0x41 || x > 0x5a || y < 0x41 || y > 0x5a) throw this.bad(line, `bad country code ${excerpt(b, s, e)}: expected two letters (ISO 3166-1)`);
    const packed = (x << 8) | y;
    let value = this.codeIndex[packed]!;
    if (value < 0) {
      value = this.codes.length;
      this.codeIndex[packed] = value;
      this.codes.push(String.fromCharCode(x, y));
    }
    return value;
  }

  /** The ASN field b[s, e) and the organisation after it (to le) -> index in asns, or -1 for AS0. */
  private asn(line: number, s: number, e: number, le: number): number {
    const b = this.b;
    const from = s;
    if (e - s > 2 && (b[s]! & 0xdf) === 0x41 && (b[s + 1]! & 0xdf) === 0x53) s += 2; // "AS15169"
    let asn = 0;
    if (e === s || e - s > 10) throw this.bad(line, `bad ASN ${excerpt(b, from, e)}`);
    for (let i = s; i < e; i++) {
      const d = b[i]! - 0x30;
      if (d < 0 || d > 9) throw this.bad(line, `bad ASN ${excerpt(b, from, e)}`);
      asn = asn * 10 + d;
    }
    if (asn > 0xffffffff) throw this.bad(line, `bad ASN ${excerpt(b, from, e)}`);
    // AS0 marks address space that no AS may originate (RFC 7607): not a place.
    if (asn === 0) return -1;
    let i = this.asnIndex.get(asn);
    if (i < 0) {
      i = this.asns.length;
      this.asnIndex.set(asn, i);
      this.asns.push(asn);
      this.orgs.push(null);
    }
    if (this.orgs[i] === null && e < le) {
      const org = fieldText(b, e + 1, le).trim();
      if (org !== '') this.orgs[i] = org;
    }
    return i;
  }

  async finish(names: string): Promise<CountryData | AsnData> {
    if (this.b4.count + this.b6.count === 0) throw new GeoDbError(this.key, names, null, `holds no ranges (expected lines of ${this.shape})`);
    const narrow = this.kind === 'country';
    const r4 = await this.b4.finish(narrow);
    await yieldToLoop();
    const r6 = await this.b6.finish(narrow);
    await yieldToLoop();
    const table = new RangeTable(r4.starts, r4.ends, r4.values, r6.starts, r6.ends, r6.values);
    if (this.kind === 'country') return { table, codes: this.codes };
    return { table, asns: Uint32Array.from(this.asns), orgs: this.orgs };
  }
}
