import type { Logger } from './log.js';
import { principalFields } from './log.js';

/** An audit entry as the store gives it (store/audit.ts AuditRecord). */
export interface AuditRow {
  id: number;
  at: number;
  actor: string;
  action: string;
  target: string;
  detail: Record<string, unknown> | null;
  reason: string | null;
}

/** The store's verbs the follower uses (store.audit and store.leases). */
export interface AdminLogDeps {
  audit: {
    after(position: number, limit: number): Promise<AuditRow[]>;
    cursor(name: string): Promise<number>;
    advanceCursor(name: string, from: number, to: number): Promise<boolean>;
  };
  leases: {
    take(name: string, owner: string, now: number, until: number): Promise<boolean>;
    give(name: string, owner: string): Promise<void>;
  };
  log: Logger;
  now: () => number;
  /** This process in the lease (store/shared.ts processOwner). */
  owner: string;
}

export interface AdminLogTiming {
  /** How often the node holding the lease looks for new entries. */
  pollMs: number;
  /** How long the lease lasts unrenewed: a dead node's successor starts within this (plus a renewal period). */
  leaseMs: number;
  /** How long a hole in the ids is waited for before it is taken for a rolled-back insert. */
  gapMs: number;
}

export const ADMIN_LOG_TIMING: AdminLogTiming = { pollMs: 1000, leaseMs: 60_000, gapMs: 30_000 };

/** The lease naming the node that logs audit entries, and the cursor it moves. */
const LEASE = 'admin-log';
const CURSOR = 'admin-log';
const BATCH = 200;

/**
 * The server's log learns of changes made with the CLI (another process, often on another
 * node) from the audit table they are all written to: one node at a time (a lease, as for
 * the shared metrics) logs each new entry as an `admin.action` event, so a quarantine release
 * or a suspension sits in the journal between the submission and the delivery it explains.
 *
 * Each entry is logged once: the cursor lives in the store and moves by compare-and-set
 * before its entries are logged, so a node that takes over goes on where the last one stopped
 * (a node that dies between the move and the log line loses those lines; they stay in
 * `postern audit`). An id is taken when a row is inserted, not when it commits, so on
 * PostgreSQL a later id can be visible first: the cursor stops at a hole in the ids and
 * passes it only after `gapMs` (then it was a rolled-back insert).
 */
export class AdminLog {
  private readonly t: AdminLogTiming;
  private holding = false;
  private leaseCheckAt = 0;
  private hole: { id: number; since: number } | null = null;
  /** The cursor as this node last moved it; null until read under the current lease. */
  private position: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(
    private readonly d: AdminLogDeps,
    timing: Partial<AdminLogTiming> = {},
  ) {
    this.t = { ...ADMIN_LOG_TIMING, ...timing };
  }

  /**
   * One round: takes (or renews) the lease when due, and if this node holds it, logs every
   * entry the cursor has not passed. Returns how many it logged. Rounds never overlap: a call
   * while one runs gets a round that starts after it, so it sees what was written before.
   */
  poll(): Promise<number> {
    const round = this.chain.then(() => this.round());
    this.pending++;
    this.chain = round.then(
      () => void this.pending--,
      () => void this.pending--,
    );
    return round;
  }

  private async round(): Promise<number> {
    const now = this.d.now();
    if (now >= this.leaseCheckAt) {
      this.holding = await this.d.leases.take(LEASE, this.d.owner, now, now + this.t.leaseMs);
      this.leaseCheckAt = now + this.t.leaseMs / 3;
    }
    if (!this.holding) {
      this.position = null;
      return 0;
    }
    // Read once per lease: while it is held, only this node moves the cursor.
    let position = (this.position ??= await this.d.audit.cursor(CURSOR));
    let logged = 0;
    for (;;) {
      const rows = await this.d.audit.after(position, BATCH);
      const next = this.passable(rows, position, now);
      if (!next.length) break;
      const to = next.at(-1)!.id;
      // Another node moved the cursor (this one's lease had lapsed): those lines are its.
      if (!(await this.d.audit.advanceCursor(CURSOR, position, to))) {
        this.holding = false;
        this.position = null;
        this.leaseCheckAt = now;
        break;
      }
      for (const r of next) this.d.log.info(adminAction(r));
      logged += next.length;
      this.position = position = to;
      if (next.length < rows.length || rows.length < BATCH) break;
    }
    return logged;
  }

  /** The entries after `position` up to the first hole in the ids that has not lasted `gapMs`. */
  private passable(rows: AuditRow[], position: number, now: number): AuditRow[] {
    const out: AuditRow[] = [];
    let expect = position + 1;
    for (const r of rows) {
      if (r.id !== expect) {
        // An insert not committed yet, or one rolled back: wait for the first, pass the second.
        if (this.hole?.id !== expect) this.hole = { id: expect, since: now };
        if (now - this.hole.since < this.t.gapMs) break;
        this.hole = null;
      }
      out.push(r);
      expect = r.id + 1;
    }
    return out;
  }

  /**
   * Places the cursor (at the newest entry, the first time any node starts on this database:
   * entries made while no node ran are logged at the next start), logs what is new, then
   * polls every pollMs until stop(). A store that fails here is logged, not fatal.
   */
  async start(): Promise<void> {
    if (this.timer) return;
    const failed = (e: unknown) => this.d.log.error({ event: 'admin.log_error', err: (e as Error).message });
    this.timer = setInterval(() => {
      if (!this.pending) this.poll().catch(failed);
    }, this.t.pollMs);
    this.timer.unref();
    try {
      await this.d.audit.cursor(CURSOR);
      await this.poll();
    } catch (e) {
      failed(e);
    }
  }

  /** Stops polling, lets a round under way finish, and gives the lease up for another node. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.chain;
    if (this.holding) await this.d.leases.give(LEASE, this.d.owner).catch(() => undefined);
    this.holding = false;
    this.position = null;
    this.leaseCheckAt = 0;
  }
}

/**
 * One audit entry as a log event. The target is also given in the fields other events use:
 * a user's or device's `principal` and `principal_kind`, a message's `queue_id`, an
 * incident's number, so one jq filter follows a principal or a message through its events.
 */
export function adminAction(r: AuditRow): Record<string, unknown> {
  const colon = r.target.indexOf(':');
  const [kind, name] = colon === -1 ? ['', r.target] : [r.target.slice(0, colon), r.target.slice(colon + 1)];
  const about =
    kind === 'user' || kind === 'device'
      ? principalFields({ kind, name })
      : kind === 'message'
        ? { queue_id: name }
        : kind === 'incident' && /^\d+$/.test(name)
          ? { incident: Number(name) }
          : {};
  return {
    event: 'admin.action',
    audit_id: r.id,
    at: new Date(r.at).toISOString(),
    actor: r.actor,
    action: r.action,
    target: r.target,
    ...about,
    reason: r.reason,
    detail: r.detail,
  };
}
