import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
let t: TestRelay | undefined;
let holder: ChildProcess | undefined;
afterEach(async () => {
  holder?.kill('SIGKILL');
  holder = undefined;
  await t?.stop();
  t = undefined;
});

/** Another process (an admin's sqlite3, a backup) holding an exclusive lock until told to let go. */
async function holdLock(file: string): Promise<{ release(): Promise<void> }> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(${JSON.stringify(file)});
    db.exec('BEGIN EXCLUSIVE');
    console.log('locked');
    process.stdin.once('data', () => { db.exec('COMMIT'); db.close(); console.log('released'); process.exit(0); });`;
  holder = spawn(process.execPath, ['-e', script], { cwd: path.resolve(import.meta.dirname, '../..'), stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: holder.stdout! });
  const [first] = (await once(lines, 'line')) as [string];
  expect(first).toBe('locked');
  const child = holder;
  return {
    async release() {
      child.stdin!.write('go\n');
      const [line] = (await once(lines, 'line')) as [string];
      expect(line).toBe('released');
    },
  };
}

/**
 * A relay with alice logged in on one session and another session idle, then the database
 * locked by another process; `depth` is the queue before anything was tried under the lock.
 */
async function lockedRelay(overrides: Parameters<typeof startTestRelay>[0]) {
  t = await startTestRelay(overrides);
  await t.addUser('alice', PASS);
  const sender = await SmtpClient.connect(t.port);
  expect(await sender.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  const idle = await SmtpClient.connect(t.port);
  await idle.cmd('EHLO client.example');
  const depth = (await t.relay.store.queue.list()).length;
  const lock = await holdLock(path.join(t.dir, 'postern.db'));
  return { sender, idle, depth, lock };
}

describe('a database lock held by another process', () => {
  it('never freezes the event loop: NOOP answers at once, a submission waits a bounded time and gets 451 4.3.0, and nothing half-written is left', async () => {
    const { sender, idle, depth, lock } = await lockedRelay({});
    const started = performance.now();
    let answered = false;
    const reply = sender.send('alice@example.com', ['bob@example.org'], 'From: <alice@example.com>\r\nSubject: locked out\r\n\r\nhello\r\n').finally(() => (answered = true));
    // For as long as the submission waits for the lock, every other client is served.
    const noops: number[] = [];
    while (!answered) {
      const t0 = performance.now();
      expect(await idle.cmd('NOOP')).toMatch(/^250 /);
      noops.push(performance.now() - t0);
    }
    expect(noops.length).toBeGreaterThan(50);
    expect(Math.max(...noops)).toBeLessThan(100);
    expect(await reply).toBe('451 4.3.0 Temporary local problem, please try again later');
    expect(performance.now() - started).toBeGreaterThanOrEqual(4900);
    await lock.release();

    expect((await t!.relay.store.queue.list()).length).toBe(depth);
    expect(await sender.send('alice@example.com', ['bob@example.org'], 'From: <alice@example.com>\r\nSubject: again\r\n\r\nhello\r\n')).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect((await t!.relay.store.queue.list()).length).toBe(depth + 1);
    await sender.quit();
    await idle.quit();
  }, 20_000);

  it('commits a waiting message once the lock is given back within the bound, and answers 250 then', async () => {
    // No quota ledger: the spool's own commit is what waits.
    const { sender, idle, depth, lock } = await lockedRelay({ limits: { enabled: false } });
    let answered = false;
    const reply = sender.send('alice@example.com', ['bob@example.org'], 'From: <alice@example.com>\r\nSubject: waits\r\n\r\nhello\r\n').finally(() => (answered = true));
    for (let i = 0; i < 50; i++) expect(await idle.cmd('NOOP')).toMatch(/^250 /);
    expect(answered).toBe(false);
    await lock.release();
    expect(await reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    expect((await t!.relay.store.queue.list()).length).toBe(depth + 1);
    await sender.quit();
    await idle.quit();
  }, 20_000);
});
