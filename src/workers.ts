import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { Config } from './config/schema.js';
import { explainListenError } from './config/check.js';
import { hostPort, preflight, type Relay, type WorkerRole } from './main.js';
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

export interface WorkerLink {
  role: WorkerRole;
  /** The primary's config (asked at every start: a replacement runs what the others run). */
  config(): Promise<Config>;
  /** Serving: answers the primary's questions, takes its reloads, and says so. */
  attach(relay: Relay, reload: (next: Config) => void): void;
  /** A start that failed: its reasons, for the primary to say once. */
  failed(problems: string[]): Promise<void>;
  /** Closes the channel (a stopped worker's process would stay alive for it). */
  detach(): void;
}

/** A worker's part: its role for startRelay, and what it answers the primary once started. */
export function workerRole(index: number): WorkerLink {
  // Node's cluster ends a worker at once when its channel closes unless told the close is
  // expected: this worker stops gracefully then instead (serve.ts), finishing what it began.
  cluster.worker!.exitedAfterDisconnect = true;
  let next = 0;
  const pending = new Map<number, (a: Admission) => void>();
  let relay: Relay | null = null;
  let onReload: ((next: Config) => void) | null = null;
  let gotConfig: ((c: Config) => void) | null = null;
  const send = (m: Msg) => {
    if (process.connected) process.send!(m);
  };
  process.on('message', (m: unknown) => {
    if (!isMsg(m)) return;
    switch (m.postern) {
      case 'config':
        gotConfig?.(m.config as Config);
        gotConfig = null;
        break;
      case 'reload':
        onReload?.(m.config as Config);
        break;
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
    config: () =>
      new Promise<Config>((resolve, reject) => {
        if (!process.connected) return reject(new Error('the primary process is gone'));
        gotConfig = resolve;
        send({ postern: 'config' });
      }),
    attach(r, reload) {
      relay = r;
      onReload = reload;
      // Counters restart from 0 with a worker: labelled by worker, each is a series of its
      // own, whose reset Prometheus's rate() and increase() take in their stride.
      r.metrics.registry.setDefaultLabels({ worker: String(index) });
      send({ postern: 'ready', started: r.started });
    },
    detach() {
      if (process.connected) process.disconnect();
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
  /** When the current worker said it was serving (ms), to tell a crash soon after from one after long service. */
  readyAt: number;
  /** Exits in a row that came before, or soon after, a start (the pause before the next grows). */
  failures: number;
}

export interface PrimaryIo {
  stderr(s: string): void;
}

/** A worker that dies this soon after it started serving counts as a failed start (the pause grows). */
const SHORT_LIFE_MS = 30_000;

/**
 * Runs the primary until SIGTERM or SIGINT: checks what every worker would check (once, with
 * a clear error), forks `count` workers, keeps them, serves /metrics and /healthz. The config
 * is read here only: a worker asks the primary for it (at every start, a replacement's too)
 * and is sent the new one on SIGHUP, so every worker runs the same config, validated once.
 * Resolves with the exit code.
 */
export async function runPrimary(first: Config, count: number, io: PrimaryIo, reread: () => Config): Promise<number> {
  let cfg = first;
  const log = createLogger(cfg.log.level);
  // Signals from the first moment: their defaults would end the primary and leave the
  // workers to stop on their own.
  let stopSignal: ((signal: string) => void) | null = null;
  let stopAsked: string | null = null;
  const onStop = (signal: string) => {
    stopAsked ??= signal;
    stopSignal?.(signal);
  };
  const term = () => onStop('SIGTERM');
  const int = () => onStop('SIGINT');
  process.on('SIGTERM', term);
  process.on('SIGINT', int);
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, worker: null, ready: false, started: null, readyAt: 0, failures: 0 }));
  // SIGHUP: the file read and validated once here; the workers serving get the result (one
  // still starting asks for the config as it is now). A file that does not validate changes
  // nothing anywhere.
  const hangup = () => {
    log.info({ event: 'relay.reloading', signal: 'SIGHUP', workers: count });
    let next: Config;
    try {
      next = reread();
    } catch (e) {
      log.error({ event: 'config.reload_refused', reason: 'config', err: (e as Error).message });
      return;
    }
    cfg = next;
    log.level = next.log.level;
    for (const s of slots) if (s.ready && s.worker?.isConnected()) s.worker.send({ postern: 'reload', config: next });
  };
  process.on('SIGHUP', hangup);
  const unhook = () => {
    process.off('SIGHUP', hangup);
    process.off('SIGTERM', term);
    process.off('SIGINT', int);
  };
  try {
    return await supervise();
  } finally {
    unhook();
  }

  async function supervise(): Promise<number> {
    // The schema, the store (migrated once here, not raced by every worker), the certificate
    // (a self-signed one made once, which every worker then reuses).
    const certSource = await preflight(cfg);
    // /metrics bound before any worker starts: an address in use is said with its key, and
    // nothing is left serving.
    let metricsServer: MetricsServer | null = null;
    const table = new ConnectionTable({ perIp: cfg.server.max_connections_per_ip, total: cfg.server.max_clients });
    const asks = new Map<number, (v: unknown) => void>();
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
        const w = slot.worker;
        if (!slot.ready || !w?.isConnected()) return resolve(undefined);
        const id = ++askId;
        const timer = setTimeout(() => {
          asks.delete(id);
          resolve(undefined);
        }, ASK_TIMEOUT_MS);
        asks.set(id, (v) => {
          clearTimeout(timer);
          resolve(v);
        });
        w.send({ postern: what, id });
      });

    if (cfg.metrics.enabled) {
      try {
        metricsServer = await startMetricsServer(parseListen(cfg.metrics.listen), {
          registry: {
            contentType: own.contentType,
            async metrics() {
              const parts = (await Promise.all(slots.map((s) => ask(s, 'metrics')))).filter((x): x is object[] => Array.isArray(x));
              return Registry.merge([AggregatorRegistry.aggregate(parts), own]).metrics();
            },
          },
          healthy: async () => {
            if (stopping || starting) return { ok: false, detail: stopping ? 'shutting down' : 'starting' };
            const answers = await Promise.all(slots.map(async (s) => ({ s, h: (await ask(s, 'health')) as { ok: boolean; detail: string } | undefined })));
            const bad = answers.find((a) => !a.h?.ok);
            if (bad) return { ok: false, detail: `worker ${bad.s.index}: ${bad.h?.detail ?? (bad.s.ready ? 'no answer' : 'not running')}` };
            return { ok: true, detail: `ok (${count} workers)` };
          },
        });
      } catch (e) {
        throw await explainListenError(cfg, e);
      }
    }

    const fork = (slot: Slot) => {
      const w = cluster.fork({ POSTERN_WORKER: String(slot.index) });
      slot.worker = w;
      slot.ready = false;
      // Messages of a worker that has been replaced (read after its exit) change nothing.
      const current = () => slot.worker === w;
      w.on('message', (m: unknown) => {
        if (!isMsg(m)) return;
        switch (m.postern) {
          case 'config':
            w.send({ postern: 'config', config: cfg });
            break;
          case 'ready':
            if (!current()) break;
            slot.ready = true;
            slot.readyAt = Date.now();
            slot.started = m.started as Record<string, unknown>;
            onChange();
            break;
          case 'failed':
            startFailure ??= m.problems as string[];
            break;
          case 'admit':
            if (!current()) break;
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
            asks.get(m.id!)?.(m.value);
            asks.delete(m.id!);
            break;
        }
      });
      // A send to a worker that is going away: its exit is handled below.
      w.on('error', (e: Error) => log.warn({ event: 'worker.ipc_error', worker: slot.index, err: e.message }));
      // The exit is handled once the channel is closed too, so every message the worker sent
      // (a start failure's reason) has been read first.
      let exit: { code: number | null; signal: string | null } | null = null;
      let closed = false;
      const settle = () => {
        if (!exit || !closed || !current()) return;
        const { code, signal } = exit;
        table.releaseAll(w);
        const wasReady = slot.ready;
        const lived = wasReady ? Date.now() - slot.readyAt : 0;
        slot.ready = false;
        slot.worker = null;
        onChange();
        if (stopping || starting) return;
        log.error({ event: 'worker.exited', worker: slot.index, pid: w.process.pid, code, signal, started: wasReady });
        restarts.inc();
        // A worker that keeps failing (the store down, a crash soon after each start) is
        // started again less and less often; one that served for a while, at once.
        if (!wasReady || lived < SHORT_LIFE_MS) slot.failures++;
        else slot.failures = 0;
        const delay = slot.failures ? Math.min(30_000, 500 * 2 ** (slot.failures - 1)) : 0;
        // Not unref'd: while every worker waits here, this timer is what keeps the primary alive.
        setTimeout(() => {
          if (!stopping) fork(slot);
        }, delay);
      };
      w.on('exit', (code: number | null, signal: string | null) => {
        exit = { code, signal };
        settle();
      });
      w.on('disconnect', () => {
        closed = true;
        settle();
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
      // A worker still there after its grace period and some is killed: the stop must end.
      const limit = setTimeout(
        () => {
          for (const s of slots) {
            if (!s.worker) continue;
            log.error({ event: 'worker.killed', worker: s.index, pid: s.worker.process.pid, detail: 'still running after shutdown_grace_seconds + 10 s' });
            s.worker.process.kill('SIGKILL');
          }
        },
        (cfg.server.shutdown_grace_seconds + 10) * 1000,
      );
      await allExited();
      clearTimeout(limit);
    };

    // Every worker up, or the first that could not start, or a stop asked meanwhile.
    for (const s of slots) fork(s);
    const up = await new Promise<boolean>((resolve) => {
      stopSignal = () => resolve(false);
      onChange = () => {
        if (slots.every((s) => s.ready)) resolve(true);
        else if (slots.some((s) => !s.ready && !s.worker)) resolve(false);
      };
      if (stopAsked) resolve(false);
    });
    if (!up) {
      if (stopAsked) log.info({ event: 'relay.stopping', signal: stopAsked });
      await stopWorkers();
      await metricsServer?.close();
      if (stopAsked) {
        log.info({ event: 'relay.stopped' });
        await flush(log);
        return 0;
      }
      for (const p of startFailure ?? ['a worker process exited before it started (see its output above)']) io.stderr(`postern: ${p}\n`);
      return 1;
    }
    starting = false;
    onChange = () => {};

    log.info({
      event: 'relay.started',
      ...slots[0]!.started,
      cert: certSource,
      metrics_listen: metricsServer ? hostPort({ address: parseListen(cfg.metrics.listen).host, port: metricsServer.port }) : null,
      metrics: metricsServer?.port ?? null,
      workers: count,
      pids: slots.map((s) => s.worker?.process.pid ?? null),
    });

    // A second SIGTERM (systemd signals the whole group) changes nothing: the listener stays.
    const signal = await new Promise<string>((resolve) => {
      stopSignal = resolve;
      if (stopAsked) resolve(stopAsked);
    });
    log.info({ event: 'relay.stopping', signal });
    await stopWorkers();
    await metricsServer?.close();
    log.info({ event: 'relay.stopped' });
    await flush(log);
    return 0;
  }
}

function flush(log: Logger): Promise<void> {
  return new Promise((resolve) => log.flush(() => resolve()));
}
