import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, fstatSync, fsync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Spool } from '../../src/spool/spool.js';
import { newQueueId } from '../../src/spool/message.js';
import { openDb, writesOn } from '../../src/store/db.js';
import { Gate } from '../../src/store/gate.js';
import { openStore, sqliteHandle, sqliteSyncCount, type Store } from '../../src/store/index.js';
import { WalSync } from '../../src/store/wal-sync.js';

/**
 * The main connection commits with synchronous=NORMAL and the log's fsync runs off the event
 * loop; every store call that wrote resolves only after an fsync that began after its commit
 * (the spool's 250 rests on it): src/store/wal-sync.ts.
 */
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanups.splice(0).reverse()) f();
});
const dir = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'postern-walsync-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
};
const open = (d = dir()): Store => {
  const s = openStore(d);
  cleanups.push(() => s.close());
  return s;
};
const EIO = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
const message = () => ({ id: newQueueId(Date.now()), envelope: { mailFrom: 'a@example.com', rcptTo: ['b@example.org'] }, principal: null, clientIp: '127.0.0.1', receivedAt: Date.now(), state: 'queued' as const, data: Buffer.from('Subject: x\r\n\r\nx\r\n') });

describe('durable writes on the main connection', () => {
  it('commits with synchronous=NORMAL and resolves a write only after an fsync of the log; a read waits for none', async () => {
    const s = open();
    expect(sqliteHandle(s).pragma('synchronous', { simple: true })).toBe(1); // NORMAL
    const before = sqliteSyncCount(s);
    const u = await s.users.add('alice', 'hash', 1);
    expect(sqliteSyncCount(s)).toBe(before + 1);
    await s.users.get(u.id);
    await s.bindings.values('user', u.id, 'sender', 2);
    expect(sqliteSyncCount(s)).toBe(before + 1);
  });

  it('adds no fsync for the bookkeeping connection (leases, login counters, delivery outcomes), which stays NORMAL by design', async () => {
    const s = open();
    const before = sqliteSyncCount(s);
    expect(await s.leases.take('scan', 'node-a', 1, 2)).toBe(true);
    expect(sqliteSyncCount(s)).toBe(before);
  });

  it("resolves the spool's accept (the 250 after DATA) only after an fsync that covers the message", async () => {
    const s = open();
    const spool = new Spool(s.queue);
    const before = sqliteSyncCount(s);
    const m = message();
    await spool.accept(m);
    expect(sqliteSyncCount(s)).toBe(before + 1);
    expect((await s.queue.get(m.id))?.id).toBe(m.id);
  });

  it('lets writes made while an fsync runs share the next one, and resolves each after one that began after it', async () => {
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

  it('syncs a transaction once, after its COMMIT, and not the verbs inside it', async () => {
    const s = open();
    const before = sqliteSyncCount(s);
    await s.tx(async (t) => {
      await t.users.add('alice', 'hash', 1);
      await t.users.add('bob', 'hash', 1);
      expect(sqliteSyncCount(s)).toBe(before);
    });
    expect(sqliteSyncCount(s)).toBe(before + 1);
  });

  it("syncs a write made outside a transaction even when another caller's transaction has begun by the time the write returns", async () => {
    const s = open();
    const before = sqliteSyncCount(s);
    const write = s.users.add('alice', 'hash', 1);
    let release!: () => void;
    const tx = s.tx(() => new Promise<void>((r) => (release = r)));
    await write;
    expect(sqliteSyncCount(s)).toBe(before + 1);
    release();
    await tx;
  });

  it('finds the log next to the real database file when postern.db is a symlink', async () => {
    const real = dir();
    const d = dir();
    writeFileSync(path.join(real, 'store.db'), '');
    symlinkSync(path.join(real, 'store.db'), path.join(d, 'postern.db'));
    const s = open(d);
    const before = sqliteSyncCount(s);
    await s.users.add('alice', 'hash', 1);
    expect(sqliteSyncCount(s)).toBe(before + 1);
    expect(existsSync(path.join(real, 'store.db-wal'))).toBe(true);
    expect(existsSync(path.join(d, 'postern.db-wal'))).toBe(false);
  });

  it('at close, fsyncs at once and lets the descriptor go; the fsync under way, finding it closed, answers its callers by that one', async () => {
    const d = dir();
    const db = openDb(d);
    cleanups.push(() => db.close());
    db.exec('CREATE TABLE t (x INTEGER)');
    let held: (() => void) | undefined;
    let heldFd = -1;
    const wal = new WalSync(path.join(d, 'postern.db-wal'), (fd, cb) => {
      if (held) return fsync(fd, cb); // the directory's, after the log's
      heldFd = fd;
      held = () => fsync(fd, cb);
    });
    const pending = wal.request();
    expect(held).toBeDefined();
    wal.close();
    // close() synced by itself…
    expect(wal.count).toBe(1);
    // …and closed the descriptor (the data directory is free to be unmounted).
    expect(() => fstatSync(heldFd)).toThrow(/EBADF/);
    held!();
    await pending;
  });

  it('makes writes still waiting for their fsync durable at close: they resolve, none fails on a closed descriptor', async () => {
    const d = dir();
    const s = openStore(d);
    // The first is in its fsync when the store closes, the second waits for the next one.
    const writes = [s.users.add('alice', 'hash', 1), s.users.add('bob', 'hash', 1)];
    await Promise.resolve();
    s.close();
    await expect(Promise.all(writes)).resolves.toMatchObject([{ username: 'alice' }, { username: 'bob' }]);
    const again = open(d);
    expect((await again.users.list()).map((u) => u.username)).toEqual(['alice', 'bob']);
  });
});

describe('a failed fsync of the log', () => {
  it('fails the write that waited for it, and every later write before it writes anything, even once fsync works again (no retry over lost pages)', async () => {
    let failures = 1;
    const s = openStore(dir(), { walFsync: (fd, cb) => (failures-- > 0 ? setImmediate(() => cb(EIO)) : fsync(fd, cb)) });
    cleanups.push(() => s.close());
    await expect(s.users.add('alice', 'hash', 1)).rejects.toThrow(/fsync of the store's write-ahead log .*postern\.db-wal failed \(EIO: i\/o error, fsync\).*until postern is restarted/);
    expect(failures).toBe(0);
    // Refused before writing: a client told 451 retries, and its refused copy must not be
    // in the queue to be delivered as well.
    await expect(s.users.add('bob', 'hash', 1)).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('fsync of the store') });
    await expect(s.tx(async (t) => void (await t.users.add('carol', 'hash', 1)))).rejects.toMatchObject({ code: 'EIO' });
    const spool = new Spool(s.queue);
    await expect(spool.accept(message())).rejects.toMatchObject({ code: 'EIO' });
    // Reads still work: alice's row, committed before its fsync failed, and nothing after it.
    expect((await s.users.list()).map((u) => u.username)).toEqual(['alice']);
    expect(await s.queue.list()).toEqual([]);
    expect(sqliteSyncCount(s)).toBe(0);
  });

  it('fails a transaction whose fsync failed, after its COMMIT', async () => {
    const d = dir();
    const db = openDb(d);
    cleanups.push(() => db.close());
    db.exec('CREATE TABLE t (x INTEGER)');
    const wal = new WalSync(path.join(d, 'postern.db-wal'), (_fd, cb) => setImmediate(() => cb(EIO)));
    cleanups.push(() => wal.close());
    const writes = writesOn(db);
    const gate = new Gate(1000, { writes: () => writes.n, sync: () => wal.request(), failed: () => wal.failed });
    const tx = gate.exclusive(
      () => db.exec('BEGIN IMMEDIATE'),
      async () => void (await gate.run(() => db.prepare('INSERT INTO t (x) VALUES (1)').run())),
      () => db.exec('COMMIT'),
      () => db.exec('ROLLBACK'),
    );
    await expect(tx).rejects.toMatchObject({ code: 'EIO' });
    expect(db.inTransaction).toBe(false);
  });

  it('also syncs the directory after opening the log, and a failure there counts as one', async () => {
    const d = dir();
    const db = openDb(d);
    cleanups.push(() => db.close());
    db.exec('CREATE TABLE t (x INTEGER)');
    const synced: number[] = [];
    let calls = 0;
    const wal = new WalSync(path.join(d, 'postern.db-wal'), (fd, cb) => {
      synced.push(fd);
      // The log's fsync works; the directory's (the second call) fails.
      if (++calls === 2) setImmediate(() => cb(EIO));
      else fsync(fd, cb);
    });
    cleanups.push(() => wal.close());
    await expect(wal.request()).rejects.toMatchObject({ code: 'EIO' });
    expect(synced).toHaveLength(2);
    expect(synced[0]).not.toBe(synced[1]);
  });

  it('is not one when the file system refuses fsync on a directory (EINVAL): the log itself was synced', async () => {
    const d = dir();
    const db = openDb(d);
    cleanups.push(() => db.close());
    db.exec('CREATE TABLE t (x INTEGER)');
    let calls = 0;
    const EINVAL = Object.assign(new Error('EINVAL: invalid argument, fsync'), { code: 'EINVAL' });
    const wal = new WalSync(path.join(d, 'postern.db-wal'), (fd, cb) => (++calls === 2 ? setImmediate(() => cb(EINVAL)) : fsync(fd, cb)));
    cleanups.push(() => wal.close());
    await wal.request();
    await wal.request();
    // The directory once, after the log was opened; the log every time.
    expect([calls, wal.count]).toEqual([3, 2]);
  });

  it('says the log is missing when there is none to sync after a write', async () => {
    const d = dir();
    mkdirSync(path.join(d, 'sub'));
    const wal = new WalSync(path.join(d, 'sub', 'postern.db-wal'));
    await expect(wal.request()).rejects.toThrow(/write-ahead log .*postern\.db-wal is missing after a write/);
    wal.close();
  });
});
