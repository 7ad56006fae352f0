import { AsyncResource } from 'node:async_hooks';

/**
 * Group commit: everything pushed in one event-loop turn is committed by one call (one
 * transaction, one fsync). If that call fails, the items are committed one by one, so a
 * single bad record cannot take its neighbours down with it. Used by the spool (new
 * messages) and by delivery (attempt outcomes).
 */
export class GroupCommit<T, R> {
  private pending: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  private scheduled = false;
  private readonly running = new Set<Promise<void>>();
  /**
   * setImmediate in the async context this object was made in, not the first pusher's: a
   * push from inside a store transaction must not make the whole batch part of it.
   */
  private readonly later = AsyncResource.bind((fn: () => void) => void setImmediate(fn));

  /**
   * `commit` writes a batch and returns one result per item, in order. A database locked by
   * another process is the store's to wait for (asynchronously, within its lock budget): a
   * commit that gives up fails its items, which then have been promised nothing.
   */
  constructor(
    private readonly commit: (items: T[]) => R[] | Promise<R[]>,
    /** Tells a failure that would fail every item alike (a lock timeout), which is not retried one by one. */
    private readonly wholesale: (e: unknown) => boolean = () => false,
  ) {}

  push(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        this.later(() => void this.flush());
      }
    });
  }

  /** Commits what is pending now and waits for every commit under way (the spool's close). */
  async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length) {
      const run = this.write(batch);
      this.running.add(run);
      void run.finally(() => this.running.delete(run));
    }
    await Promise.all([...this.running]);
  }

  private async write(batch: typeof this.pending): Promise<void> {
    let results: R[];
    try {
      results = await this.commit(batch.map((b) => b.item));
    } catch (e) {
      if (batch.length === 1 || this.wholesale(e)) {
        for (const b of batch) b.reject(e);
        return;
      }
      for (const b of batch) {
        try {
          b.resolve((await this.commit([b.item]))[0]!);
        } catch (e2) {
          b.reject(e2);
        }
      }
      return;
    }
    batch.forEach((b, i) => b.resolve(results[i]!));
  }
}
