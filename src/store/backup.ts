import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, realpathSync, renameSync, rmSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';
import { SCHEMA_VERSION } from './sql.js';
import { syncDir } from './wal-sync.js';

/** Why a backup was not written; the CLI words each one (it knows the option names). */
export type BackupRefusal =
  /** dest exists and overwrite was not asked for. */
  | { kind: 'exists' }
  /** dest is the live database or one of its -wal, -shm, -journal files. */
  | { kind: 'live'; live: string }
  | { kind: 'directory' }
  | { kind: 'no-parent'; dir: string }
  /** There is no database in the data dir to copy. */
  | { kind: 'no-source'; live: string }
  /** This user may not create files in dest's directory (EACCES, EPERM, EROFS). */
  | { kind: 'unwritable'; dir: string; code: string }
  /** SQLite could not open the live database (permissions, most often). */
  | { kind: 'cannot-open'; live: string; reason: string }
  /** The copy fails integrity_check (so does the live database: the copy is page for page). */
  | { kind: 'damaged'; problem: string };

export class BackupRefused extends Error {
  override name = 'BackupRefused';
  constructor(readonly refusal: BackupRefusal) {
    super(refusal.kind);
  }
}

export interface BackupResult {
  /** The absolute path written. */
  file: string;
  bytes: number;
  schemaVersion: number;
}

/** The live database as openDb names it, and the files SQLite keeps beside it. */
function liveFiles(dataDir: string): { db: string; all: string[] } {
  const db = path.join(dataDir, 'postern.db');
  return { db, all: [db, `${db}-wal`, `${db}-shm`, `${db}-journal`] };
}

const statOrNull = (p: string): Stats | null => {
  try {
    return statSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
};

/** The same file by name (through symlinked directories) or, when both exist, by inode (a hard link, a symlink). */
function sameFile(a: string, aStat: Stats | null, b: string): boolean {
  const canon = (p: string) => {
    try {
      return path.join(realpathSync(path.dirname(p)), path.basename(p));
    } catch {
      return path.resolve(p);
    }
  };
  if (canon(a) === canon(b)) return true;
  const bStat = aStat && statOrNull(b);
  return Boolean(aStat && bStat && aStat.dev === bStat.dev && aStat.ino === bStat.ino);
}

/**
 * An online copy of the SQLite store in dataDir to dest (absolute), through SQLite's backup
 * API: pages read inside one read transaction of the live database, so the copy is one
 * consistent moment including what still sits in the WAL (a `cp postern.db` is not: most
 * recent commits live in postern.db-wal until a checkpoint). In WAL mode a reader does not
 * block the relay's writers, so mail keeps being accepted meanwhile.
 *
 * Written to a temporary file beside dest, checked, fsynced, then put in place in one step:
 * an interrupted run never leaves a half-written dest, nor replaces a good older backup with
 * a damaged copy.
 */
export async function backupSqlite(dataDir: string, dest: string, opts: { overwrite: boolean }): Promise<BackupResult> {
  const live = liveFiles(dataDir);
  const destStat = statOrNull(dest);
  if (live.all.some((f) => sameFile(dest, destStat, f))) throw new BackupRefused({ kind: 'live', live: live.db });
  if (destStat?.isDirectory()) throw new BackupRefused({ kind: 'directory' });
  if (destStat && !opts.overwrite) throw new BackupRefused({ kind: 'exists' });
  const dir = path.dirname(dest);
  if (!statOrNull(dir)?.isDirectory()) throw new BackupRefused({ kind: 'no-parent', dir });
  if (!statOrNull(live.db)) throw new BackupRefused({ kind: 'no-source', live: live.db });

  // Owner-only from the start: the copy holds password hashes and message bodies.
  const tmp = path.join(dir, `.${path.basename(dest)}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  try {
    closeSync(openSync(tmp, 'wx', 0o600));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (['EACCES', 'EPERM', 'EROFS'].includes(code)) throw new BackupRefused({ kind: 'unwritable', dir, code });
    throw e;
  }
  try {
    // Not openDb: that would create a missing database (and its directory) instead of refusing.
    let src: Database.Database;
    try {
      src = new Database(live.db, { fileMustExist: true, timeout: 5000 });
    } catch (e) {
      if (/^SQLITE_(CANTOPEN|PERM|READONLY|AUTH)/.test(String((e as { code?: unknown }).code))) throw new BackupRefused({ kind: 'cannot-open', live: live.db, reason: (e as Error).message });
      throw e;
    }
    try {
      // Every page in one step, so within one read transaction. better-sqlite3 copies 100
      // pages per turn of the event loop by default, and SQLite starts a backup over whenever
      // another connection writes between two steps: under steady mail a large database would
      // never finish.
      await src.backup(tmp, { progress: () => 0x7fffffff });
    } finally {
      src.close();
    }
    const schemaVersion = finishCopy(tmp);
    const fd = openSync(tmp, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    place(tmp, dest, opts.overwrite);
    // The rename itself reaches the disk only with its directory.
    syncDir(dir);
    return { file: dest, bytes: statSync(dest).size, schemaVersion };
  } finally {
    for (const f of [tmp, `${tmp}-journal`, `${tmp}-wal`, `${tmp}-shm`]) rmSync(f, { force: true });
  }
}

/**
 * The copy as a single self-contained file (rollback journal: it carries the live database's
 * WAL flag otherwise, and every open would create -wal and -shm beside it; a restored copy is
 * switched back to WAL by the relay), checked page by page. Returns its schema version.
 */
function finishCopy(file: string): number {
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma('journal_mode = DELETE');
    const problems = db.pragma('integrity_check') as Array<{ integrity_check: string }>;
    if (problems[0]?.integrity_check !== 'ok') {
      throw new BackupRefused({ kind: 'damaged', problem: problems.map((p) => p.integrity_check).slice(0, 3).join('; ') });
    }
    const hasSchema = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
    return hasSchema ? ((db.prepare(SCHEMA_VERSION).get() as { v: number | null }).v ?? 0) : 0;
  } finally {
    db.close();
  }
}

/** Without overwrite a hard link, which fails if dest appeared meanwhile; rename replaces it. */
function place(tmp: string, dest: string, overwrite: boolean): void {
  if (overwrite) return renameSync(tmp, dest);
  try {
    linkSync(tmp, dest);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new BackupRefused({ kind: 'exists' });
    // A file system without hard links: the check above stands, as it would for cp -n.
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
    if (statOrNull(dest)) throw new BackupRefused({ kind: 'exists' });
    renameSync(tmp, dest);
  }
}

