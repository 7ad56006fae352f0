import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import type { SMTPServer } from 'smtp-server';
import type { Config } from './config/schema.js';
import type { GeoService } from './geo/service.js';
import type { Logger } from './obs/log.js';
import { installTickets } from './protocol/listeners.js';
import type { TicketKeyRing } from './protocol/tickets.js';
import { loadTls } from './protocol/tls.js';

/**
 * Keys SIGHUP applies to the running relay. Everything else is read once into long-lived
 * objects (listeners, limits, quarantine weights, delivery pacing); a change there is reported
 * as needing a restart rather than half-applied.
 */
export const RELOADABLE = ['tls.cert', 'tls.key', 'log.level', 'geo.country_db', 'geo.asn_db'] as const;

export type ReloadOutcome =
  | { ok: true; fingerprint: string; restartNeeded: string[] }
  | { ok: false; error: string };

function flatten(v: unknown, prefix = '', out: Record<string, string> = {}): Record<string, string> {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = JSON.stringify(v);
  return out;
}

/** Keys whose values differ between two configs, in the order of `next`. */
export function changedKeys(current: Config, next: Config): string[] {
  const a = flatten(current);
  const b = flatten(next);
  return [...new Set([...Object.keys(b), ...Object.keys(a)])].filter((k) => a[k] !== b[k]);
}

export const fingerprint = (certPem: Buffer | string) => new X509Certificate(certPem).fingerprint256;

/**
 * Applies a re-read config: new TLS material for new connections (open sessions keep the
 * context they shook hands with), the log level and the IP database's files. The material is checked by building a
 * context first: smtp-server's updateSecureContext empties its context map before it builds
 * the new one, so a key that does not match the certificate would leave no context at all.
 */
export async function reloadRelay(
  current: Config,
  next: Config,
  deps: { servers: SMTPServer[]; log: Logger; baseLog: Logger; geo?: GeoService; tickets?: TicketKeyRing | null },
): Promise<ReloadOutcome> {
  const { log } = deps;
  let material: { cert: Buffer; key: Buffer };
  let fp: string;
  try {
    material = await loadTls({ ...next.tls, dataDir: current.server.data_dir, hostname: current.server.hostname });
    tls.createSecureContext({ key: material.key, cert: material.cert, minVersion: 'TLSv1.2' });
    fp = fingerprint(material.cert);
  } catch (e) {
    const error = `TLS certificate or key unusable: ${(e as Error).message}`;
    log.error({ event: 'config.reload_refused', reason: 'tls', err: error });
    return { ok: false, error };
  }
  for (const s of deps.servers) {
    s.updateSecureContext({ key: material.key, cert: material.cert });
    // New contexts: the shared ticket keys go on them too, or resumption would end at a reload.
    installTickets(s, deps.tickets);
  }
  deps.baseLog.level = next.log.level;
  const restartNeeded = changedKeys(current, next).filter((k) => !(RELOADABLE as readonly string[]).includes(k));
  current.tls = next.tls;
  current.log = next.log;
  // The IP database, if loaded, is read again from the (possibly new) paths: files replaced in
  // place are taken too. The old data answers until the new is ready, and stays if it fails
  // (geo.load_failed); that is not a refusal of the reload, whose other keys are applied.
  current.geo = next.geo;
  await deps.geo?.reload({ countryDb: next.geo.country_db, asnDb: next.geo.asn_db });
  log.info({ event: 'config.reloaded', cert_sha256: fp, restart_needed: restartNeeded });
  if (restartNeeded.length) log.warn({ event: 'config.restart_needed', keys: restartNeeded });
  return { ok: true, fingerprint: fp, restartNeeded };
}
