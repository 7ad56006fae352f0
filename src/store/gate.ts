import { AsyncLocalStorage } from 'node:async_hooks';
import { isBusy, LOCK_BUDGET_MS, StoreBusyError } from './db.js';

/**
 * The way in to one SQLite store for everything outside store/: each repository verb runs
 * through run(), each transaction through exclusive().
 *
 * - A database locked by another process (an admin's long transaction, a backup, another
 *   `postern serve`) never holds the event loop: the connections have no busy wait, and a verb
 *   that finds the lock taken is tried again after a growing pause, every other client being
 *   served meanwhile, until it gets through or LOCK_BUDGET_MS passed (StoreBusyError; the
 *   submission path answers 451 4.3.0). A verb is one statement or one synchronous
 *   transaction, so a refused try has written nothing and can simply run again.
 * - An async transaction (store.tx) holds the gate: verbs from elsewhere wait until it commits
 *   or rolls back, so they can never land inside it; verbs called from within it (same async
 *   context) run at once, as part of it.
 */
export class Gate {
  private holder: object | null = null;
  private waiters: Array<() => void> = [];
  private readonly context = new AsyncLocalStorage<object>();

  constructor(private readonly budgetMs = LOCK_BUDGET_MS) {}

  /** True while a transaction other than the caller's holds the store. */
  private blocked(): boolean {
    return this.holder !== null && this.context.getStore() !== this.holder;
  }

  private released(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Runs a synchronous verb (or a verb that returns a promise of its own) when the store is free. */
  run<T>(fn: () => T): Promise<Awaited<T>> {
    if (this.blocked()) return this.released().then(() => this.run(fn));
    // Inside a transaction, a lock in the way is the transaction's own (a verb on the second
    // connection): waiting cannot help, so say so at once.
    return this.attempt(fn, this.holder !== null);
  }

  /** `fn` now; on another process's lock, again after growing pauses (or at once an error, `ownLock`). */
  private attempt<T>(fn: () => T, ownLock: boolean): Promise<Awaited<T>> {
    try {
      return Promise.resolve(fn()) as Promise<Awaited<T>>;
    } catch (e) {
      if (!isBusy(e)) return Promise.reject(e);
      if (ownLock) return Promise.reject(new Error('a verb on the bookkeeping connection (ledger, login counters, leases, delivery outcomes) cannot run inside store.tx'));
      return this.retry(fn, performance.now() + this.budgetMs);
    }
  }

  private async retry<T>(fn: () => T, deadline: number): Promise<Awaited<T>> {
    for (let pause = 2; ; pause = Math.min(pause * 2, 100)) {
      if (performance.now() + pause > deadline) throw new StoreBusyError(`database locked by another process for more than ${this.budgetMs} ms`);
      await new Promise((r) => setTimeout(r, pause));
      while (this.blocked()) await this.released();
      try {
        return (await fn()) as Awaited<T>;
      } catch (e) {
        if (!isBusy(e)) throw e;
      }
    }
  }

  /**
   * Runs `fn` holding the store: `begin` (tried like a verb while another process holds the
   * lock), then `fn`, then `commit`, or `rollback` if anything threw.
   */
  async exclusive<T>(begin: () => void, fn: () => Promise<T>, commit: () => void, rollback: () => void): Promise<T> {
    if (this.context.getStore() === this.holder && this.holder) return fn(); // nested: part of the outer one
    while (this.holder) await this.released();
    const token = {};
    this.holder = token;
    try {
      return await this.context.run(token, async () => {
        // BEGIN waits for another process's lock like any verb; only after it is the lock ours.
        await this.attempt(begin, false);
        try {
          const result = await fn();
          commit();
          return result;
        } catch (e) {
          // Also after a failed COMMIT: the connection must not stay inside the transaction.
          rollback();
          throw e;
        }
      });
    } finally {
      this.holder = null;
      const w = this.waiters;
      this.waiters = [];
      for (const wake of w) wake();
    }
  }
}

/** A repository as the rest of Postern sees it: every verb returns a promise. */
export type Async<T> = {
  [K in keyof T as T[K] extends (...args: never[]) => unknown ? K : never]: T[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never;
};

/** The methods of `repo` (its class's and its own function properties), each run through the gate. */
export function gated<T extends object>(repo: T, gate: Gate): Async<T> {
  const out: Record<string, unknown> = {};
  const names = new Set<string>();
  for (let p: object | null = repo; p && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) {
    for (const n of Object.getOwnPropertyNames(p)) if (n !== 'constructor') names.add(n);
  }
  for (const n of names) {
    const f = (repo as Record<string, unknown>)[n];
    if (typeof f !== 'function') continue;
    out[n] = (...args: unknown[]) => gate.run(() => (f as (...a: unknown[]) => unknown).apply(repo, args));
  }
  return out as Async<T>;
}
