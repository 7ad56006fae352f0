import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import type { Spool } from '../spool/spool.js';
import type { Store } from '../store/index.js';
import { IncidentResponder } from './incidents.js';
import { sweepLapsedBindings } from './lapse.js';

/**
 * The compromise response (suspend, record, notify) and the minute's housekeeping: lapsed
 * time-limited bindings (logged and audited) and login counters nobody will read again.
 */
export function startIncidents(cfg: Config, deps: { store: Store; spool: Spool; clock: Clock; log: Logger }): { incidents: IncidentResponder; stop(): void } {
  const { store, clock, log } = deps;
  const incidents = new IncidentResponder(
    store,
    deps.spool,
    { hostname: cfg.server.hostname, admins: cfg.notify.admins, from: cfg.notify.from, helpdesk: cfg.notify.helpdesk, burstMinutes: cfg.notify.burst_minutes, directory: cfg.auth.backend === 'dovecot' },
    clock,
    log,
  );
  const sweeper = setInterval(() => {
    const failed = (e: unknown) => log.error({ event: 'store.error', err: (e as Error).message });
    sweepLapsedBindings(store, clock, log).catch(failed);
    store.authAttempts.prune(clock.now()).catch(failed);
  }, 60_000);
  sweeper.unref();
  return { incidents, stop: () => clearInterval(sweeper) };
}
