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
  private holder: { open: boolean } | null = null;
  private waiters: Array<() => void> = [];
  private readonly context = new AsyncLocalStorage<{ open: boolean }>();

  constructor(
    private readonly budgetMs = LOCK_BUDGET_MS,
    /**
     * What makes a commit durable when COMMIT itself does not fsync (wal-sync.ts): a verb that
     * wrote, outside a transaction, and a transaction, after its COMMIT, resolve only once it has.
     */
    private readonly durable?: Durability,
  ) {}

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
    // Not blocked with a holder: the caller's own transaction. A lock in the way is then the
    // transaction's own (a verb on the second connection): waiting cannot help, so say so at
    // once; and its writes are made durable once, after its COMMIT.
    // A verb its transaction started without waiting for, running after COMMIT (or ROLLBACK)
    // while the holder is still being let go, is on its own: autocommit, and made durable.
    const inTransaction = this.holder !== null && this.holder.open;
    if (!this.durable || inTransaction) return this.attempt(fn, inTransaction);
    const before = this.durable.writes(); // before fn runs (attempt runs it at once)
    return this.durably(this.attempt(fn, false), before);
  }

  /** `p`, resolved (or rejected) only after its writes, if it made any, are on disk. */
  private async durably<T>(p: Promise<T>, before: number): Promise<T> {
    try {
      return await p;
    } catch (e) {
      throw this.refusal(e);
    } finally {
      // A verb that failed after writing (two statements, the second refused) syncs too. A
      // sync that fails fails the verb: nothing it wrote was promised.
      if (this.durable!.writes() !== before) await this.durable!.sync();
    }
  }

  /**
   * A write refused because the connection was made read-only after a failed fsync says so by
   * that failure, not by SQLite's "attempt to write a readonly database".
   */
  private refusal(e: unknown): unknown {
    const failed = this.durable?.failed();
    return failed && String((e as { code?: unknown } | null)?.code ?? '').startsWith('SQLITE_READONLY') ? failed : e;
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
    if (this.holder?.open && this.context.getStore() === this.holder) return fn(); // nested: part of the outer one
    while (this.holder) await this.released();
    const token = { open: true };
    this.holder = token;
    const before = this.durable?.writes() ?? 0;
    let result: T;
    try {
      result = await this.context.run(token, async () => {
        // BEGIN waits for another process's lock like any verb; only after it is the lock ours.
        await this.attempt(begin, false);
        try {
          const value = await fn();
          token.open = false;
          commit();
          return value;
        } catch (e) {
          token.open = false;
          // Also after a failed COMMIT: the connection must not stay inside the transaction.
          rollback();
          throw e;
        }
      });
    } catch (e) {
      throw this.refusal(e);
    } finally {
      this.holder = null;
      const w = this.waiters;
      this.waiters = [];
      for (const wake of w) wake();
    }
    // Committed: durable before the caller hears so (others may use the store meanwhile).
    if (this.durable && this.durable.writes() !== before) await this.durable.sync();
    return result;
  }
}

/** See Gate's constructor and wal-sync.ts. */
export interface Durability {
  /** The failure after which the connection refuses writes (query_only), if there was one. */
  failed(): Error | null;
  /** Writes made so far on the connection whose commits do not fsync. */
  writes(): number;
  /** Resolves once everything committed before the call is on disk. */
  sync(): Promise<void>;
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
