import type { NewMessage, QueueState } from '../domain/types.js';
import { GroupCommit } from '../store/group-commit.js';
import type { Store } from '../store/index.js';
import { StoreBusyError } from '../store/db.js';
import type { SpoolHealth } from './health.js';

/**
 * The only writer of new messages into the queue (Postfix's cleanup). accept() resolves
 * once the message and its envelope are committed and on disk (the store's write verbs resolve
 * only after an fsync that covers them, store/wal-sync.ts): the caller may then say 250. Messages that arrive in the same event-loop turn share one
 * transaction and one fsync (group commit).
 */
export class Spool {
  private closed = false;
  private readonly committed: ((msgs: NewMessage[]) => void)[] = [];
  private readonly group: GroupCommit<NewMessage, true>;

  constructor(
    private readonly queue: Store['queue'],
    /** Told of every commit's outcome, for /healthz. */
    private readonly health?: SpoolHealth,
    /** This node's name, recorded with each message it accepts. */
    private readonly node: string | null = null,
  ) {
    // A database locked by another process (a backup, an admin's long transaction) makes the
    // commit wait its turn asynchronously, up to 5 s (the store's lock budget), then 451.
    this.group = new GroupCommit(
      async (msgs) => {
        await this.queue.insertMany(this.node === null ? msgs : msgs.map((m) => ({ ...m, acceptedBy: m.acceptedBy ?? this.node })));
        this.notify(msgs);
        return msgs.map(() => true as const);
      },
      (e) => e instanceof StoreBusyError,
    );
  }

  /** Called after each commit with the messages it made durable: delivery wakes on it. */
  onCommit(fn: (msgs: NewMessage[]) => void): void {
    this.committed.push(fn);
  }

  private notify(msgs: NewMessage[]): void {
    for (const fn of this.committed) {
      try {
        fn(msgs);
      } catch {
        // A listener's trouble must not turn a durable accept into a failed one.
      }
    }
  }

  async accept(msg: NewMessage): Promise<void> {
    if (this.closed) throw new Error('spool is closed');
    try {
      await this.group.push(msg);
    } catch (e) {
      this.health?.commitFailed(e);
      throw e;
    }
    this.health?.committed();
  }

  /** Commits what is pending and refuses anything further. */
  async close(): Promise<void> {
    this.closed = true;
    await this.group.flush();
  }
}

export type { QueueState };
