/**
 * Group commit: everything pushed in one event-loop turn is committed by one call (one
 * transaction, one fsync). If that call fails, the items are committed one by one, so a
 * single bad record cannot take its neighbours down with it. Used by the spool (new
 * messages) and by delivery (attempt outcomes).
 */
export class GroupCommit<T, R> {
  private pending: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void; since: number }> = [];
  private scheduled = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private pause = 2;

  /**
   * `commit` writes a batch and returns one result per item, in order. With `busy`, a commit
   * that finds the database locked (busy(e)) wrote nothing and is tried again after a growing
   * pause, the event loop serving everyone meanwhile; an item waiting longer than `budgetMs`
   * fails with that error (the spool then answers 451, having promised nothing).
   */
  constructor(
    private readonly commit: (items: T[]) => R[],
    private readonly busy?: { is: (e: unknown) => boolean; budgetMs: number },
  ) {}

  push(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      this.pending.push({ item, resolve, reject, since: performance.now() });
      if (!this.scheduled && !this.retryTimer) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits what is pending now (also called by the spool's close). */
  flush(): void {
    this.scheduled = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const batch = this.pending;
    this.pending = [];
    if (!batch.length) return;
    let results: R[];
    try {
      results = this.commit(batch.map((b) => b.item));
      this.pause = 2;
    } catch (e) {
      if (this.busy?.is(e)) return this.later(batch, e);
      if (batch.length === 1) return batch[0]!.reject(e);
      for (const b of batch) {
        try {
          b.resolve(this.commit([b.item])[0]!);
        } catch (e2) {
          b.reject(e2);
        }
      }
      return;
    }
    batch.forEach((b, i) => b.resolve(results[i]!));
  }

  /** The database was locked: what may still wait goes back to the head of the queue. */
  private later(batch: typeof this.pending, e: unknown): void {
    const now = performance.now();
    const keep = batch.filter((b) => {
      if (now - b.since < this.busy!.budgetMs) return true;
      b.reject(e);
      return false;
    });
    this.pending = [...keep, ...this.pending];
    if (!this.pending.length) return;
    this.retryTimer = setTimeout(() => this.flush(), this.pause);
    this.pause = Math.min(this.pause * 2, 100);
  }
}
