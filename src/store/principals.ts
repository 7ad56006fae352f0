import type { PrincipalRef } from '../domain/types.js';
import type { Db } from './db.js';

/**
 * The principals table: one never-reused number per user or device (see migration 010).
 * Called inside the user's or device's own insert and delete transactions.
 */
export function newPrincipal(db: Db, kind: 'user' | 'device', name: string, now: number): PrincipalRef {
  return Number(db.prepare('INSERT INTO principals (kind, name, created_at) VALUES (?, ?, ?)').run(kind, name, now).lastInsertRowid) as PrincipalRef;
}

/** The principal outlives its user or device, marked deleted: old mail and incidents still name it. */
export function retirePrincipal(db: Db, ref: PrincipalRef, now: number): void {
  db.prepare('UPDATE principals SET deleted_at = ? WHERE id = ?').run(now, ref);
}

/** SQL for a principal's label ("user:alice") from a principal_ref column. */
export const labelOf = (column: string) => `(SELECT kind || ':' || name FROM principals WHERE id = ${column})`;
