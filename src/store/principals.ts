import type { PrincipalRef } from '../domain/types.js';
import type { Db } from './db.js';

/**
 * The principals table: one never-reused number per user or device (see migration 010).
 * Called inside the user's or device's own insert and delete transactions.
 */
export function newPrincipal(db: Db, kind: 'user' | 'device', name: string, now: number): PrincipalRef {
  return Number(db.prepare('INSERT INTO principals (kind, name, created_at) VALUES (?, ?, ?)').run(kind, name, now).lastInsertRowid) as PrincipalRef;
}

/**
 * Deletes a user or device. Its principal outlives it, marked deleted: old mail and incidents
 * still name it, and nothing of it passes to a later one of the same name.
 */
export function deleteWithPrincipal(db: Db, table: 'users' | 'devices', id: number, now: number): boolean {
  return db.transaction(() => {
    const row = db.prepare<[number], { principal_ref: number }>(`SELECT principal_ref FROM ${table} WHERE id = ?`).get(id);
    if (!row) return false;
    db.prepare('UPDATE principals SET deleted_at = ? WHERE id = ?').run(now, row.principal_ref);
    return db.prepare(`DELETE FROM ${table} WHERE id = ?`).run(id).changes === 1;
  })();
}

/** SQL for a principal's label ("user:alice") from a principal_ref column. */
export const labelOf = (column: string) => `(SELECT kind || ':' || name FROM principals WHERE id = ${column})`;
