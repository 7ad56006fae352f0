/**
 * Group commit: everything pushed in one event-loop turn is committed by one call (one
 * transaction, one fsync). If that call fails, the items are committed one by one, so a
 * single bad record cannot take its neighbours down with it. Used by the spool (new
 * messages) and by delivery (attempt outcomes).
 */
export class GroupCommit<T, R> {
  private pending: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  private scheduled = false;

  /** `commit` writes a batch and returns one result per item, in order. */
  constructor(private readonly commit: (items: T[]) => R[]) {}

  push(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Commits what is pending now (also called by the spool's close). */
  flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (!batch.length) return;
    let results: R[];
    try {
      results = this.commit(batch.map((b) => b.item));
    } catch (e) {
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
}
