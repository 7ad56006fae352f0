import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { openStore, sqliteHandle, type Store } from '../../src/store/index.js';
import { tempDir } from '../helpers/relay.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function fresh(): { store: Store; file: string } {
  const dir = tempDir();
  const store = openStore(dir);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }), () => store.close());
  return { store, file: path.join(dir, 'postern.db') };
}

describe('SQLite transactions and other processes', () => {
  it('a transaction waits for the write lock another connection holds, then commits', async () => {
    const { store, file } = fresh();
    const other = new Database(file);
    cleanups.push(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    let released = false;
    // Let go once the transaction below has found the lock taken and is waiting for it.
    setTimeout(() => {
      other.exec('COMMIT');
      released = true;
    }, 200);
    const user = await store.tx(async (t) => t.users.add('alice', 'hash', 1));
    expect(released).toBe(true);
    expect((await store.users.find('alice'))?.id).toBe(user.id);
  });

  it('a COMMIT that fails rolls back, and leaves the connection out of any transaction', async () => {
    const { store } = fresh();
    const db = sqliteHandle(store);
    // A foreign key checked only at COMMIT: the COMMIT fails and SQLite keeps the transaction open.
    await expect(
      store.tx(async (t) => {
        db.pragma('defer_foreign_keys = ON');
        await t.users.add('alice', 'hash', 1);
        db.prepare("INSERT INTO messages (id, state, mail_from, client_ip, size, received_at, principal_ref) VALUES ('M1', 'queued', '', '127.0.0.1', 1, 1, 999)").run();
      }),
    ).rejects.toThrow(/FOREIGN KEY/);
    expect(db.inTransaction).toBe(false);
    expect(await store.users.find('alice')).toBeUndefined();
    // The next transaction is a transaction of its own, not a savepoint in a forgotten one.
    await store.tx(async (t) => t.users.add('bob', 'hash', 2));
    expect(db.inTransaction).toBe(false);
    expect((await store.users.list()).map((u) => u.username)).toEqual(['bob']);
  });
});
