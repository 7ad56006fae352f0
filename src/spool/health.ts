import { statfsSync } from 'node:fs';

/** The spool's own probe of its store: can a write transaction begin now, without waiting? */
export interface WriteProbe {
  writable(now: number): Promise<boolean>;
}

export interface SpoolState {
  ok: boolean;
  detail: string;
}

// A second is fresh enough for a disk filling up, and keeps statfs off the per-MAIL path.
const STATFS_TTL_MS = 1000;

const mb = (n: number) => `${(n / 1_048_576).toFixed(1)} MB`;

/** The operator's words for why a commit failed; the SQLite codes are in the error log line. */
function why(e: unknown): string {
  const code = String((e as { code?: unknown }).code ?? '');
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'database locked by another process past its timeout';
  if (code === 'SQLITE_FULL' || code === 'ENOSPC') return 'disk full';
  if (code.startsWith('SQLITE_IOERR') || code === 'EIO') return 'I/O error writing the database';
  if (code === 'SQLITE_READONLY' || code === 'EROFS') return 'database is read-only';
  return (e as Error).message ?? String(e);
}

/**
 * Can the spool take a message now? Two sources: free space in data_dir against what one
 * message may need (Postfix refuses mail below 1.5 × message_size_limit free, and so do we,
 * at MAIL FROM, with 452 4.3.1), and the last commit, which failed for a reason statfs cannot
 * see (a lock held past busy_timeout, an I/O error). A failed commit is forgotten at the next
 * successful one, or when a probe commits a write again: /healthz must recover by
 * itself, not only when a client happens to send.
 */
export class SpoolHealth {
  private failure: string | null = null;
  private free: { bytes: number | null; inodes: boolean; at: number } | null = null;

  constructor(
    private readonly dataDir: string,
    /** Bytes one message may need: 1.5 × max_message_bytes. */
    private readonly needBytes: number,
    private readonly probe: WriteProbe,
  ) {}

  committed(): void {
    this.failure = null;
  }

  commitFailed(e: unknown): void {
    this.failure = why(e);
  }

  /** Free bytes for an unprivileged writer in data_dir (null where statfs cannot tell), and whether inodes are left. */
  private freeBytes(): { bytes: number | null; inodes: boolean } {
    const now = performance.now();
    if (!this.free || now - this.free.at > STATFS_TTL_MS) {
      let bytes: number | null = null;
      let inodes = true;
      try {
        const s = statfsSync(this.dataDir);
        bytes = s.bavail * s.bsize;
        // Some file systems report no inode figures at all (files = 0): not "none free".
        inodes = s.files === 0 || s.ffree > 0;
      } catch {
        // statfs cannot tell: the commit will.
      }
      this.free = { bytes, inodes, at: now };
    }
    return this.free;
  }

  /** Null when a message of the maximum size fits; else why not, for the log. */
  noRoom(): string | null {
    const { bytes, inodes } = this.freeBytes();
    if (!inodes) return 'data_dir has no free inodes';
    return bytes !== null && bytes < this.needBytes ? `data_dir has ${mb(bytes)} free, a message may need ${mb(this.needBytes)}` : null;
  }

  /** For /healthz: 503 while this says not ok. */
  async state(): Promise<SpoolState> {
    // statfs is read afresh here: a probe every few seconds costs nothing.
    this.free = null;
    const room = this.noRoom();
    if (room) return { ok: false, detail: `spool cannot write: disk full (${room})` };
    if (this.failure && (await this.probe.writable(Date.now()))) this.failure = null;
    if (this.failure) return { ok: false, detail: `spool cannot write: ${this.failure}` };
    return { ok: true, detail: 'ok' };
  }
}
