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

  it('keeps every binding of a database at schema 14 across the rebuild of the bindings table, and its triggers', () => {
    migrate(db, readMigrations().filter((m) => m.version <= 14));
    db.prepare(`INSERT INTO users (id, username, password_hash, created_at, updated_at) VALUES (1, 'alice', 'h', 1, 1)`).run();
    const put = db.prepare('INSERT INTO bindings (principal_kind, principal_id, kind, value, position, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const rows = [
      ['user', 1, 'sender', 'b@example.com', 0, null, 10],
      ['user', 1, 'sender', 'a@example.com', 1, null, 11],
      ['user', 1, 'network', '192.0.2.0/24', 0, 5000, 12],
      ['device', 7, 'recipient', 'boss@example.com', 0, null, 13],
    ] as const;
    for (const r of rows) put.run(...r);
    const all = () => db.prepare('SELECT principal_kind, principal_id, kind, value, position, expires_at, created_at FROM bindings ORDER BY created_at').all().map((r) => Object.values(r as object));
    const before = all();
    expect(before).toEqual(rows.map((r) => [...r]));

    expect(migrate(db)).toEqual(readMigrations().filter((m) => m.version > 14).map((m) => m.version));
    expect(all()).toEqual(before);
    // The policy cache still sees every change to bindings (the rebuilt table's triggers).
    const generation = () => (db.prepare('SELECT n FROM policy_generation').get() as { n: number }).n;
    const n = generation();
    db.prepare(`UPDATE bindings SET expires_at = NULL WHERE value = '192.0.2.0/24'`).run();
    db.prepare(`DELETE FROM bindings WHERE value = 'a@example.com'`).run();
    put.run('user', 1, 'country', 'DE', 0, null, 14);
    expect(generation()).toBe(n + 3);
    expect(() => put.run('user', 1, 'country', 'de', 1, null, 15)).toThrow(/CHECK constraint failed/);
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
