import { closeSync, fstatSync, fsync, fsyncSync, openSync } from 'node:fs';

/**
 * The durable half of a commit on the main connection, off the event loop. SQLite's
 * synchronous=FULL fsyncs the write-ahead log inside COMMIT, and better-sqlite3 runs COMMIT
 * on the main thread: every client waited while the disk flushed (a sixth of the relay's time
 * under load). The connection runs synchronous=NORMAL instead (COMMIT only writes the log) and
 * each store call that wrote waits, before it resolves, for an fsync of the log run in libuv's
 * thread pool: a 250 still follows an fsync that covers its message, as before, while the
 * event loop serves other clients. Calls that arrive while an fsync runs share the next one.
 */
export class WalSync {
  private fd: number | null = null;
  /** The fsync under way, and the one that will follow it (shared by every caller meanwhile). */
  private inFlight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  /** fsyncs completed, for tests. */
  count = 0;

  constructor(private readonly file: string) {}

  /** Resolves once an fsync that began after this call has completed. */
  request(): Promise<void> {
    if (!this.inFlight) return this.start();
    // One is under way: it may have begun before this caller's write, so the next one counts.
    this.queued ??= this.inFlight
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.start();
      });
    return this.queued;
  }

  /** A synchronous fsync (after the migrations at open, before anything else runs). */
  now(): void {
    const fd = this.handle();
    if (fd !== null) fsyncSync(fd);
    this.count++;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private start(): Promise<void> {
    const p = new Promise<void>((resolve, reject) => {
      const fd = this.handle();
      if (fd === null) return resolve();
      fsync(fd, (e) => {
        if (e) return reject(e);
        this.count++;
        resolve();
      });
    });
    this.inFlight = p;
    const done = () => {
      if (this.inFlight === p) this.inFlight = null;
    };
    p.then(done, done);
    return p;
  }

  /**
   * The log's descriptor: opened at the first need, opened again should the file have been
   * replaced (SQLite deletes the log when the last connection to the database closes).
   */
  private handle(): number | null {
    if (this.fd !== null && fstatSync(this.fd).nlink > 0) return this.fd;
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    try {
      this.fd = openSync(this.file, 'r');
    } catch (e) {
      // No log yet: nothing was written through it, so nothing waits to be made durable.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    return this.fd;
  }
}
