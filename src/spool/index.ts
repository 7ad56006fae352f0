import { nodeName } from '../config/node.js';
import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import type { Store } from '../store/index.js';
import { SpoolHealth } from './health.js';
import { RedisLedger } from './ledger.js';
import { QuotaGate } from './quota.js';
import { Spool } from './spool.js';

/** The spool (the only writer of new messages) and its health for /healthz and MAIL FROM. */
export function startSpool(cfg: Config, deps: { store: Store }): { spool: Spool; health: SpoolHealth; stop(): Promise<void> } {
  // Postfix's rule: refuse mail while less than 1.5 × the largest message is free.
  const health = new SpoolHealth(cfg.server.data_dir, Math.ceil(1.5 * cfg.submission.max_message_bytes), deps.store.queue);
  const spool = new Spool(deps.store.queue, health, nodeName(cfg));
  return { spool, health, stop: () => spool.close() };
}

/**
 * Rate limits: the quota ledger decides queued or waiting at DATA; a timer hands waiting mail
 * on as quota frees (one drainer at a time across processes: a lease named by `owner`).
 */
export async function startQuota(
  cfg: Config,
  deps: { store: Store; clock: Clock; log: Logger; owner: string; onReleased: (ids: string[]) => void },
): Promise<{ quota: QuotaGate; pause(): void; stop(): Promise<void> }> {
  const { store, clock, log } = deps;
  const quota = new QuotaGate(
    store.limits,
    {
      messagesPerHour: cfg.limits.messages_per_hour,
      recipientsPerHour: cfg.limits.recipients_per_hour,
      recipientsPerDay: cfg.limits.recipients_per_day,
      ceiling: cfg.limits.ceiling,
      enabled: cfg.limits.enabled,
    },
    clock,
    log,
    cfg.limits.redis ? await RedisLedger.connect(cfg.limits.redis) : undefined,
    { leases: store.leases, owner: deps.owner },
  );
  const drainer = setInterval(() => {
    quota
      .drain()
      .then((ids) => {
        if (ids.length) deps.onReleased(ids);
      })
      .catch((e: unknown) => log.error({ event: 'quota.error', err: (e as Error).message }));
  }, cfg.limits.drain_interval_seconds * 1000);
  drainer.unref();
  return {
    quota,
    /** No further drains (one under way finishes; its lease is given back). */
    pause: () => clearInterval(drainer),
    async stop() {
      clearInterval(drainer);
      await quota.ledger.close();
    },
  };
}
