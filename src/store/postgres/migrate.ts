import path from 'node:path';
import { packageRoot, readMigrations, refuseNewer } from '../migrate.js';
import { SCHEMA_VERSION } from '../sql.js';
import type { Pg } from './pg.js';

/**
 * Applies migrations/postgres/*.sql in order, recorded in schema_migrations, all pending ones
 * in one transaction (PostgreSQL's DDL is transactional: a failure leaves the schema as it
 * was); an advisory lock keeps two nodes starting at once from applying the same one. A
 * database newer than this code is refused, as with SQLite. Returns the versions applied.
 */
export async function migratePostgres(db: Pg, now = Date.now()): Promise<number[]> {
  const migrations = readMigrations(path.join(packageRoot(), 'migrations', 'postgres'));
  const known = migrations.length ? migrations[migrations.length - 1]!.version : 0;
  return db.tx(async () => {
    await db.q('SELECT pg_advisory_xact_lock(7406550)');
    await db.q('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)');
    const current = (await db.one<{ v: number | null }>(SCHEMA_VERSION))?.v ?? 0;
    refuseNewer(current, known);
    const applied: number[] = [];
    for (const m of migrations) {
      if (m.version <= current) continue;
      await db.q(m.sql);
      await db.q('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, now]);
      applied.push(m.version);
    }
    return applied;
  });
}
