import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/domain/clock.js';
import { AdminLog } from '../../src/obs/admin-log.js';
import { createLogger } from '../../src/obs/log.js';
import type { Store } from '../../src/store/index.js';
import { openPostgresStore } from '../../src/store/postgres/index.js';
import { cli } from '../helpers/cli.js';
import { hasPostgres, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { LogCapture, startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const QUEUED = /^250 2\.0\.0 Ok: queued as (\w+)$/;

let t: TestRelay;
let config: string;
beforeAll(async () => {
  t = await startTestRelay();
  await t.addUser('alice', PASS);
  await t.addUser('bob', PASS);
  config = path.join(t.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[auth]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n`);
});
afterAll(() => t.stop());

describe('log events about a user or device', () => {
  it('name it by principal and principal_kind, and message.accepted carries the Message-ID and a recipient count', async () => {
    const c = await SmtpClient.connect(t.port);
    expect(await c.login('alice', PASS)).toMatch(/^235 /);
    const withId = QUEUED.exec(await c.send('alice@example.com', ['bob@x.example', 'carol@y.example'], 'Message-ID: <a1@client.example>\r\nSubject: hi\r\n\r\nhello\r\n'))![1]!;
    const without = QUEUED.exec(await c.send('alice@example.com', ['bob@x.example'], 'Subject: hi\r\n\r\nhello\r\n'))![1]!;
    // A MAIL FROM outside alice's senders: refused, suspended, an incident.
    expect(await c.cmd('MAIL FROM:<ceo@bank.example>')).toMatch(/^553 5\.7\.1 /);
    await c.quit();
    const wrong = await SmtpClient.connect(t.port);
    expect(await wrong.login('bob', 'not the password')).toMatch(/^535 5\.7\.8 /);
    await wrong.quit();
    expect((await cli(config, ['device', 'add', 'printer-3f', '--ip', '127.0.0.3', '--sender', 'scanner@example.com'])).code).toBe(0);
    const d = await SmtpClient.connect(t.port, { localAddress: '127.0.0.3' });
    await d.cmd('EHLO printer');
    expect(await d.send('scanner@example.com', ['ops@example.com'], 'Subject: scan\r\n\r\nscan\r\n')).toMatch(QUEUED);
    await d.quit();

    const accepted = t.logs.events('message.accepted');
    expect(accepted[0]).toMatchObject({ principal: 'alice', principal_kind: 'user', queue_id: withId, message_id: '<a1@client.example>', rcpts: 2 });
    // The Message-ID Postern added for a client that left it out (RFC 6409 8.3).
    expect(accepted[1]).toMatchObject({ queue_id: without, rcpts: 1, message_id: expect.stringMatching(new RegExp(`^<${without}\\.[0-9a-f]{12}@smtp\\.test\\.example>$`)) });
    expect(accepted[2]).toMatchObject({ principal: 'printer-3f', principal_kind: 'device' });
    // The addresses themselves only at debug level, in an event of their own.
    expect(accepted.every((e) => !('recipients' in e))).toBe(true);
    expect(t.logs.events('message.recipients')[0]).toMatchObject({ level: 'debug', queue_id: withId, recipients: ['bob@x.example', 'carol@y.example'] });

    expect(t.logs.events('auth.ok')[0]).toMatchObject({ principal: 'alice', principal_kind: 'user' });
    expect(t.logs.events('auth.fail')).toMatchObject([{ principal: 'bob', principal_kind: 'user', reason: 'AUTH_INVALID' }]);
    expect(t.logs.events('mail.refused')).toMatchObject([{ principal: 'alice', principal_kind: 'user', reason: 'SENDER_NOT_BOUND' }]);
    expect(t.logs.events('user.suspended')).toMatchObject([{ principal: 'alice', principal_kind: 'user' }]);
    expect(t.logs.events('incident.recorded')).toMatchObject([{ principal: 'alice', principal_kind: 'user', kind: 'foreign-sender' }]);
    expect(t.logs.events('device.recognised')).toMatchObject([{ principal: 'printer-3f', principal_kind: 'device' }]);
    // One way everywhere: no "user" field, never the "user:alice" label, always the kind beside the name.
    const named = t.logs.lines.filter((l) => typeof l.principal === 'string');
    expect(named.length).toBeGreaterThan(8);
    expect(t.logs.lines.filter((l) => 'user' in l || 'device' in l)).toEqual([]);
    expect(named.filter((l) => (l.principal as string).includes(':') || !['user', 'device'].includes(l.principal_kind as string))).toEqual([]);
  });
});

describe('admin actions in the server log', () => {
  // The relay's own timer polls too (every second); poll() runs a round after any under way,
  // so once it returns, whatever the CLI wrote before is in the log, logged by one of them.
  const actions = (r: TestRelay) => r.logs.events('admin.action');

  it('logs each change made with the CLI once, as admin.action, with the target in the fields other events use', async () => {
    await t.relay.adminLog.poll();
    const before = actions(t).length;
    expect((await cli(config, ['user', 'suspend', 'bob', '--reason', 'phished', '--by', 'helpdesk-ann'])).code).toBe(0);
    const incident = (await t.relay.store.incidents.list({ name: 'alice' }))[0]!.id;
    expect((await cli(config, ['incidents', 'resolve', String(incident), '--by', 'helpdesk-ann'])).code).toBe(0);
    await t.relay.adminLog.poll();
    expect(actions(t).slice(before)).toEqual([
      expect.objectContaining({ level: 'info', action: 'user.suspend', target: 'user:bob', principal: 'bob', principal_kind: 'user', actor: 'helpdesk-ann', reason: 'phished', detail: null }),
      expect.objectContaining({ action: 'incident.resolve', target: `incident:${incident}`, incident, detail: { principal: 'alice', principal_kind: 'user', kind: 'foreign-sender' } }),
    ]);
    expect(await t.relay.adminLog.poll()).toBe(0);
    expect(actions(t)).toHaveLength(before + 2);
  });

  it('logs on one node of several, and the next node goes on where a stopped one left off', async () => {
    const second = await startTestRelay({}, { dir: t.dir });
    try {
      // The first node holds the lease: the second logs nothing.
      expect((await cli(config, ['user', 'unsuspend', 'bob', '--reason', 'false alarm'])).code).toBe(0);
      await second.relay.adminLog.poll();
      await t.relay.adminLog.poll();
      expect(actions(t).filter((e) => e.reason === 'false alarm')).toHaveLength(1);
      expect(actions(second)).toEqual([]);
      // The first node stops (giving the lease up); the second takes it at its next lease check.
      await t.relay.adminLog.stop();
      expect((await cli(config, ['user', 'suspend', 'bob', '--reason', 'again'])).code).toBe(0);
      second.clock.advance(20_000);
      await second.relay.adminLog.poll();
      expect(actions(second)).toMatchObject([{ action: 'user.suspend', principal: 'bob', reason: 'again' }]);
      expect(actions(t).filter((e) => e.reason === 'again')).toEqual([]);
    } finally {
      await second.stop();
    }
  });
});

describe.runIf(hasPostgres)('the follower on PostgreSQL, where a later id can commit first', () => {
  let pg: TestPostgres;
  let store: Store;
  beforeAll(async () => {
    pg = await startPostgres();
    store = await openPostgresStore(await pg.database());
  });
  afterAll(async () => {
    store.close();
    await pg.stop();
  });

  it('waits at a hole in the ids for the insert still in its transaction, and passes one rolled back after gapMs', async () => {
    const logs = new LogCapture();
    const clock = new ManualClock();
    const follower = new AdminLog({ audit: store.audit, leases: store.leases, log: createLogger('info', logs), now: () => clock.now(), owner: 'node-a:1:x' }, { gapMs: 30_000 });
    // Its first round takes the lease and places the cursor; no timer: the test drives every round.
    expect(await follower.poll()).toBe(0);
    const row = (target: string) => ({ at: clock.now(), actor: 'admin', action: 'queue.delete', target, detail: { n: 1 }, reason: null });
    const targets = () => logs.events('admin.action').map((e) => e.target);

    // An open transaction holds the next id; the entry after it commits first.
    let inserted!: () => void;
    let commit!: () => void;
    const holding = new Promise<void>((resolve) => (inserted = resolve));
    const open = store.tx(async (tx) => {
      await tx.audit.record(row('message:SLOW'));
      inserted();
      await new Promise<void>((resolve) => (commit = resolve));
    });
    await holding;
    await store.audit.record(row('message:FAST'));
    expect(await follower.poll()).toBe(0);
    commit();
    await open;
    expect(await follower.poll()).toBe(2);
    expect(targets()).toEqual(['message:SLOW', 'message:FAST']);

    // A rolled-back insert leaves a hole for good: waited for, then passed.
    await expect(
      store.tx(async (tx) => {
        await tx.audit.record(row('message:GONE'));
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    await store.audit.record(row('message:AFTER'));
    expect(await follower.poll()).toBe(0);
    clock.advance(29_000);
    expect(await follower.poll()).toBe(0);
    clock.advance(1_000);
    expect(await follower.poll()).toBe(1);
    expect(targets()).toEqual(['message:SLOW', 'message:FAST', 'message:AFTER']);
  });
});
