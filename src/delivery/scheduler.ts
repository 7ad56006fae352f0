import { AsyncResource } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import { ClaimLostError } from '../store/delivery.js';
import type { Store } from '../store/index.js';

/** Pause after an attempt that failed locally (bug, unreadable body, DB trouble). */
const LOCAL_ERROR_RETRY_MS = 5 * 60_000;
/** How soon a scan looks again at a message that became due while it ran. */
const DUE_AGAIN_MS = 50;

export interface SchedulerOptions {
  repo: Store['delivery'];
  attempt: (id: string) => Promise<void>;
  clock: Clock;
  log: Logger;
  maxConcurrent: number;
  /** Rescan at least this often (a CLI "queue retry" in another process changes the DB). */
  scanMs: number;
  /** This process's name in its claims. */
  owner: string;
  /** How long a claim holds without renewal; renewed every third of it while attempts run. */
  leaseMs: number;
}

/**
 * Picks due 'queued' messages and runs one attempt each (Postfix's qmgr). It holds no state
 * that is not in the database: what is due is next_attempt_at, what is left is the
 * recipients' status, so after kill -9 the next start carries on where the DB says.
 *
 * Work is taken by claim, not by peeking: each message is claimed atomically in the database
 * with this process as owner and a lease, renewed while its attempt runs and given back once
 * the outcome is committed. Several processes on one database therefore never attempt one
 * message at once, and a message whose claimant died is taken over when the lease lapses.
 * The set of messages in flight only keeps this process from starting one twice.
 *
 * It never blocks the event loop for long: each scan is one indexed query for at most
 * maxConcurrent ids, sending is asynchronous and outcomes are group-committed, so a client
 * waiting for its 250 waits for milliseconds, not for a delivery. Delivery still takes CPU
 * from submission on a busy host (measured in docs/delivery.md); lower
 * max_concurrent_messages to give it less.
 *
 * Emits 'attempted' (id) after each attempt, for tests and the benchmark to await.
 */
export class DeliveryScheduler extends EventEmitter {
  private readonly inflight = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private renewer: NodeJS.Timeout | null = null;
  private kicked = false;
  /** In the context the scheduler was made in: a wake from inside a store transaction must not make its scan part of it. */
  private readonly later = AsyncResource.bind((fn: () => void) => void setImmediate(fn));
  private running = false;

  constructor(private readonly o: SchedulerOptions) {
    super();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.renewer = setInterval(() => this.renew(), Math.max(this.o.leaseMs / 3, 10));
    this.renewer.unref();
    this.o.log.info({ event: 'delivery.scheduler.started', max_concurrent: this.o.maxConcurrent });
    this.wake();
  }

  /** New mail or a retry: look at the queue now instead of at the next timer. */
  wake(): void {
    if (!this.running || this.kicked) return;
    this.kicked = true;
    this.later(() => {
      this.kicked = false;
      void this.pump();
    });
  }

  get inFlight(): number {
    return this.inflight.size;
  }

  /** Scans and starts attempts; a call while a scan runs makes it scan once more, never twice at once. */
  private pump(): Promise<void> {
    if (this.pumping) {
      this.again = true;
      return this.pumping;
    }
    this.pumping = (async () => {
      do {
        this.again = false;
        await this.scan();
      } while (this.again && this.running);
    })().finally(() => {
      this.pumping = null;
    });
    return this.pumping;
  }

  private pumping: Promise<void> | null = null;
  private again = false;

  private async scan(): Promise<void> {
    if (!this.running) return;
    const free = this.o.maxConcurrent - this.inflight.size;
    if (free > 0) {
      let ids: string[] = [];
      try {
        const now = this.o.clock.now();
        ids = (await this.o.repo.claimDue(this.o.owner, now, now + this.o.leaseMs, free)).filter((id) => !this.inflight.has(id));
      } catch (e) {
        this.o.log.error({ event: 'delivery.scheduler.error', err: (e as Error).message });
      }
      for (const id of ids) {
        const p = this.o
          .attempt(id)
          .catch(async (e: unknown) => {
            // Another process took the message over after this one's claim lapsed: its outcome
            // is the one that counts, and this attempt leaves everything to it.
            if (e instanceof ClaimLostError) {
              this.o.log.warn({ event: 'delivery.claim_lost', queue_id: id });
              return;
            }
            // A local fault (not a remote answer): the message must not stay due, or the
            // scheduler would spin on it. It comes back after a pause, recipients untouched.
            const retryAt = this.o.clock.now() + LOCAL_ERROR_RETRY_MS;
            this.o.log.error({ event: 'delivery.error', queue_id: id, err: (e as Error).message, next_attempt: new Date(retryAt).toISOString() });
            // The DB itself failing: the next scan tries again.
            await this.o.repo.postpone(id, retryAt).catch(() => undefined);
          })
          .finally(async () => {
            // attempt() resolves after its outcome is committed: only now may another take it.
            // A claim not given back lapses by itself.
            await this.o.repo.releaseClaim(id, this.o.owner).catch(() => undefined);
            this.inflight.delete(id);
            this.emit('attempted', id);
            this.wake();
          });
        this.inflight.set(id, p);
      }
    }
    await this.arm();
  }

  private renew(): void {
    if (!this.inflight.size) return;
    this.o.repo
      .renewClaims([...this.inflight.keys()], this.o.owner, this.o.clock.now() + this.o.leaseMs)
      .catch((e: unknown) => this.o.log.error({ event: 'delivery.scheduler.error', err: (e as Error).message }));
  }

  private async arm(): Promise<void> {
    let delay = this.o.scanMs;
    try {
      const next = await this.o.repo.nextDueAt();
      const now = this.o.clock.now();
      if (next !== null && next > now) delay = Math.min(delay, next - now);
      // Due already, yet not claimed by this scan: with no free slot it waits for a finishing
      // attempt (which wakes the scheduler); with one, it became due since the claim was asked
      // (another process's claim lapsed in between, or its row was being claimed by another
      // node), so look again soon rather than at the next scan, up to scan_interval away.
      else if (next !== null && this.inflight.size < this.o.maxConcurrent) delay = Math.min(delay, DUE_AGAIN_MS);
    } catch {
      // The next scan retries.
    }
    if (this.timer) clearTimeout(this.timer);
    if (!this.running) return;
    this.timer = setTimeout(() => void this.pump(), Math.max(delay, 10));
    this.timer.unref();
  }

  /** Runs every attempt due now, and those that become due meanwhile (DSNs), to the end. */
  async drain(): Promise<void> {
    for (;;) {
      await this.pump();
      if (!this.inflight.size) return;
      await Promise.all(this.inflight.values());
    }
  }

  /** Stops picking new work and waits for attempts in flight (their outcome is recorded). */
  async stop(): Promise<void> {
    this.running = false;
    await this.pumping;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await Promise.all(this.inflight.values());
    if (this.renewer) clearInterval(this.renewer);
    this.renewer = null;
    this.o.log.info({ event: 'delivery.scheduler.stopped' });
  }
}
