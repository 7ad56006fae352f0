import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { openPostgresStore } from '../../src/store/postgres/index.js';
import type { Store } from '../../src/store/index.js';
import { hasPostgres, NO_POSTGRES_MESSAGE, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { storeContract } from './contract.js';
import { packageRoot, readMigrations } from '../../src/store/migrate.js';

let server: TestPostgres | undefined;
let url: string | undefined;
afterAll(async () => {
  await server?.stop();
});

let admin: pg.Client | undefined;
let emptyAll: string | undefined;
afterAll(async () => {
  await admin?.end();
});

/**
 * One throwaway server and database for the file; every test starts from emptied tables.
 * DELETE and a sequence reset, not TRUNCATE: TRUNCATE gives every table new files, which cost
 * more than the few rows a test leaves (a third of this file's time).
 */
async function emptied(): Promise<string> {
  if (!url || !admin || !emptyAll) {
    server = await startPostgres();
    url = await server.database();
    (await openPostgresStore(url)).close();
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const { rows } = await admin.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('schema_migrations', 'policy_generation')`);
    const seqs = await admin.query<{ s: string }>(`SELECT sequencename AS s FROM pg_sequences WHERE schemaname = 'public'`);
    // session_replication_role = replica skips the foreign-key and other triggers for the
    // sweep, so the tables can be emptied in any order (the test server runs as superuser).
    emptyAll = [
      'SET session_replication_role = replica',
      ...rows.map((r) => `DELETE FROM ${pg.escapeIdentifier(r.t)}`),
      'SET session_replication_role = DEFAULT',
      ...seqs.rows.map((r) => `ALTER SEQUENCE ${pg.escapeIdentifier(r.s)} RESTART`),
    ].join(';\n');
  }
  await admin.query(emptyAll);
  return url;
}

describe.runIf(hasPostgres)('postgres engine', () => {
  storeContract('postgres', async () => {
    const at = await emptied();
    const opened: Store[] = [await openPostgresStore(at)];
    return {
      store: opened[0]!,
      reopen: async () => {
        const again = await openPostgresStore(at);
        opened.push(again);
        return again;
      },
      cleanup: async () => {
        for (const st of opened) st.close();
      },
    };
  });

  /** SQL straight to the database, as an admin's psql would. */
  const raw = async <T>(at: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: at });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  const generation = (c: pg.Client) => c.query<{ n: string }>('SELECT n FROM policy_generation').then((r) => Number(r.rows[0]!.n));

  describe('app passwords and the policy generation', () => {
    it('a recorded use does not move it (no node drops its cache each minute); any other change to an app password does', async () => {
      const at = await emptied();
      const s = await openPostgresStore(at);
      try {
        const u = await s.users.add('alice', 'hash', 1);
        const p = await s.appPasswords.add(u.id, 'phone', 'pub-1', 'hash-1', 1);
        await raw(at, async (c) => {
          const before = await generation(c);
          await s.appPasswords.touch(p.id, 100_000);
          expect((await c.query('SELECT last_used_at FROM app_passwords WHERE id = $1', [p.id])).rows).toEqual([{ last_used_at: '100000' }]);
          expect(await generation(c)).toBe(before);
          await c.query(`UPDATE app_passwords SET password_hash = 'other' WHERE id = $1`, [p.id]);
          expect(await generation(c)).toBe(before + 1);
          await c.query(`UPDATE app_passwords SET label = 'Phone' WHERE id = $1`, [p.id]);
          expect(await generation(c)).toBe(before + 2);
          await c.query('DELETE FROM app_passwords WHERE id = $1', [p.id]);
          expect(await generation(c)).toBeGreaterThan(before + 2);
        });
      } finally {
        s.close();
      }
    });
  });

  describe('upgrade', () => {
    it('a database at schema 5 keeps its bindings, and takes country, ASN and app-password bindings after', async () => {
      await emptied(); // starts the server when this test runs alone
      const at = await server!.database();
      const old = readMigrations(path.join(packageRoot(), 'migrations', 'postgres')).filter((m) => m.version <= 5);
      await raw(at, async (c) => {
        await c.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)');
        for (const m of old) {
          await c.query(m.sql);
          await c.query('INSERT INTO schema_migrations VALUES ($1, $2, 0)', [m.version, m.name]);
        }
        await c.query(`INSERT INTO principals (kind, name, created_at) VALUES ('user', 'alice', 1), ('device', 'printer', 1)`);
        await c.query(`INSERT INTO users (id, username, password_hash, principal_ref, created_at, updated_at) VALUES (1, 'alice', 'h', 1, 1, 1)`);
        await c.query(`INSERT INTO devices (id, name, principal_ref, created_at, updated_at) VALUES (1, 'printer', 2, 1, 1)`);
        await c.query(`INSERT INTO bindings (principal_kind, principal_id, kind, value, position, expires_at, created_at) VALUES
          ('user', 1, 'sender', 'b@example.com', 0, NULL, 1), ('user', 1, 'sender', 'a@example.com', 1, NULL, 1),
          ('user', 1, 'network', '192.0.2.0/24', 0, 5000, 1), ('device', 1, 'recipient', 'boss@example.com', 0, NULL, 1)`);
      });
      const s = await openPostgresStore(at);
      try {
        expect(await s.bindings.list('user', 1, 2)).toEqual([
          { kind: 'network', value: '192.0.2.0/24', expiresAt: 5000 },
          { kind: 'sender', value: 'b@example.com', expiresAt: null },
          { kind: 'sender', value: 'a@example.com', expiresAt: null },
        ]);
        expect(await s.bindings.values('device', 1, 'recipient', 2)).toEqual(['boss@example.com']);
        expect(await s.bindings.hasGeoBindings()).toBe(false);
        await s.bindings.add('user', 1, 'country', 'DE', 2);
        const p = await s.appPasswords.add(1, 'phone', 'pub-1', 'hash-1', 2);
        await s.bindings.add('app-password', p.id, 'asn', '3320', 2);
        expect(await s.bindings.values('user', 1, 'country', 2)).toEqual(['DE']);
        expect(await s.bindings.values('app-password', p.id, 'asn', 2)).toEqual(['3320']);
      } finally {
        s.close();
      }
    });
  });
});
// Without the server (.ci/run installs it) the suite above does not run: say why.
if (!hasPostgres) console.warn(NO_POSTGRES_MESSAGE);
