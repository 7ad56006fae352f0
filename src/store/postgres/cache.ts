import pg from 'pg';
import { deepFreeze } from '../policy-cache.js';
import { POLICY_GENERATION } from '../sql.js';
import type { Pg } from './pg.js';

/** Entries kept per table before the memory is dropped anyway. */
const MAX_ENTRIES = 50_000;
/** The fallback check of policy_generation when no notification arrives (a lost LISTEN connection). */
const POLL_MS = 1000;

/**
 * Memory for the rows policy reads on every SMTP command (users, devices, bindings, limit
 * overrides, app passwords), shared safely by several nodes. Every change to those tables, on any node or by
 * the CLI, moves policy_generation and sends NOTIFY postern_policy (migration 001's trigger):
 * each node LISTENs and drops what it holds at once; should that connection be lost, it
 * compares policy_generation every second instead, so a change is seen within one second
 * either way. This node's own writes drop it at once, before and after they commit, and
 * nothing read inside a transaction is kept.
 */
export class PgPolicyCache {
  private epoch = 0;
  private readonly maps: Array<Map<unknown, unknown>> = [];
  private listener: pg.Client | null = null;
  private seen = -1;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private connecting = false;
  /** When policy_generation was last read (performance.now()), or -Infinity. */
  private polledAt = -Infinity;

  constructor(
    private readonly db: Pg,
    private readonly url: string,
  ) {}

  /** A lookup through the cache: `load` runs on a miss; outside a transaction its result is kept. */
  table<K, V>(load: (key: K) => Promise<V>): (key: K) => Promise<V> {
    const map = new Map<K, { v: V }>();
    this.maps.push(map as Map<unknown, unknown>);
    return async (key: K) => {
      if (this.db.inTransaction || !this.listening()) return load(key);
      const hit = map.get(key);
      if (hit) return hit.v;
      const epoch = this.epoch;
      const v = await load(key);
      // A change that landed while this was read makes the row it read stale: not kept.
      if (epoch === this.epoch) {
        if (map.size >= MAX_ENTRIES) map.clear();
        map.set(key, { v: deepFreeze(v) });
      }
      return v;
    };
  }

  /** This node changed policy rows: forget now, and again when the transaction they are in ends. */
  changed(): void {
    this.clear();
    this.db.policyChanged();
  }

  /** Forgets everything (a change here or elsewhere, a transaction's end). */
  clear(): void {
    this.epoch++;
    for (const m of this.maps) m.clear();
  }

  /**
   * Only while this node is told of changes, or has read policy_generation within the last
   * 1.5 s, may it keep rows: otherwise a change could go unseen for longer than a second.
   */
  private listening(): boolean {
    return !this.stopped && (this.listener !== null || performance.now() - this.polledAt < 1.5 * POLL_MS);
  }

  /** Subscribes to changes; without a subscription the cache keeps nothing. */
  async start(): Promise<void> {
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    this.timer.unref();
    await this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped || this.listener || this.connecting) return;
    this.connecting = true;
    const c = new pg.Client({ connectionString: this.url, keepAlive: true, connectionTimeoutMillis: 5000 });
    const lost = () => {
      if (this.listener === c) this.listener = null;
      this.clear();
    };
    c.on('error', lost);
    c.on('end', lost);
    c.on('notification', () => this.clear());
    try {
      await c.connect();
      await c.query('LISTEN postern_policy');
      if (this.stopped) throw new Error('stopped');
      this.listener = c;
      // Anything changed before the subscription took effect.
      this.clear();
    } catch {
      lost();
      await c.end().catch(() => undefined);
    } finally {
      this.connecting = false;
    }
  }

  /** Reads policy_generation now and forgets everything if it moved: changes committed before the call are then seen. */
  async sync(): Promise<void> {
    const n = (await this.db.one<{ n: number }>(POLICY_GENERATION))?.n ?? -1;
    if (n !== this.seen) {
      this.seen = n;
      this.clear();
    }
    this.polledAt = performance.now();
  }

  private async poll(): Promise<void> {
    try {
      await this.sync();
      if (!this.listener) await this.connect();
    } catch {
      // The database is away: nothing read now is kept either (reads fail).
      this.clear();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const c = this.listener;
    this.listener = null;
    await c?.end().catch(() => undefined);
  }
}

/**
 * Makes each named verb of `repo` drop the cache when it ends (committed, rolled back or
 * failed): this node's own changes are seen by its very next read, not a notification later.
 */
export function dropsCache<T extends object>(repo: T, cache: PgPolicyCache | undefined, verbs: Array<keyof T & string>): void {
  if (!cache) return;
  for (const name of verbs) {
    const verb = repo[name] as unknown as (...args: unknown[]) => Promise<unknown>;
    Object.defineProperty(repo, name, {
      value: async (...args: unknown[]) => {
        try {
          return await verb.apply(repo, args);
        } finally {
          cache.changed();
        }
      },
    });
  }
}
