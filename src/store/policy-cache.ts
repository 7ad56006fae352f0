import type { Db } from './db.js';
import { POLICY_GENERATION } from './sql.js';

/** Entries kept per table before the memory is dropped anyway (a directory of that size is rare). */
const MAX_ENTRIES = 50_000;

/**
 * Memory for the rows policy reads on every SMTP command: users, devices, bindings, limit
 * overrides and app passwords. Triggers (migrations 007, 015) move policy_generation forward on any change to those
 * tables, by any process; each lookup first reads that one row, and when it moved every
 * cached entry is dropped. So a suspension by the CLI or by another session is seen at the
 * very next command, as before, for one primary-key read instead of three or four queries.
 * Cached values are frozen: callers share them.
 */
export class PolicyCache {
  private readonly generation;
  private seen = -1;
  private readonly maps: Array<Map<unknown, unknown>> = [];

  constructor(db: Db) {
    // Off when the database predates migration 007 (a store opened without migrating).
    const present = db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'policy_generation'`).get()!.n === 1;
    this.generation = present ? db.prepare<[], { n: number }>(POLICY_GENERATION) : null;
  }

  /** A lookup through the cache: `load` runs on a miss, and its result (undefined too) is kept. */
  table<K, V>(load: (key: K) => V): (key: K) => V {
    const map = new Map<K, { v: V }>();
    this.maps.push(map as Map<unknown, unknown>);
    return (key: K) => {
      if (!this.generation) return load(key);
      this.sync();
      const hit = map.get(key);
      if (hit) return hit.v;
      if (map.size >= MAX_ENTRIES) map.clear();
      const v = load(key);
      map.set(key, { v: deepFreeze(v) });
      return v;
    };
  }

  /**
   * Forgets everything. For a rolled-back transaction: rows it read or wrote may be cached,
   * and the rollback also rewinds policy_generation, so the next change would bring the
   * counter back to a value the cache has already seen.
   */
  clear(): void {
    this.seen = -1;
    for (const m of this.maps) m.clear();
  }

  private sync(): void {
    const n = this.generation!.get()?.n ?? -1;
    if (n === this.seen) return;
    this.seen = n;
    for (const m of this.maps) m.clear();
  }
}

export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
