import type { Store } from '../index.js';
import { PgAppPasswordRepo } from './app-passwords.js';
import { PgBindingRepo } from './bindings.js';
import { PgCredentialRepo } from './credentials.js';
import { PgMtaStsRepo } from './mta-sts.js';
import { PgDeliveryRepo } from './delivery.js';
import { PgDkimRepo } from './dkim.js';
import { PgAuditRepo, PgIncidentRepo } from './incidents.js';
import { PgLimitRepo } from './limits.js';
import { migratePostgres } from './migrate.js';
import { PgPolicyCache } from './cache.js';
import { Pg } from './pg.js';
import { PgQuarantineRepo } from './quarantine.js';
import { PgQueueRepo } from './queue.js';
import { PgAuthAttemptRepo, PgLeaseRepo } from './shared.js';
import { PgStatsRepo } from './stats.js';
import { PgTlsReportRepo } from './tls-reports.js';
import { PgTlsTicketKeyRepo } from './tls-tickets.js';
import { PgDeviceRepo, PgUserRepo } from './users.js';
import { SCHEMA_VERSION } from '../sql.js';

/** `postern db migrate` on PostgreSQL. */
export async function migratePostgresUrl(url: string): Promise<{ applied: number[]; version: number }> {
  const db = new Pg(url);
  try {
    const applied = await migratePostgres(db);
    const version = (await db.one<{ v: number | null }>(SCHEMA_VERSION))?.v ?? 0;
    return { applied, version };
  } finally {
    await db.close();
  }
}

/**
 * The store on PostgreSQL: the same repositories and verbs as the SQLite engine (checked by
 * the same contract suite), for several nodes sharing one database.
 */
export async function openPostgresStore(url: string, opts: { migrate?: boolean } = {}): Promise<Store> {
  const db = new Pg(url);
  const cache = new PgPolicyCache(db, url);
  try {
    if (opts.migrate !== false) await migratePostgres(db);
    await cache.start();
  } catch (e) {
    await cache.stop();
    await db.close();
    throw e;
  }
  // A transaction that changed policy rows: what was read meanwhile may be stale once it ends.
  db.onTxEnd = () => cache.clear();
  const store: Store = {
    users: new PgUserRepo(db, cache),
    devices: new PgDeviceRepo(db, cache),
    bindings: new PgBindingRepo(db, cache),
    incidents: new PgIncidentRepo(db),
    audit: new PgAuditRepo(db),
    limits: new PgLimitRepo(db, cache),
    queue: new PgQueueRepo(db),
    quarantine: new PgQuarantineRepo(db),
    delivery: new PgDeliveryRepo(db),
    stats: new PgStatsRepo(db),
    authAttempts: new PgAuthAttemptRepo(db),
    leases: new PgLeaseRepo(db),
    dkim: new PgDkimRepo(db),
    appPasswords: new PgAppPasswordRepo(db, cache),
    credentials: new PgCredentialRepo(db),
    tlsReports: new PgTlsReportRepo(db),
    mtaSts: new PgMtaStsRepo(db),
    tlsTickets: new PgTlsTicketKeyRepo(db),
    senderDomains: async (now) => {
      const rows = await db.q<{ d: string }>(
        `SELECT DISTINCT lower(regexp_replace(value, '^.*@', '')) COLLATE "C" AS d FROM bindings
         WHERE kind = 'sender' AND principal_kind IN ('user', 'device') AND (expires_at IS NULL OR expires_at > $1)
           AND regexp_replace(value, '^.*@', '') <> '' ORDER BY 1`,
        [now],
      );
      return rows.map((r) => r.d);
    },
    syncPolicy: () => cache.sync(),
    tx: (fn) => db.tx(() => fn(store)),
    get open() {
      return db.open;
    },
    close: () => {
      void db.close();
      void cache.stop();
    },
  };
  return store;
}
