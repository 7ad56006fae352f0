import type { NewMessage, QueueState } from '../domain/types.js';
import type { QueueRepo } from '../store/queue.js';

interface Pending {
  msg: NewMessage;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * The only writer of new messages into the queue (Postfix's cleanup). accept() resolves
 * once the message and its envelope are committed with synchronous=FULL, that is, on disk:
 * the caller may then say 250. Messages that arrive in the same event-loop turn share one
 * transaction and one fsync (group commit).
 */
export class Spool {
  private pending: Pending[] = [];
  private scheduled = false;
  private closed = false;
  private readonly committed: ((msgs: NewMessage[]) => void)[] = [];

  constructor(private readonly queue: QueueRepo) {}

  /** Called after each commit with the messages it made durable: delivery wakes on it. */
  onCommit(fn: (msgs: NewMessage[]) => void): void {
    this.committed.push(fn);
  }

  private notify(msgs: NewMessage[]): void {
    if (!msgs.length) return;
    for (const fn of this.committed) {
      try {
        fn(msgs);
      } catch {
        // A listener's trouble must not turn a durable accept into a failed one.
      }
    }
  }

  accept(msg: NewMessage): Promise<void> {
    if (this.closed) return Promise.reject(new Error('spool is closed'));
    return new Promise((resolve, reject) => {
      this.pending.push({ msg, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (!batch.length) return;
    try {
      this.queue.insertMany(batch.map((p) => p.msg));
    } catch (e) {
      // One bad message must not fail its neighbours: retry them one by one.
      if (batch.length > 1) {
        const ok: NewMessage[] = [];
        for (const p of batch) {
          try {
            this.queue.insertMany([p.msg]);
            ok.push(p.msg);
            p.resolve();
          } catch (e2) {
            p.reject(e2);
          }
        }
        this.notify(ok);
        return;
      }
      batch[0]!.reject(e);
      return;
    }
    for (const p of batch) p.resolve();
    this.notify(batch.map((p) => p.msg));
  }

  /** Commits what is pending and refuses anything further. */
  close(): void {
    this.closed = true;
    this.flush();
  }
}

export type { QueueState };
