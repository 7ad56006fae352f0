import { StartupError } from '../config/check.js';
import type { Config } from '../config/schema.js';
import { loadConfig } from '../config/load.js';
import { startRelay, type Relay } from '../main.js';
import type { ReloadOutcome } from '../reload.js';
import type { Ctx } from './io.js';

export const SERVE_HELP = `Usage: postern serve

Runs the relay in the foreground: submission listeners, spool, delivery, /metrics.
Signals: SIGTERM or SIGINT shut down gracefully (open transactions may finish within
server.shutdown_grace_seconds); SIGHUP re-reads the config file and reloads the TLS
certificate and key, the log level and the IP database ([geo], once loaded). A config that does not validate is refused with
a "config.reload_refused" log line and the running one stays in force.
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
  let relay: Relay;
  try {
    relay = await startRelay(ctx.config());
  } catch (e) {
    if (!(e instanceof StartupError)) throw e;
    // One line per problem, each as "postern config check" prints it.
    for (const p of e.problems) ctx.io.stderr(`postern: ${p.message}\n`);
    return 1;
  }
  const file = ctx.configPath ?? ctx.io.env.POSTERN_CONFIG;
  // Without a handler SIGHUP would end the process; with one, reloads run one at a time.
  let reloading = Promise.resolve();
  const hangup = () => {
    relay.log.info({ event: 'relay.reloading', signal: 'SIGHUP' });
    reloading = reloading.then(() => reloadFromFile(relay, () => loadConfig(file))).then(
      () => undefined,
      (e: unknown) => relay.log.error({ event: 'config.reload_refused', reason: 'internal', err: (e as Error).message }),
    );
  };
  process.on('SIGHUP', hangup);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      relay.log.info({ event: 'relay.stopping', signal });
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  process.off('SIGHUP', hangup);
  await reloading;
  await relay.close();
  return 0;
}
