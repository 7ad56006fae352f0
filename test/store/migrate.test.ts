import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { openDb, type Db } from '../../src/store/db.js';
import { migrate, readMigrations, schemaVersion, SchemaError } from '../../src/store/migrate.js';
import { tempDir } from '../helpers/relay.js';

let dir: string;
let db: Db;
beforeEach(() => {
  dir = tempDir();
  db = openDb(dir);
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('migrations', () => {
  it('applies every numbered file once, in order, and records each', () => {
    const all = readMigrations();
    expect(migrate(db)).toEqual(all.map((m) => m.version));
    expect(migrate(db)).toEqual([]);
    const rows = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all();
    expect(rows).toEqual(all.map((m) => ({ version: m.version, name: m.name })));
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
  });

  it('refuses a database written by a newer Postern', () => {
    migrate(db);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, ?, 0)').run('future');
    expect(() => migrate(db)).toThrow(SchemaError);
    expect(() => migrate(db)).toThrow(/schema is version 999 but this Postern only knows up to \d+/);
  });

  it('leaves the schema at the last whole migration when one fails', () => {
    const bad = [...readMigrations().slice(0, 1), { version: 2, name: 'broken', sql: 'CREATE TABLE t (a); SELECT * FROM no_such_table;' }];
    expect(() => migrate(db, bad)).toThrow(/no such table/);
    expect(schemaVersion(db)).toBe(1);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 't'").get()).toBeUndefined();
  });
});
