import type { Db } from './db.js';

/** What an audit row says about its change, beyond who, what, which and why. */
export type AuditDetail = Record<string, unknown>;

/** An audit row as written: its detail an object, or text (kept as {"text": "..."}). */
export interface AuditEntry {
  id: number;
  at: number;
  actor: string;
  action: string;
  target: string;
  detail: AuditDetail | string | null;
  reason: string | null;
}

/** An audit row as read: the detail is an object, or null (a row written as plain text reads as {"text": "..."}). */
export interface AuditRecord extends Omit<AuditEntry, 'detail'> {
  detail: AuditDetail | null;
}

export type NewAuditEntry = Omit<AuditEntry, 'id'>;

/**
 * Both engines: the detail column's text. Details are JSON objects, so `postern audit --json`
 * and the server log can give them as objects; text (from callers that describe a change in
 * words) is wrapped as {"text": ...}, and a string that already holds a JSON object is kept.
 */
export function detailColumn(d: AuditDetail | string | null): string | null {
  if (d === null) return null;
  if (typeof d !== 'string') return JSON.stringify(d);
  return parsedObject(d) ? d : JSON.stringify({ text: d });
}

/** Both engines: the detail column as an object. Rows of older versions hold plain text: {"text": ...}. */
export function detailOf(column: string | null): AuditDetail | null {
  if (column === null) return null;
  return parsedObject(column) ?? { text: column };
}

function parsedObject(s: string): AuditDetail | null {
  if (!s.startsWith('{')) return null;
  try {
    const v = JSON.parse(s) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as AuditDetail) : null;
  } catch {
    return null;
  }
}

type Row = Omit<AuditEntry, 'detail'> & { detail: string | null };
const toEntry = (r: Row): AuditRecord => ({ ...r, detail: detailOf(r.detail) });

/** Who changed what, when and why: every CLI change and every automatic lapse or expiry. */
export class AuditRepo {
  constructor(private readonly db: Db) {}

  record(e: NewAuditEntry): void {
    this.db
      .prepare('INSERT INTO audit (at, actor, action, target, detail, reason) VALUES (?, ?, ?, ?, ?, ?)')
      .run(e.at, e.actor, e.action, e.target, detailColumn(e.detail), e.reason);
  }

  /** Several entries, in the order given (ids ascending): one statement on PostgreSQL. */
  recordMany(entries: NewAuditEntry[]): void {
    this.db.transaction(() => {
      for (const e of entries) this.record(e);
    })();
  }

  /** Newest first; target is "user:NAME", "device:NAME", "message:ID", "incident:ID" and so on. */
  list(filter: { target?: string; limit?: number } = {}): AuditRecord[] {
    const rows = filter.target
      ? this.db.prepare<[string, number], Row>('SELECT * FROM audit WHERE target = ? COLLATE NOCASE ORDER BY at DESC, id DESC LIMIT ?').all(filter.target, filter.limit ?? 1000)
      : this.db.prepare<[number], Row>('SELECT * FROM audit ORDER BY at DESC, id DESC LIMIT ?').all(filter.limit ?? 1000);
    return rows.map(toEntry);
  }

  /** Entries written after `position` (an id), oldest first: what a follower of the log has not seen. */
  after(position: number, limit: number): AuditRecord[] {
    return this.db.prepare<[number, number], Row>('SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?').all(position, limit).map(toEntry);
  }

  /**
   * Where the follower `name` stands in the audit log (the last id it has passed). A follower
   * seen for the first time starts at the newest entry: the past is in `postern audit`.
   */
  cursor(name: string): number {
    this.db.prepare('INSERT INTO log_cursors (name, position) SELECT ?, COALESCE(MAX(id), 0) FROM audit WHERE true ON CONFLICT (name) DO NOTHING').run(name);
    return this.db.prepare<[string], { position: number }>('SELECT position FROM log_cursors WHERE name = ?').get(name)!.position;
  }

  /**
   * Moves the follower from `from` to `to`; false when it no longer stood at `from` (another
   * process moved it), so of two processes that read the same entries one passes them.
   */
  advanceCursor(name: string, from: number, to: number): boolean {
    return this.db.prepare('UPDATE log_cursors SET position = ? WHERE name = ? AND position = ?').run(to, name, from).changes === 1;
  }
}
