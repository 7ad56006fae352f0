import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db } from './db.js';
import { SCHEMA_VERSION } from './sql.js';

export class SchemaError extends Error {
  override name = 'SchemaError';
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The checkout or installed package root: where migrations/ sits beside package.json. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'migrations'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new SchemaError('cannot find the migrations/ directory beside package.json');
    dir = up;
  }
}

export function readMigrations(dir = path.join(packageRoot(), 'migrations')): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir)) {
    const m = /^(\d+)_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) continue;
    out.push({ version: Number(m[1]), name: m[2]!, sql: readFileSync(path.join(dir, file), 'utf8') });
  }
  out.sort((a, b) => a.version - b.version);
  for (let i = 0; i < out.length; i++) {
    if (out[i]!.version !== i + 1) {
      throw new SchemaError(`migrations must be numbered 1, 2, 3, ... without gaps; found ${out[i]!.version}`);
    }
  }
  return out;
}

/** Both engines: a database used by a newer Postern is not touched by this one. */
export function refuseNewer(current: number, known: number): void {
  if (current > known) {
    throw new SchemaError(
      `the database schema is version ${current} but this Postern only knows up to ${known}: ` +
        'it was used by a newer Postern. Run that version, or restore a backup made before the upgrade.',
    );
  }
}

export function schemaVersion(db: Db): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
  const row = db.prepare(SCHEMA_VERSION).get() as { v: number | null };
  return row.v ?? 0;
}

/**
 * Applies pending migrations, each in its own IMMEDIATE transaction so that a CLI
 * `db migrate` and a starting server cannot both apply the same one, and a crash mid-way
 * leaves the schema at the last whole migration (forward-only, house rule 4).
 * Returns the versions applied.
 */
export function migrate(db: Db, migrations = readMigrations(), now = Date.now()): number[] {
  const known = migrations.length ? migrations[migrations.length - 1]!.version : 0;
  const current = schemaVersion(db);
  refuseNewer(current, known);
  const applied: number[] = [];
  for (const m of migrations) {
    const apply = db.transaction(() => {
      if (schemaVersion(db) >= m.version) return false;
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
        m.version,
        m.name,
        now,
      );
      return true;
    });
    if (apply.immediate()) applied.push(m.version);
  }
  return applied;
}
