import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, sqliteHandle, sqliteSyncCount, type Store } from '../../src/store/index.js';

/**
 * A write's fsync runs off the event loop, and every verb that wrote resolves only after one
 * that began after its commit (the spool's 250 rests on it): see src/store/wal-sync.ts.
 */
let store: Store | undefined;
afterEach(() => store?.close());
const open = () => (store = openStore(mkdtempSync(path.join(os.tmpdir(), 'postern-walsync-'))));

describe('durable writes on the main connection', () => {
  it('commits with synchronous=NORMAL and resolves a write only after an fsync of the log', async () => {
    const s = open();
    expect(sqliteHandle(s).pragma('synchronous', { simple: true })).toBe(1);
    const before = sqliteSyncCount(s);
    const u = await s.users.add('alice', 'hash', 1);
    expect(sqliteSyncCount(s)).toBe(before + 1);
    // A read waits for nothing.
    await s.users.get(u.id);
    await s.bindings.values('user', u.id, 'sender', 2);
    expect(sqliteSyncCount(s)).toBe(before + 1);
  });

  it('lets writes made while an fsync runs share the next one, and resolves each after its own', async () => {
    const s = open();
    const before = sqliteSyncCount(s);
    const done: number[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        await s.users.add(`user${i}`, 'hash', 1);
        done.push(sqliteSyncCount(s));
      }),
    );
    // The first write's fsync, then one for the 19 written while it ran.
    expect(sqliteSyncCount(s)).toBe(before + 2);
    expect(done[0]).toBe(before + 1);
    expect(done.slice(1).every((n) => n === before + 2)).toBe(true);
  });

  it('syncs a transaction once, after its COMMIT', async () => {
    const s = open();
    const before = sqliteSyncCount(s);
    await s.tx(async (t) => {
      await t.users.add('alice', 'hash', 1);
      await t.users.add('bob', 'hash', 1);
      expect(sqliteSyncCount(s)).toBe(before);
    });
    expect(sqliteSyncCount(s)).toBe(before + 1);
  });
});
