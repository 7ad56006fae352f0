import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { Config } from './config/schema.js';
import { preflight, type Relay, type WorkerRole } from './main.js';
import { startMetricsServer, type MetricsServer } from './obs/http.js';
import { createLogger, type Logger } from './obs/log.js';
import { parseListen } from './protocol/listen.js';
import { ConnectionTable, type Admission } from './submission/connections.js';

/**
 * [server] workers: the listeners served by several processes (node:cluster), so a node uses
 * every core. The primary forks the workers and keeps them; each worker is a whole relay on
 * the shared store, but for:
 * - connections: the primary accepts them and hands them to the workers in turn (cluster's
 *   round robin), and keeps the node's connection table, so max_clients and
 *   max_connections_per_ip count over all workers as the README says;
 * - delivery: worker 0 alone runs it (its pacing per destination and its connection pools are
 *   per process); the others tell it, through the primary, when they accepted mail;
 * - /metrics and /healthz: served by the primary, the workers' figures summed
 *   (prom-client's cluster aggregation), healthy when every worker is;
 * - signals: SIGHUP and SIGTERM to the primary reach every worker (systemd sends them to the
 *   main process); a worker that dies is logged and replaced, and a worker whose primary is
 *   gone shuts down.
 */

/** The process count [server] workers asks for: 0 = one per core. */
export const workerCount = (cfg: Config): number => (cfg.server.workers === 0 ? os.availableParallelism() : cfg.server.workers);

/** The index of this worker process, or null in a primary or a relay on its own. */
export const workerIndex = (): number | null => (cluster.isWorker && process.env.POSTERN_WORKER !== undefined ? Number(process.env.POSTERN_WORKER) : null);

type Msg = { postern: string; id?: number; [k: string]: unknown };
const isMsg = (m: unknown): m is Msg => typeof m === 'object' && m !== null && typeof (m as Msg).postern === 'string';

/** How long the primary waits for a worker's figures or health before leaving it out (failing /healthz). */
const ASK_TIMEOUT_MS = 5000;

// ---------------------------------------------------------------- worker side

/** A worker's part: its role for startRelay, and what it answers the primary once started. */
export function workerRole(index: number): { role: WorkerRole; attach(relay: Relay): void; failed(problems: string[]): Promise<void> } {
  let next = 0;
  const pending = new Map<number, (a: Admission) => void>();
  let relay: Relay | null = null;
  const send = (m: Msg) => {
    if (process.connected) process.send!(m);
  };
  process.on('message', (m: unknown) => {
    if (!isMsg(m)) return;
    switch (m.postern) {
      case 'admitted': {
        const done = pending.get(m.id!);
        pending.delete(m.id!);
        done?.(m.value as Admission);
        break;
      }
      case 'wake':
        relay?.delivery?.scheduler.wake();
        break;
      case 'metrics':
        if (relay)
          relay.metrics.registry.getMetricsAsJSON().then(
            (value) => send({ postern: 'reply', id: m.id, value }),
            (e: unknown) => send({ postern: 'reply', id: m.id, error: (e as Error).message }),
          );
        break;
      case 'health':
        if (relay)
          relay.health().then(
            (value) => send({ postern: 'reply', id: m.id, value }),
            (e: unknown) => send({ postern: 'reply', id: m.id, value: { ok: false, detail: (e as Error).message } }),
          );
        break;
    }
  });
  let waking = false;
  const role: WorkerRole = {
    index,
    delivers: index === 0,
    connections: {
      admit: (ip) =>
        // Without its primary the worker is on its way out (see serve.ts): nothing to count against.
        process.connected
          ? new Promise<Admission>((resolve) => {
              const id = ++next;
              pending.set(id, resolve);
              send({ postern: 'admit', id, ip });
            })
          : { ok: true },
      release: (ip) => send({ postern: 'release', ip }),
    },
    // One message per turn of the event loop, however many commits it saw.
    wakeDelivery() {
      if (waking) return;
      waking = true;
      setImmediate(() => {
        waking = false;
        send({ postern: 'wake' });
      });
    },
  };
  // The primary died: every admission asked is answered, so no session waits for ever.
  process.on('disconnect', () => {
    for (const done of pending.values()) done({ ok: true });
    pending.clear();
  });
  return {
    role,
    attach(r) {
      relay = r;
      send({ postern: 'ready', started: r.started });
    },
    failed: (problems) =>
      new Promise<void>((resolve) => {
        if (!process.connected) return resolve();
        process.send!({ postern: 'failed', problems }, undefined, {}, () => resolve());
      }),
  };
}

// ---------------------------------------------------------------- primary side

interface Slot {
  index: number;
  worker: Worker | null;
  ready: boolean;
  started: Record<string, unknown> | null;
  /** Starts that failed in a row (backoff for the next). */
  failures: number;
}

export interface PrimaryIo {
  stderr(s: string): void;
}

/**
 * Runs the primary until SIGTERM or SIGINT: checks what every worker would check (once, with
 * a clear error), forks `count` workers, keeps them, serves /metrics and /healthz. Resolves
 * with the exit code.
 */
export async function runPrimary(cfg: Config, count: number, io: PrimaryIo): Promise<number> {
  const log = createLogger(cfg.log.level);
  // The schema, the store (migrated once here, not raced by every worker), the certificate
  // (a self-signed one made once, which every worker then reuses).
  const certSource = await preflight(cfg);
  cluster.setupPrimary({ silent: false });
  const table = new ConnectionTable({ perIp: cfg.server.max_connections_per_ip, total: cfg.server.max_clients });
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, worker: null, ready: false, started: null, failures: 0 }));
  const byWorker = new Map<Worker, Slot>();
  const asks = new Map<number, { resolve: (v: unknown) => void }>();
  let askId = 0;
  let stopping = false;
  let starting = true;
  let startFailure: string[] | null = null;
  let onChange = () => {};
  const restarts = new Counter({ name: 'postern_worker_restarts_total', help: 'Worker processes that exited and were started again', registers: [] });
  const alive = new Gauge({
    name: 'postern_workers',
    help: 'Worker processes serving the listeners',
    registers: [],
    collect() {
      this.set(slots.filter((s) => s.ready).length);
    },
  });
  const own = new Registry();
  own.registerMetric(restarts);
  own.registerMetric(alive);

  const ask = (slot: Slot, what: 'metrics' | 'health'): Promise<unknown> =>
    new Promise((resolve) => {
      if (!slot.ready || !slot.worker?.isConnected()) return resolve(undefined);
      const id = ++askId;
      const timer = setTimeout(() => {
        asks.delete(id);
        resolve(undefined);
      }, ASK_TIMEOUT_MS);
      asks.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
      });
      slot.worker.send({ postern: what, id });
    });

  const fork = (slot: Slot) => {
    const w = cluster.fork({ POSTERN_WORKER: String(slot.index) });
    slot.worker = w;
    slot.ready = false;
    byWorker.set(w, slot);
    w.on('message', (m: unknown) => {
      if (!isMsg(m)) return;
      switch (m.postern) {
        case 'ready':
          slot.ready = true;
          slot.failures = 0;
          slot.started = m.started as Record<string, unknown>;
          onChange();
          break;
        case 'failed':
          startFailure ??= m.problems as string[];
          break;
        case 'admit':
          w.send({ postern: 'admitted', id: m.id, value: table.admit(String(m.ip), w) });
          break;
        case 'release':
          table.release(String(m.ip), w);
          break;
        case 'wake': {
          const d = slots[0]!;
          if (d.ready && d.worker?.isConnected()) d.worker.send({ postern: 'wake' });
          break;
        }
        case 'reply':
          asks.get(m.id!)?.resolve(m.value);
          asks.delete(m.id!);
          break;
      }
    });
    w.on('exit', (code, signal) => {
      byWorker.delete(w);
      table.releaseAll(w);
      const wasReady = slot.ready;
      slot.ready = false;
      slot.worker = null;
      onChange();
      if (stopping || starting) return;
      log.error({ event: 'worker.exited', worker: slot.index, pid: w.process.pid, code, signal, started: wasReady });
      restarts.inc();
      // A worker that keeps failing to start (the store down) is tried again less and less often.
      if (!wasReady) slot.failures++;
      const delay = slot.failures ? Math.min(30_000, 500 * 2 ** (slot.failures - 1)) : 0;
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, delay).unref();
    });
  };

  const allExited = () =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (slots.every((s) => !s.worker)) resolve();
      };
      onChange = check;
      check();
    });
  const stopWorkers = async () => {
    stopping = true;
    for (const s of slots) s.worker?.process.kill('SIGTERM');
    await allExited();
  };

  // SIGHUP from the start on (its default would end the primary): passed to the workers that
  // are serving; one still starting reads the config as it is now anyway.
  const hangup = () => {
    log.info({ event: 'relay.reloading', signal: 'SIGHUP', workers: count });
    for (const s of slots) if (s.ready) s.worker?.process.kill('SIGHUP');
  };
  process.on('SIGHUP', hangup);
  // Every worker up, or the first that could not start.
  for (const s of slots) fork(s);
  const up = await new Promise<boolean>((resolve) => {
    onChange = () => {
      if (slots.every((s) => s.ready)) resolve(true);
      else if (slots.some((s) => !s.ready && !s.worker)) resolve(false);
    };
  });
  if (!up) {
    process.off('SIGHUP', hangup);
    await stopWorkers();
    for (const p of startFailure ?? ['a worker process exited before it started (see its output above)']) io.stderr(`postern: ${p}\n`);
    return 1;
  }
  starting = false;
  onChange = () => {};

  let metricsServer: MetricsServer | null = null;
  if (cfg.metrics.enabled) {
    metricsServer = await startMetricsServer(parseListen(cfg.metrics.listen), {
      registry: {
        contentType: own.contentType,
        async metrics() {
          const parts = (await Promise.all(slots.map((s) => ask(s, 'metrics')))).filter((x): x is object[] => Array.isArray(x));
          return Registry.merge([AggregatorRegistry.aggregate(parts), own]).metrics();
        },
      },
      healthy: async () => {
        if (stopping) return { ok: false, detail: 'shutting down' };
        const answers = await Promise.all(slots.map(async (s) => ({ s, h: (await ask(s, 'health')) as { ok: boolean; detail: string } | undefined })));
        const bad = answers.find((a) => !a.h?.ok);
        if (bad) return { ok: false, detail: `worker ${bad.s.index}: ${bad.h?.detail ?? (bad.s.ready ? 'no answer' : 'not running')}` };
        return { ok: true, detail: `ok (${count} workers)` };
      },
    });
  }
  const first = slots[0]!.started!;
  log.info({
    event: 'relay.started',
    ...first,
    cert: certSource,
    metrics_listen: metricsServer ? hostPort(parseListen(cfg.metrics.listen).host, metricsServer.port) : null,
    metrics: metricsServer?.port ?? null,
    workers: count,
    pids: slots.map((s) => s.worker?.process.pid ?? null),
  });

  // Listeners kept for the whole stop: a second SIGTERM (systemd signals the whole group) must
  // not end the primary while its workers finish.
  const signal = await new Promise<string>((resolve) => {
    process.on('SIGTERM', () => resolve('SIGTERM'));
    process.on('SIGINT', () => resolve('SIGINT'));
  });
  process.off('SIGHUP', hangup);
  log.info({ event: 'relay.stopping', signal });
  await stopWorkers();
  await metricsServer?.close();
  log.info({ event: 'relay.stopped' });
  await flush(log);
  return 0;
}

const hostPort = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

function flush(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}
