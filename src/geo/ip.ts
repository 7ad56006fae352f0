/**
 * Addresses as numbers, parsed straight from bytes: the loader reads a million CSV fields and
 * the login path one address, and neither should allocate a string or an array per address.
 *
 * An address lands in a caller's `Uint32Array(4)` as four big-endian 32-bit words. IPv4 uses
 * the last word only (`w[3]`), so one table layout serves both families.
 */

/** What a parsed token was: not an address, dotted IPv4, colon IPv6, or a bare decimal number. */
export const Form = { Bad: 0, V4: 4, V6: 6, Num: 1 } as const;
export type Form = (typeof Form)[keyof typeof Form];

const DOT = 0x2e;
const COLON = 0x3a;
const PERCENT = 0x25;

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/** Dotted quad in b[s, e) -> uint32, or -1. Up to three digits per part, each at most 255. */
function dotted(b: Uint8Array, s: number, e: number): number {
  let v = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (c === DOT) {
      if (digits === 0 || parts === 3) return -1;
      v = v * 256 + part;
      part = 0;
      digits = 0;
      parts++;
    } else {
      const d = c - 0x30;
      if (d < 0 || d > 9 || ++digits > 3) return -1;
      part = part * 10 + d;
      if (part > 255) return -1;
    }
  }
  if (digits === 0 || parts !== 3) return -1;
  return v * 256 + part;
}

const groups = new Uint16Array(8);

/**
 * IPv6 text (RFC 4291 2.2: groups of up to four hex digits, one `::`, an optional dotted quad
 * for the last 32 bits, and a `%zone` that we drop) in b[s, e) -> w. False when malformed.
 * One pass: the bundled data holds 640,000 of these.
 */
function colon(b: Uint8Array, s: number, e: number, w: Uint32Array): boolean {
  let n = 0; // groups written
  let gap = -1; // index in groups where `::` stands
  let g = 0;
  let digits = 0;
  let i = s;
  if (b[i] === COLON) {
    if (i + 1 >= e || b[i + 1] !== COLON) return false;
    gap = 0;
    i += 2;
  }
  for (; i < e; i++) {
    const c = b[i]!;
    if (c === COLON) {
      if (digits === 0 || n === 8) return false;
      groups[n++] = g;
      g = 0;
      digits = 0;
      if (i + 1 < e && b[i + 1] === COLON) {
        if (gap >= 0) return false;
        gap = n;
        i++;
      } else if (i + 1 === e) return false; // a trailing single colon
      continue;
    }
    if (c === DOT) {
      // The group being read was the first part of a dotted quad, which ends the address.
      let z = i;
      while (z < e && b[z] !== PERCENT) z++;
      const v4 = digits === 0 || n > 6 ? -1 : dotted(b, i - digits, z);
      if (v4 < 0) return false;
      groups[n++] = v4 >>> 16;
      groups[n++] = v4 & 0xffff;
      digits = 0;
      break;
    }
    if (c === PERCENT) break;
    const h = hexVal(c);
    if (h < 0 || digits === 4) return false;
    g = (g << 4) | h;
    digits++;
  }
  if (digits > 0) {
    if (n === 8) return false;
    groups[n++] = g;
  }
  if (gap < 0) {
    if (n !== 8) return false;
  } else {
    if (n > 7) return false;
    // Slide the groups after `::` to the end and zero the hole.
    const tail = n - gap;
    for (let k = 0; k < tail; k++) groups[7 - k] = groups[n - 1 - k]!;
    for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  }
  w[0] = ((groups[0]! << 16) | groups[1]!) >>> 0;
  w[1] = ((groups[2]! << 16) | groups[3]!) >>> 0;
  w[2] = ((groups[4]! << 16) | groups[5]!) >>> 0;
  w[3] = ((groups[6]! << 16) | groups[7]!) >>> 0;
  return true;
}

/** A decimal number of up to 128 bits in b[s, e) -> w (the `-num` CSV form). */
function decimal(b: Uint8Array, s: number, e: number, w: Uint32Array): boolean {
  if (e === s || e - s > 39) return false;
  // Up to 15 digits fit a double exactly: every IPv4 number, and the head of an IPv6 one.
  const head = Math.min(e, s + 15);
  let v = 0;
  for (let i = s; i < head; i++) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 9) return false;
    v = v * 10 + d;
  }
  w[0] = w[1] = 0;
  w[2] = Math.floor(v / 4294967296);
  w[3] = v >>> 0;
  // The rest four digits at a time: a word times 10^4 plus a carry stays below 2^53.
  for (let i = head; i < e; ) {
    const stop = Math.min(e, i + 4);
    let chunk = 0;
    let scale = 1;
    for (; i < stop; i++) {
      const d = b[i]! - 0x30;
      if (d < 0 || d > 9) return false;
      chunk = chunk * 10 + d;
      scale *= 10;
    }
    let carry = chunk;
    for (let k = 3; k >= 0; k--) {
      const x = w[k]! * scale + carry;
      w[k] = x >>> 0;
      carry = Math.floor(x / 4294967296);
    }
    if (carry !== 0) return false;
  }
  return true;
}

/**
 * Parses one address token. Numbers are reported as `Form.Num` with their value in w: the
 * caller knows from the row whether they are IPv4 or IPv6 (ip-location-db's `-num` files).
 */
export function parseToken(b: Uint8Array, s: number, e: number, w: Uint32Array): Form {
  let sawDot = false;
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (c === COLON) return colon(b, s, e, w) ? Form.V6 : Form.Bad;
    if (c === DOT) sawDot = true;
  }
  if (sawDot) {
    const v = dotted(b, s, e);
    if (v < 0) return Form.Bad;
    w[0] = w[1] = w[2] = 0;
    w[3] = v;
    return Form.V4;
  }
  return decimal(b, s, e, w) ? Form.Num : Form.Bad;
}

// Login-path parsing goes through the same byte parser: copying the characters into a scratch
// array costs less than splitting the string (or than Buffer#write, a native call), and the
// longest IPv6 text with a zone fits easily.
const scratch = new Uint8Array(128);

/**
 * A client address (as `socket.remoteAddress` gives it) -> 4 or 6, with the address in w, or 0
 * when it is not an address. IPv4-mapped IPv6 (::ffff:a.b.c.d, RFC 4291 2.5.5.2) is IPv4: a
 * dual-stack listener reports IPv4 clients that way.
 */
export function parseAddress(ip: string, w: Uint32Array): 0 | 4 | 6 {
  if (ip.length === 0 || ip.length > scratch.length) return 0;
  const n = ip.length;
  for (let i = 0; i < n; i++) {
    const c = ip.charCodeAt(i);
    if (c > 0x7f) return 0;
    scratch[i] = c;
  }
  const f = parseToken(scratch, 0, n, w);
  if (f === Form.V4) return 4;
  if (f !== Form.V6) return 0;
  if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) {
    w[2] = 0;
    return 4;
  }
  return 6;
}

/** Compares the 128-bit value at words[4i..4i+3] with w: negative, zero or positive. */
export function cmp6(words: Uint32Array, i: number, w: Uint32Array): number {
  const o = i * 4;
  return words[o]! - w[0]! || words[o + 1]! - w[1]! || words[o + 2]! - w[2]! || words[o + 3]! - w[3]!;
}

// IANA special-purpose registries (RFC 6890 and successors), the entries that are not
// globally reachable or are reserved: a registry row that happens to cover one of these says
// nothing about where a client stands. 224/3 takes multicast, 240/4 and broadcast together.
const V4_SPECIAL: ReadonlyArray<readonly [number, number]> = [
  [0x00000000, 8], // 0.0.0.0/8 "this network"
  [0x0a000000, 8], // 10/8 RFC 1918
  [0x64400000, 10], // 100.64/10 carrier-grade NAT (RFC 6598)
  [0x7f000000, 8], // 127/8 loopback
  [0xa9fe0000, 16], // 169.254/16 link-local
  [0xac100000, 12], // 172.16/12 RFC 1918
  [0xc0000000, 24], // 192.0.0/24 IETF protocol assignments
  [0xc0000200, 24], // 192.0.2/24 TEST-NET-1
  [0xc0586300, 24], // 192.88.99/24 deprecated 6to4 relay anycast
  [0xc0a80000, 16], // 192.168/16 RFC 1918
  [0xc6120000, 15], // 198.18/15 benchmarking
  [0xc6336400, 24], // 198.51.100/24 TEST-NET-2
  [0xcb007100, 24], // 203.0.113/24 TEST-NET-3
  [0xe0000000, 3], // 224/4 multicast, 240/4 reserved, 255.255.255.255
];
// As int32 networks and masks: the login path compares without tuples or heap numbers.
const V4_NET = Int32Array.from(V4_SPECIAL, ([net]) => net | 0);
const V4_MASK = Int32Array.from(V4_SPECIAL, ([, len]) => (0xffffffff << (32 - len)) | 0);

/**
 * Whether the address is private, loopback, link-local, documentation, multicast or otherwise
 * special-use. IPv6: everything outside global unicast 2000::/3 (so ::1, fc00::/7 ULA,
 * fe80::/10, ff00::/8), 2001::/23 less its globally reachable parts (Teredo 2001::/32,
 * 2001:3::/32, AS112 2001:4:112::/48, ORCHIDv2 2001:20::/27), 2001:db8::/32 and 3fff::/20
 * (documentation).
 */
export function isSpecial(family: 4 | 6, w: Uint32Array): boolean {
  if (family === 4) {
    const v = w[3]! | 0;
    for (let i = 0; i < V4_NET.length; i++) if ((v & V4_MASK[i]!) === V4_NET[i]) return true;
    return false;
  }
  const a = w[0]!;
  if (a >>> 29 !== 1) return true;
  if (a >>> 9 === 0x20010000 >>> 9) {
    if (a === 0x20010000 || a === 0x20010003) return false;
    if (a === 0x20010004 && w[1]! >>> 16 === 0x0112) return false;
    if ((a & 0xffffffe0) === 0x20010020) return false;
    return true;
  }
  return a === 0x20010db8 || a >>> 12 === 0x3fff0;
}

/** The text form of an address in w (for mmdb-lib, which parses strings itself). */
export function formatAddress(family: 4 | 6, w: Uint32Array): string {
  if (family === 4) {
    const v = w[3]!;
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const parts: string[] = [];
  for (let k = 0; k < 4; k++) parts.push((w[k]! >>> 16).toString(16), (w[k]! & 0xffff).toString(16));
  return parts.join(':');
}
