import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SpoolHealth } from '../../src/spool/health.js';
import { Spool } from '../../src/spool/spool.js';
import { newQueueId } from '../../src/spool/message.js';
import { openStore } from '../../src/store/index.js';
import { startTestRelay, tempDir, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

const mode = (f: string) => statSync(f).mode & 0o777;

describe('database files', () => {
  it('are 0600 whatever the umask: the file, its -wal and its -shm, new or left 0644 by an older version', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const old = process.umask(0o022);
    cleanups.push(() => void process.umask(old));
    const file = path.join(dir, 'postern.db');
    let store = openStore(dir);
    await store.users.add('alice', 'not a real hash', 0);
    expect([mode(file), mode(`${file}-wal`), mode(`${file}-shm`)]).toEqual([0o600, 0o600, 0o600]);
    store.close();
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      try {
        chmodSync(f, 0o644);
      } catch {
        // a clean close may have removed the side files
      }
    }
    store = openStore(dir);
    await store.users.add('bob', 'not a real hash', 0);
    expect([mode(file), mode(`${file}-wal`), mode(`${file}-shm`)]).toEqual([0o600, 0o600, 0o600]);
    store.close();
  });
});

describe('spool health', () => {
  it('says the database is locked after a commit failed on another process\'s lock, and recovers by itself once it is released', async () => {
    const dir = tempDir();
    // The store waits 5 s for another process's lock before a commit fails; here 50 ms.
    const store = openStore(dir, { lockBudgetMs: 50 });
    cleanups.push(() => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const health = new SpoolHealth(dir, 1024, store.queue);
    const spool = new Spool(store.queue, health);
    const other = new Database(path.join(dir, 'postern.db'));
    cleanups.push(() => void other.close());
    other.exec('BEGIN IMMEDIATE');
    const msg = { id: newQueueId(0), envelope: { mailFrom: 'a@example.com', rcptTo: ['b@example.org'] }, principal: null, clientIp: '127.0.0.1', receivedAt: 0, state: 'queued' as const, data: Buffer.from('Subject: x\r\n\r\nx\r\n') };
    await expect(spool.accept(msg)).rejects.toThrow(/locked/);
    expect(await health.state()).toEqual({ ok: false, detail: 'spool cannot write: database locked by another process past its timeout' });
    expect((await health.state()).ok).toBe(false);
    other.exec('ROLLBACK');
    expect(await health.state()).toEqual({ ok: true, detail: 'ok' });
  });

  // Needs root for mount, as CI has: a real full disk, not a simulated one.
  it('answers /healthz 503 and MAIL FROM 452 4.3.1 while data_dir is full, and 200 and 250 once space is freed', async () => {
    const dir = tempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir]);
    cleanups.push(() => {
      execFileSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    });
    const t: TestRelay = await startTestRelay({ submission: { max_message_bytes: 1_048_576 } }, { dir: path.join(dir, 'data') });
    cleanups.push(() => t.stop());
    await t.addUser('alice', PASS);
    const healthz = async () => {
      const r = await fetch(`http://127.0.0.1:${t.relay.metricsPort}/healthz`);
      return `${r.status} ${(await r.text()).trim()}`;
    };
    expect(await healthz()).toBe('200 ok');

    mkdirSync(path.join(dir, 'other'));
    const filler = path.join(dir, 'other', 'filler');
    const s = statfsSync(dir);
    writeFileSync(filler, Buffer.alloc(s.bavail * s.bsize - 1_048_576));
    expect(await healthz()).toMatch(/^503 spool cannot write: disk full \(data_dir has 1\.0 MB free, a message may need 1\.5 MB\)$/);
    const c = await SmtpClient.connect(t.port);
    expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('452 4.3.1 Insufficient system storage, please try again later');
    expect(t.logs.events('mail.refused').at(-1)).toMatchObject({ reason: 'SPOOL_FULL' });

    rmSync(filler);
    expect(await healthz()).toBe('200 ok');
    expect(await c.send('alice@example.com', ['bob@example.org'], 'Subject: room again\r\n\r\nhello\r\n')).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await c.quit();
  });
});
