import type { Db } from './db.js';

export interface AuditEntry {
  id: number;
  at: number;
  actor: string;
  action: string;
  target: string;
  detail: string | null;
  reason: string | null;
}

/** Who changed what, when and why: every CLI change and every automatic lapse or expiry. */
export class AuditRepo {
  constructor(private readonly db: Db) {}

  record(e: Omit<AuditEntry, 'id'>): void {
    this.db
      .prepare('INSERT INTO audit (at, actor, action, target, detail, reason) VALUES (?, ?, ?, ?, ?, ?)')
      .run(e.at, e.actor, e.action, e.target, e.detail, e.reason);
  }

  /** Newest first; target is "user:NAME", "device:NAME", "queue:ID" and so on. */
  list(filter: { target?: string; limit?: number } = {}): AuditEntry[] {
    return filter.target
      ? this.db.prepare<[string, number], AuditEntry>('SELECT * FROM audit WHERE target = ? COLLATE NOCASE ORDER BY at DESC, id DESC LIMIT ?').all(filter.target, filter.limit ?? 1000)
      : this.db.prepare<[number], AuditEntry>('SELECT * FROM audit ORDER BY at DESC, id DESC LIMIT ?').all(filter.limit ?? 1000);
  }
}
