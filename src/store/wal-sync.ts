import { close, closeSync, fstatSync, fsync, fsyncSync, open, openSync } from 'node:fs';
import path from 'node:path';

type Fsync = (fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => void;

/**
 * The durable half of a commit on the store's main connection, done off the event loop.
 *
 * With synchronous=FULL, SQLite fsyncs the write-ahead log inside COMMIT, and better-sqlite3
 * runs COMMIT on the thread that serves every client: each one waited while the disk flushed
 * (16-18% of the relay's time under load). The main connection commits with synchronous=NORMAL
 * instead (COMMIT only writes the log; checkpoints still fsync the log before copying it and
 * the database after), and every store call that wrote waits, before it resolves, for an
 * fsync of the log that began after its commit, run in libuv's thread pool. So a 250 after
 * DATA still follows an fsync that covers its message, while the event loop serves others.
 * Calls that arrive while an fsync runs share the next one.
 *
 * - The log is found as SQLite finds it: next to the database file with symlinks resolved.
 *   Missing once something was written there, it is an error, never a silent no-op.
 * - After the log is opened (again), the first fsync also syncs its directory, so a log
 *   created since the last checkpoint cannot lose its name in a power cut.
 * - A failed fsync is final (as PostgreSQL's data_sync_retry = off): after EIO the kernel may
 *   have dropped the dirty pages and a later fsync would succeed over lost data, so every
 *   request from then on fails with the first error until the process restarts.
 * - close() makes whatever was written durable with one synchronous fsync, and closes the
 *   descriptor only once no fsync of it is under way.
 */
export class WalSync {
  private fd: number | null = null;
  /** The directory entry of a freshly opened log is not known to be on disk. */
  private dirPending = true;
  /** The fsync under way, and the one that will follow it (shared by every caller meanwhile). */
  private inFlight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private failure: Error | null = null;
  private closed = false;
  /** close() synced everything: fsyncs still under way answer their callers with success. */
  private coveredAtClose = false;
  /** fsyncs completed (tests: a write waits for one). */
  count = 0;

  constructor(
    /** The log: `<database file, symlinks resolved>-wal`. */
    private readonly file: string,
    /** fs.fsync; tests pass one that fails or waits. */
    private readonly fsyncFn: Fsync = fsync,
    /**
     * Told once, at the first failure: the store makes its connection refuse writes, so a
     * write after it writes nothing (else a client told 451 would see its retry delivered
     * twice: the refused copy was committed all the same).
     */
    private readonly onFail: (e: Error) => void = () => undefined,
  ) {
    // Opened now, not at the first write: an error the kernel reports once per open file must
    // find this descriptor already open.
    this.handle(false);
  }

  /** Resolves once an fsync of the log that began after this call has completed. */
  request(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    // The next one is already promised (and begins after this call): share it.
    if (this.queued) return this.queued;
    if (!this.inFlight) return this.start();
    // One is under way: it may have begun before the caller's commit, so the next one counts.
    this.queued = this.inFlight
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.start();
      });
    return this.queued;
  }

  /**
   * Makes everything written so far durable (synchronously: the store is closing) and lets the
   * descriptor go once no fsync of it is under way. Requests after this resolve at once (this
   * fsync covered them) or fail with the failure, if it failed.
   */
  close(): void {
    if (this.closed) return;
    if (!this.failure) {
      try {
        const fd = this.handle(false);
        if (fd !== null) {
          fsyncSync(fd);
          this.count++;
        }
      } catch (e) {
        this.fail(e);
      }
      if (this.fd !== null && this.dirPending && !this.failure) {
        try {
          syncDir(path.dirname(this.file));
          this.dirPending = false;
        } catch {
          // Opening or syncing the directory at close: the log's data is synced; its name was
          // synced by an earlier request unless none completed, which the next start's will.
        }
      }
    }
    this.closed = true;
    // Synced here: whatever an fsync under way would cover is on disk, so the descriptor goes
    // now (a data directory can be unmounted once the store is closed). That fsync may then
    // find it closed (EBADF) or reused: its callers are answered by this one, not by it.
    if (!this.failure) this.coveredAtClose = true;
    if (!this.inFlight || this.coveredAtClose) this.release();
  }

  private start(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.resolve();
    let fd: number;
    try {
      fd = this.handle()!; // never null after a write: a missing log throws
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    const dir = this.dirPending ? path.dirname(this.file) : null;
    const p = new Promise<void>((resolve, reject) => {
      // An error another fsync of the log saw (close()'s, on the same open file) counts here
      // too: the kernel reports a write-back error once per open file.
      const failed = (e: unknown) => reject(this.failure ?? this.fail(e));
      this.fsyncFn(fd, (e) => {
        if (this.coveredAtClose) return resolve();
        if (e || this.failure) return failed(e);
        if (!dir) {
          this.count++;
          return resolve();
        }
        syncDirectory(dir, this.fsyncFn, (e2, opening) => {
          // Not opening the directory (EMFILE in a connection storm) is this request's failure
          // alone: the next one tries again. Its fsync failing is final, as the log's.
          if (opening) return reject(new Error(`opening the directory of the store's write-ahead log ${dir} to fsync it failed: ${e2!.message}`));
          if (this.coveredAtClose) return resolve();
          if (e2 || this.failure) return failed(e2);
          if (this.fd === fd) this.dirPending = false;
          this.count++;
          resolve();
        });
      });
    });
    this.inFlight = p;
    const settle = () => {
      if (this.inFlight === p) this.inFlight = null;
      if (this.closed && !this.inFlight && !this.coveredAtClose) this.release();
    };
    p.then(settle, settle);
    return p;
  }

  private fail(e: unknown): Error {
    if (this.failure) return this.failure;
    this.failure = Object.assign(
      new Error(`fsync of the store's write-ahead log ${this.file} failed (${(e as Error).message}): what was written since the last good fsync may not be on disk; every write now fails until postern is restarted (check the disk)`),
      { code: (e as NodeJS.ErrnoException).code ?? 'EIO' },
    );
    try {
      this.onFail(this.failure);
    } catch {
      // The store may be closing: nothing is written through it any more either way.
    }
    return this.failure;
  }

  /** The failure that made every write fail, if one did. */
  get failed(): Error | null {
    return this.failure;
  }

  private release(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  /**
   * The log's descriptor: opened at the first need, and again should the file have been
   * replaced (SQLite deletes the log when the last connection to the database closes; the
   * store's own connection keeps it, so this is a safeguard). After a write the log must
   * exist; at close (`afterWrite` false) a missing one has nothing to sync: null.
   */
  private handle(afterWrite = true): number | null {
    if (this.fd !== null) {
      if (fstatSync(this.fd).nlink > 0) return this.fd;
      // Replaced: the old descriptor goes once no fsync of it is under way.
      const old = this.fd;
      this.fd = null;
      if (this.inFlight) void this.inFlight.then(() => closeSync(old), () => closeSync(old));
      else closeSync(old);
    }
    try {
      this.fd = openSync(this.file, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!afterWrite) return null;
      throw new Error(`the store's write-ahead log ${this.file} is missing after a write: is the database still in WAL mode, or was the data directory changed under the running process?`);
    }
    this.dirPending = true;
    return this.fd;
  }
}

/**
 * fsyncs a directory (its entries: a file created in it keeps its name after a power cut).
 * Some file systems refuse fsync on a directory (EINVAL), as backup.ts's syncDir allows: the
 * file's own data is synced, and there is nothing more to ask of them. `opening` says the
 * error was in opening the directory, not in its fsync.
 */
function syncDirectory(dir: string, fsyncFn: Fsync, cb: (e: NodeJS.ErrnoException | null, opening?: boolean) => void): void {
  open(dir, 'r', (e, fd) => {
    if (e) return cb(e, true);
    fsyncFn(fd, (e2) => close(fd, () => cb(e2?.code === 'EINVAL' ? null : e2)));
  });
}

/**
 * fsyncs a directory, synchronously: a file created or renamed in it keeps its name after a
 * power cut. Some file systems refuse fsync on a directory (EINVAL): the file's own data is
 * synced, and there is nothing more to ask of them. (backup.ts uses it after its rename.)
 */
export function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
  } finally {
    closeSync(fd);
  }
}
