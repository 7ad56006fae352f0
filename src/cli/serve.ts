import { StartupError } from '../config/check.js';
import type { Config } from '../config/schema.js';
import { loadConfig } from '../config/load.js';
import { startRelay, type Relay } from '../main.js';
import type { ReloadOutcome } from '../reload.js';
import { runPrimary, workerCount, workerIndex, workerRole } from '../workers.js';
import type { Ctx } from './io.js';

export const SERVE_HELP = `Usage: postern serve

Runs the relay in the foreground: submission listeners, spool, delivery, /metrics.
Signals: SIGTERM or SIGINT shut down gracefully (open transactions may finish within
server.shutdown_grace_seconds); SIGHUP re-reads the config file and reloads the TLS
certificate and key, the log level and the IP database ([geo], once loaded). A config that does not validate is refused with
a "config.reload_refused" log line and the running one stays in force.
With [server] workers above 1 (0 = one per core) this process is the primary: it forks the
workers, passes SIGHUP and SIGTERM to each, restarts one that dies, and serves /metrics.
A start that fails over the config (a missing certificate, a key that does not match it,
an unwritable data_dir, a listen address in use) says which key, its value and what to do,
as "postern config check" does, and exits 1.

Example:
  postern --config /etc/postern/postern.toml serve
  systemctl reload postern        # after renewing the certificate (sends SIGHUP)
`;

/**
 * What SIGHUP does: read the file again, validate it, hand it to the relay. A file that does
 * not parse or validate changes nothing, so a typo made while the relay runs cannot take it
 * down at the next reload (the old config stays until a restart).
 */
export async function reloadFromFile(relay: Relay, read: () => Config): Promise<ReloadOutcome> {
  let next: Config;
  try {
    next = read();
  } catch (e) {
    const error = (e as Error).message;
    relay.log.error({ event: 'config.reload_refused', reason: 'config', err: error });
    return { ok: false, error };
  }
  return relay.reload(next);
}

/** Runs the relay until SIGTERM or SIGINT, then shuts down gracefully. */
export async function serveCommand(ctx: Ctx): Promise<number> {
  const file = ctx.configPath ?? ctx.io.env.POSTERN_CONFIG;
  const index = workerIndex();
  // A worker of [server] workers: its config is the primary's (read and validated once).
  const worker = index === null ? null : workerRole(index);
  const cfg = worker ? await worker.config() : ctx.config();
  // [server] workers above 1: this process is the primary, the workers run this same command.
  if (!worker && workerCount(cfg) > 1) {
    try {
      return await runPrimary(cfg, workerCount(cfg), ctx.io, () => loadConfig(file));
    } catch (e) {
      if (!(e instanceof StartupError)) throw e;
      for (const p of e.problems) ctx.io.stderr(`postern: ${p.message}\n`);
      return 1;
    }
  }
  let relay: Relay;
  try {
    relay = await startRelay(cfg, worker ? { worker: worker.role } : {});
  } catch (e) {
    if (!(e instanceof StartupError)) throw e;
    // One line per problem, each as "postern config check" prints it (a worker's, once, by its primary).
    if (worker) await worker.failed(e.problems.map((p) => p.message));
    else for (const p of e.problems) ctx.io.stderr(`postern: ${p.message}\n`);
    worker?.detach();
    return 1;
  }
  // Reloads run one at a time: SIGHUP re-reads the file; a worker is sent the primary's.
  let reloading = Promise.resolve();
  const reload = (read: () => Config) => {
    relay.log.info({ event: 'relay.reloading', signal: 'SIGHUP' });
    reloading = reloading.then(() => reloadFromFile(relay, read)).then(
      () => undefined,
      (e: unknown) => relay.log.error({ event: 'config.reload_refused', reason: 'internal', err: (e as Error).message }),
    );
  };
  // Without a handler SIGHUP would end the process. A worker leaves reloading to its primary
  // (a hangup of the whole process group reaches it too).
  const hangup = worker ? () => undefined : () => reload(() => loadConfig(file));
  process.on('SIGHUP', hangup);
  worker?.attach(relay, (next) => reload(() => next));
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      relay.log.info({ event: 'relay.stopping', signal });
      resolve();
    };
    if (worker) {
      // A worker hears SIGTERM twice when systemd signals the whole group and its primary
      // passes the signal on: the second must not end the graceful stop the first began.
      let told = false;
      const once = (signal: string) => {
        if (told) return;
        told = true;
        stop(signal);
      };
      process.on('SIGTERM', () => once('SIGTERM'));
      process.on('SIGINT', () => once('SIGINT'));
      // A worker whose primary is gone (killed) stops as if told to: nothing would restart it.
      process.once('disconnect', () => once('primary-exited'));
    } else {
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    }
  });
  process.off('SIGHUP', hangup);
  await reloading;
  await relay.close();
  // The channel to the primary would keep a stopped worker's process alive.
  worker?.detach();
  return 0;
}
