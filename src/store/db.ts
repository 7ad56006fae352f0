import Database from 'better-sqlite3';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;

/**
 * Executions of statements that may write, per connection (wal-sync.ts: a store call that
 * wrote on the main connection waits for an fsync of the log before it resolves).
 */
const writeCounts = new WeakMap<Db, { n: number }>();
export function writesOn(db: Db): { n: number } {
  let c = writeCounts.get(db);
  if (!c) writeCounts.set(db, (c = { n: 0 }));
  return c;
}

/**
 * Opens the state database. WAL lets the CLI read and write while the server runs;
 * synchronous=FULL makes every commit reach the disk before it returns. openStore runs the
 * migrations so, then turns the main connection to NORMAL with the log's fsync done off the
 * event loop before each write resolves (wal-sync.ts): either way a 250 after DATA promises
 * that the message survives a crash.
 */
export function openDb(dataDir: string, opts: { synchronous?: 'FULL' | 'NORMAL' } = {}): Db {
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const file = path.join(dataDir, 'postern.db');
  privateFiles(file);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${opts.synchronous ?? 'FULL'}`);
  db.pragma('foreign_keys = ON');
  // While the schema is brought up to date, wait for another process doing the same. The
  // store then turns this off: its gate waits for locks asynchronously (see gate.ts).
  db.pragma('busy_timeout = 5000');
  // Repositories prepare their SQL where they use it; compiling the same statement on every
  // call cost 7% of submission CPU. Statements are reusable (nothing here iterates), and the
  // set of distinct SQL texts is fixed by the code, so the cache stays small. The one rule
  // this imposes: never call .pluck(), .raw(), .expand() or .bind() on a prepared statement;
  // they change it for every other caller of the same SQL.
  const prepare = db.prepare.bind(db);
  const cache = new Map<string, ReturnType<typeof prepare>>();
  const writes = writesOn(db);
  db.prepare = ((sql: string) => {
    let st = cache.get(sql);
    if (!st) {
      st = prepare(sql);
      if (!st.readonly) counted(st, writes);
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
 * Counts every execution of a statement that may write (run; get, all and iterate for
 * RETURNING). Statements inside db.transaction() count too; BEGIN and COMMIT (db.exec) need
 * not: a transaction that wrote ran at least one counted statement.
 */
function counted(st: Database.Statement, writes: { n: number }): void {
  for (const m of ['run', 'get', 'all', 'iterate'] as const) {
    const f = (st[m] as (...a: unknown[]) => unknown).bind(st);
    (st as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => {
      writes.n++;
      return f(...a);
    };
  }
}
