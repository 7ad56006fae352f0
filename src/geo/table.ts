import { cmp6 } from './ip.js';

/**
 * Sorted, non-overlapping address ranges with a small integer value each (a country's index,
 * an ASN's index), in typed arrays: a lookup is a binary search among the rows of one /16,
 * and the whole table is a handful of flat buffers the garbage collector never walks.
 *
 * IPv4 ranges: one uint32 per start and end. IPv6 ranges: four big-endian uint32 words per
 * start and end, compared word by word (BigInt would allocate on every comparison).
 */
export class RangeTable {
  /**
   * first4[p]: the first row whose start is at or above p << 16 (p = top 16 bits). A lookup
   * searches only the rows of its /16 and the one before: two or three cache misses instead
   * of twenty over a table of megabytes. The same for IPv6 by its top 16 bits. 256 KiB each.
   */
  private readonly first4: Uint32Array;
  private readonly first6: Uint32Array;

  constructor(
    private readonly s4: Uint32Array,
    private readonly e4: Uint32Array,
    private readonly v4: Uint16Array | Uint32Array,
    private readonly s6: Uint32Array,
    private readonly e6: Uint32Array,
    private readonly v6: Uint16Array | Uint32Array,
  ) {
    this.first4 = firstIndex(s4, 1);
    this.first6 = firstIndex(s6, 4);
  }

  /** The value of the range holding the address in w, or -1. */
  find(family: 4 | 6, w: Uint32Array): number {
    if (family === 4) {
      const s = this.s4;
      const x = w[3]!;
      const p = x >>> 16;
      let lo = this.first4[p]!;
      let hi = this.first4[p + 1]! - 1;
      if (lo > 0) lo--;
      if (hi < 0 || x < s[lo]!) return -1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >>> 1;
        if (s[mid]! <= x) lo = mid;
        else hi = mid - 1;
      }
      return x <= this.e4[lo]! ? this.v4[lo]! : -1;
    }
    const s = this.s6;
    const p = w[0]! >>> 16;
    let lo = this.first6[p]!;
    let hi = this.first6[p + 1]! - 1;
    if (lo > 0) lo--;
    if (hi < 0 || cmp6(s, lo, w) > 0) return -1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (cmp6(s, mid, w) <= 0) lo = mid;
      else hi = mid - 1;
    }
    return cmp6(this.e6, lo, w) >= 0 ? this.v6[lo]! : -1;
  }

  get rows(): number {
    return this.v4.length + this.v6.length;
  }

  get bytes(): number {
    return [this.s4, this.e4, this.v4, this.s6, this.e6, this.v6, this.first4, this.first6].reduce((n, a) => n + a.byteLength, 0);
  }
}

const YIELD_ROWS = 1 << 16;
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** For sorted starts (`width` words each): the first row at or above each top-16-bit prefix. */
function firstIndex(starts: Uint32Array, width: 1 | 4): Uint32Array {
  const n = starts.length / width;
  const first = new Uint32Array(65537);
  let row = 0;
  for (let p = 0; p <= 65536; p++) {
    while (row < n && starts[row * width]! >>> 16 < p) row++;
    first[p] = row;
  }
  return first;
}

/** A typed array that grows by doubling while a file is read, cut to size at the end. */
export class Grow32 {
  a: Uint32Array;
  n = 0;
  constructor(capacity = 1024) {
    this.a = new Uint32Array(capacity);
  }
  push(v: number): void {
    if (this.n === this.a.length) this.grow();
    this.a[this.n++] = v;
  }
  /** Appends words w[from..3]. */
  pushWords(w: Uint32Array, from: number): void {
    if (this.n + 4 > this.a.length) this.grow();
    for (let k = from; k < 4; k++) this.a[this.n++] = w[k]!;
  }
  private grow(): void {
    const b = new Uint32Array(this.a.length * 2);
    b.set(this.a);
    this.a = b;
  }
  /** Appends src[from, to). */
  append(src: Uint32Array, from: number, to: number): void {
    while (this.n + (to - from) > this.a.length) this.grow();
    this.a.set(src.subarray(from, to), this.n);
    this.n += to - from;
  }
  /** Makes room for `cap` values in one step. */
  reserve(cap: number): void {
    if (cap <= this.a.length) return;
    const b = new Uint32Array(cap);
    b.set(this.a.subarray(0, this.n));
    this.a = b;
  }
  /**
   * The values, without a copy when the array is nearly full: a copy is one more large block
   * freed, and freed blocks mostly stay in the process's RSS (the allocator keeps them).
   */
  done(): Uint32Array {
    if (this.n === this.a.length) return this.a;
    if ((this.a.length - this.n) * 16 <= this.a.length) return this.a.subarray(0, this.n);
    return this.a.slice(0, this.n);
  }
}

/**
 * One family's rows as read, in file order. `finish` sorts them if a file was not sorted and
 * resolves overlaps: where two overlap the narrower range wins (longest-prefix match, as in a
 * MaxMind tree), and of two equally narrow ones the later row. The bundled country data needs
 * this: it carves geofeed sub-ranges out of whois blocks (2.58.197.15/32 BE inside a DE
 * block) and holds some 7,500 such rows.
 */
export class RangeBuilder {
  readonly starts = new Grow32();
  readonly ends = new Grow32();
  readonly values = new Grow32();
  /** Every row starts after the previous one ends: no sorting, no overlaps to resolve. */
  private clean = true;
  /** Every row starts no earlier than the previous one. */
  private ascending = true;

  constructor(readonly width: 1 | 4) {}

  get count(): number {
    return this.values.n;
  }

  /** Makes room for `rows` rows in all, in one step rather than by doubling. */
  reserve(rows: number): void {
    this.starts.reserve(rows * this.width);
    this.ends.reserve(rows * this.width);
    this.values.reserve(rows);
  }

  /** Start and end are in sw/ew (IPv4 in word 3). */
  push(sw: Uint32Array, ew: Uint32Array, value: number): void {
    const n = this.values.n;
    if (this.width === 1) {
      if (n > 0 && sw[3]! <= this.ends.a[n - 1]!) {
        this.clean = false;
        if (sw[3]! < this.starts.a[n - 1]!) this.ascending = false;
      }
      this.starts.push(sw[3]!);
      this.ends.push(ew[3]!);
    } else {
      if (n > 0 && cmp6(this.ends.a, n - 1, sw) >= 0) {
        this.clean = false;
        if (cmp6(this.starts.a, n - 1, sw) > 0) this.ascending = false;
      }
      this.starts.pushWords(sw, 0);
      this.ends.pushWords(ew, 0);
    }
    this.values.push(value);
  }

  /** Sorted, resolved arrays. Async: it turns the event loop now and then, as the reading does. */
  async finish(narrow: boolean): Promise<{ starts: Uint32Array; ends: Uint32Array; values: Uint16Array | Uint32Array }> {
    const wrap = (values: Uint32Array) => (narrow ? Uint16Array.from(values) : values);
    if (this.clean) return { starts: this.starts.done(), ends: this.ends.done(), values: wrap(this.values.done()) };
    const w = this.width;
    const n = this.values.n;
    const S = this.starts.a;
    const E = this.ends.a;
    const V = this.values.a;
    const big = (a: Uint32Array, i: number): bigint => {
      if (w === 1) return BigInt(a[i]!);
      let x = 0n;
      for (let k = 0; k < 4; k++) x = (x << 32n) | BigInt(a[i * 4 + k]!);
      return x;
    };
    const cmpStart = (a: number, b: number): number => {
      for (let k = 0; k < w; k++) {
        const d = S[a * w + k]! - S[b * w + k]!;
        if (d !== 0) return d;
      }
      return 0;
    };
    // A stable sort keeps file order among equal starts (the later row wins a tie).
    let order: number[] | null = null;
    if (!this.ascending) {
      order = Array.from({ length: n }, (_, i) => i);
      order.sort(cmpStart);
    }
    const at = (j: number) => (order === null ? j : order[j]!);
    /** Compares a[i] with b[j], both `w` words wide. */
    const cmpAt = (a: Uint32Array, i: number, b: Uint32Array, j: number): number => {
      for (let k = 0; k < w; k++) {
        const d = a[i * w + k]! - b[j * w + k]!;
        if (d !== 0) return d;
      }
      return 0;
    };

    const outS = new Grow32(S.length);
    const outE = new Grow32(E.length);
    const outV = new Grow32(n);
    const putWords = (x: bigint, g: Grow32) => {
      const base = g.n;
      for (let k = 0; k < w; k++) g.push(0);
      for (let k = w - 1; k >= 0; k--, x >>= 32n) g.a[base + k] = Number(x & 0xffffffffn);
    };
    // The last piece emitted by a cluster, to merge contiguous equal pieces: a block that a
    // narrower row was carved out of comes back as two rows, not as one per cut.
    let lastEnd = -1n;
    let lastV = -1;
    const emit = (s: bigint, e: bigint, v: number) => {
      const m = outV.n;
      if (v === lastV && lastEnd + 1n === s) {
        for (let k = w - 1, x = e; k >= 0; k--, x >>= 32n) outE.a[(m - 1) * w + k] = Number(x & 0xffffffffn);
      } else {
        putWords(s, outS);
        putWords(e, outE);
        outV.push(v);
      }
      lastEnd = e;
      lastV = v;
    };
    /** Copies the rows at sorted positions [from, to), none of which overlaps another. */
    const copy = (from: number, to: number) => {
      if (order === null) {
        outS.append(S, from * w, to * w);
        outE.append(E, from * w, to * w);
        outV.append(V, from, to);
      } else {
        for (let j = from; j < to; j++) {
          const i = order[j]!;
          outS.append(S, i * w, i * w + w);
          outE.append(E, i * w, i * w + w);
          outV.push(V[i]!);
        }
      }
      lastV = -1;
    };
    const startsByEnd = w === 1 ? (i: number, j: number) => S[i]! <= E[j]! : (i: number, j: number) => cmpAt(S, i, E, j) <= 0;
    const endsAfter = w === 1 ? (i: number, j: number) => E[i]! > E[j]! : (i: number, j: number) => cmpAt(E, i, E, j) > 0;

    // Clusters of rows that overlap one another (transitively); the runs of rows between them
    // are copied as they are.
    let run = 0;
    let c = 0;
    let pause = YIELD_ROWS;
    while (c < n) {
      if (c >= pause) {
        pause = c + YIELD_ROWS;
        await yieldToLoop();
      }
      let last = at(c); // the row reaching furthest so far
      let d = c + 1;
      while (d < n && startsByEnd(at(d), last)) {
        if (endsAfter(at(d), last)) last = at(d);
        d++;
      }
      if (d > c + 1) {
        copy(run, c);
        const rows: Row[] = [];
        for (let j = c; j < d; j++) {
          const s = big(S, at(j));
          const e = big(E, at(j));
          rows.push({ s, e, size: e - s, v: V[at(j)]!, rank: at(j) });
        }
        resolveCluster(rows, emit);
        run = d;
      }
      c = d;
    }
    copy(run, n);
    return { starts: outS.done(), ends: outE.done(), values: wrap(outV.done()) };
  }
}

interface Row {
  s: bigint;
  e: bigint;
  size: bigint;
  v: number;
  /** Position in the files: of two equally narrow rows, the later wins. */
  rank: number;
}

/** Narrower first, then the later row. */
const better = (a: Row, b: Row) => a.size < b.size || (a.size === b.size && a.rank > b.rank);

/**
 * Cuts a cluster (rows sorted by start) into pieces at every start and end, giving each piece
 * to the best row covering it: a sweep with a heap of open rows, O(k log k).
 */
function resolveCluster(rows: Row[], emit: (s: bigint, e: bigint, v: number) => void): void {
  const cuts = [...new Set(rows.flatMap((r) => [r.s, r.e + 1n]))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const heap: Row[] = [];
  const up = (i: number) => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!better(heap[i]!, heap[p]!)) break;
      [heap[i], heap[p]] = [heap[p]!, heap[i]!];
      i = p;
    }
  };
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && better(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && better(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  let next = 0;
  for (let k = 0; k + 1 < cuts.length; k++) {
    const at = cuts[k]!;
    while (next < rows.length && rows[next]!.s <= at) {
      heap.push(rows[next++]!);
      up(heap.length - 1);
    }
    // Rows that ended before this piece leave lazily, when they reach the top.
    while (heap.length > 0 && heap[0]!.e < at) {
      heap[0] = heap[heap.length - 1]!;
      heap.pop();
      if (heap.length > 0) down(0);
    }
    if (heap.length > 0) emit(at, cuts[k + 1]! - 1n, heap[0]!.v);
  }
}
