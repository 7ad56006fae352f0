import Database from 'better-sqlite3';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;

/**
 * Opens the state database. WAL lets the CLI read and write while the server runs;
 * synchronous=FULL makes every commit reach the disk before it returns, which is what
 * lets a 250 after DATA promise that the message survives a crash.
 */
export function openDb(dataDir: string, opts: { synchronous?: 'FULL' | 'NORMAL' } = {}): Db {
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const file = path.join(dataDir, 'postern.db');
  privateFiles(file);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`);
  db.pragma('foreign_keys = ON');
  // The CLI and the server share the file: wait for the other's write instead of failing.
  db.pragma('busy_timeout = 5000');
  // Repositories prepare their SQL where they use it; compiling the same statement on every
  // call cost 7% of submission CPU. Statements are reusable (nothing here iterates), and the
  // set of distinct SQL texts is fixed by the code, so the cache stays small. The one rule
  // this imposes: never call .pluck(), .raw(), .expand() or .bind() on a prepared statement;
  // they change it for every other caller of the same SQL.
  const prepare = db.prepare.bind(db);
  const cache = new Map<string, ReturnType<typeof prepare>>();
  db.prepare = ((sql: string) => {
    let st = cache.get(sql);
    if (!st) {
      st = prepare(sql);
      cache.set(sql, st);
    }
    return st;
  }) as typeof db.prepare;
  return db;
}

/**
 * The database holds argon2 hashes and message bodies: owner only (0600), whatever the umask.
 * Created here before SQLite opens it, because SQLite creates the file with 0644 less the
 * umask and gives its -wal and -shm the main file's mode; files left readable by an older
 * version are narrowed at the next start.
 */
function privateFiles(file: string): void {
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, 0o600);
    } catch (e) {
      // Gone (no WAL yet), or not ours to change (an admin in the data dir's group): SQLite
      // itself then says whether the file can be used.
      if (!['ENOENT', 'EPERM'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    }
  }
}

/** How long a write on the submission path waits, asynchronously, for another process's lock. */
export const LOCK_BUDGET_MS = 5000;

/** SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock this one needs. */
export function isBusy(e: unknown): boolean {
  const code = String((e as { code?: unknown } | null)?.code ?? '');
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED');
}

/** A write that found the database locked for longer than its caller would wait. */
export class StoreBusyError extends Error {
  override name = 'StoreBusyError';
  readonly code = 'SQLITE_BUSY';
}

/**
 * Runs `fn` on these connections without SQLite's busy wait: a locked database fails at once
 * with SQLITE_BUSY instead of holding the event loop for busy_timeout (5 s), during which no
 * other client is answered. The caller retries asynchronously (retryWhileBusy) or gives up.
 * Safe to toggle per call: the process runs one statement at a time.
 */
export function withoutWaiting<T>(dbs: Db[], fn: () => T): T {
  const saved = dbs.map((d) => d.pragma('busy_timeout', { simple: true }) as number);
  for (const d of dbs) d.pragma('busy_timeout = 0');
  try {
    return fn();
  } finally {
    dbs.forEach((d, i) => d.pragma(`busy_timeout = ${saved[i]}`));
  }
}

/**
 * `fn` without busy waiting, retried with a growing pause between tries (the event loop
 * serves everyone else meanwhile) until it gets the lock or `budgetMs` has passed; then
 * StoreBusyError. `fn` must be a whole transaction, so a refused try has written nothing.
 */
export async function retryWhileBusy<T>(dbs: Db[], fn: () => T, budgetMs: number): Promise<T> {
  const deadline = performance.now() + budgetMs;
  for (let pause = 2; ; pause = Math.min(pause * 2, 100)) {
    try {
      return withoutWaiting(dbs, fn);
    } catch (e) {
      if (!isBusy(e)) throw e;
      if (performance.now() + pause > deadline) throw new StoreBusyError(`database locked by another process for more than ${budgetMs} ms`);
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}
