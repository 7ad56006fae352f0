import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;

/**
 * Opens the state database. WAL lets the CLI read and write while the server runs;
 * synchronous=FULL makes every commit reach the disk before it returns, which is what
 * lets a 250 after DATA promise that the message survives a crash.
 */
export function openDb(dataDir: string, opts: { synchronous?: 'FULL' | 'NORMAL' } = {}): Db {
  mkdirSync(dataDir, { recursive: true, mode: 0o750 });
  const db = new Database(path.join(dataDir, 'postern.db'));
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
