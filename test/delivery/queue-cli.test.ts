import { afterEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../../src/cli/run.js';
import { cli } from '../helpers/cli.js';
import type { Rr } from '../helpers/dnsd.js';
import { closeDeliveryFixtures, startHarness, type Harness } from '../helpers/delivery.js';
import { startSinks, type Sink } from '../helpers/sink.js';

let h: Harness | undefined;
let sinks: Sink[] = [];
// Everything a test starts is closed after it, whatever the test left assigned here.
afterEach(closeDeliveryFixtures);

const zone: Rr[] = [
  { type: 'A', name: 'mx.dest.example', data: '127.0.0.2' },
  { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } },
];

async function setup() {
  sinks = await startSinks(['127.0.0.2']);
  h = await startHarness({ records: zone, port: sinks[0]!.port });
  const config = path.join(h.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n`);
  return { h, sink: sinks[0]!, config };
}

describe('postern queue list, retry and delete', () => {
  it('lists each recipient with its state, attempts, next try and last error', async () => {
    const { h, sink, config } = await setup();
    sink.behaviour.rcpt = (a) => (a.startsWith('later') ? '451 4.7.1 Greylisted' : undefined);
    const id = await h.submit({ from: 'alice@sender.example', to: ['now@dest.example', 'later@dest.example'] });
    await h.drain();
    const out = await cli(config, ['queue', 'list', '--json']);
    expect(out.code).toBe(0);
    const [m] = JSON.parse(out.out) as Array<Record<string, unknown>>;
    // Queued by the harness's spool, which names no node; nobody is delivering it between attempts.
    expect(m).toMatchObject({ id, state: 'queued', attempts: 1, next_attempt: '2026-11-22T12:05:00Z', accepted_by: null, delivering_node: null });
    expect(m!.recipients).toEqual([
      { address: 'now@dest.example', state: 'delivered', attempts: 1, last_attempt: '2026-11-22T12:00:00Z', next_attempt: null, status: '2.0.0', remote_mta: 'mx.dest.example', tls: { version: null, verified: false, policy: 'opportunistic' }, last_error: null },
      { address: 'later@dest.example', state: 'deferred', attempts: 1, last_attempt: '2026-11-22T12:00:00Z', next_attempt: '2026-11-22T12:05:00Z', status: '4.7.1', remote_mta: 'mx.dest.example', tls: { version: null, verified: false, policy: 'opportunistic' }, last_error: '451 4.7.1 Greylisted' },
    ]);
    const human = (await cli(config, ['queue', 'list'])).out;
    expect(human).toMatch(new RegExp(`^${id}\\s+queued\\s+\\d+\\s+2026-11-22T12:00:00Z\\s+2026-11-22T12:05:00Z\\s+alice@sender\\.example\\s+-\\s+-$`, 'm'));
    expect(human).toMatch(/^ {2}later@dest\.example\s+deferred\s+1 tries\s+2026-11-22T12:00:00Z\s+2026-11-22T12:05:00Z\s+4\.7\.1\s+451 4\.7\.1 Greylisted$/m);
    // The status and the last error stand in columns of their own, under their headings, not under FROM.
    const lines = human.split('\n');
    const row = lines.find((l) => l.includes('later@dest.example'))!;
    expect(row.indexOf('4.7.1 ')).toBe(lines[0]!.indexOf('STATUS'));
    expect(row.indexOf('451 4.7.1 Greylisted')).toBe(lines[0]!.indexOf('LAST ERROR'));
    expect(row.slice(lines[0]!.indexOf('FROM'), lines[0]!.indexOf('STATUS')).trim()).toBe('');
    expect(lines.find((l) => l.includes('now@dest.example'))).toMatch(/\s2\.0\.0$/);
  });

  it('lists "not yet" as null in JSON and refuses an unknown state as a usage error', async () => {
    const { h, config } = await setup();
    const id = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], state: 'held' });
    const [m] = JSON.parse((await cli(config, ['queue', 'list', '--json', '--state', 'held'])).out) as Array<Record<string, unknown>>;
    expect(m).toMatchObject({ id, state: 'held', attempts: 0, next_attempt: null, delivering_node: null });
    expect(m!.recipients).toEqual([{ address: 'x@dest.example', state: 'pending', attempts: 0, last_attempt: null, next_attempt: null, status: null, remote_mta: null, tls: null, last_error: null }]);
    expect(await cli(config, ['queue', 'list', '--state', 'queued'])).toEqual({ code: 0, out: 'no queued messages\n', err: '' });
    expect(await cli(config, ['queue', 'list', '--state', 'bogus'])).toEqual({ code: 2, out: '', err: 'postern: unknown state bogus: use one of queued, held, waiting-quota\n' });
  });

  it('retry makes a queued message due now, by id, from stdin or --all, and leaves held ones alone', async () => {
    const { h, sink, config } = await setup();
    sink.behaviour.rcpt = () => '451 4.7.1 Greylisted';
    const a = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'] });
    const held = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], state: 'held' });
    await h.drain();
    expect(await cli(config, ['queue', 'retry'])).toMatchObject({ code: 2, err: expect.stringContaining('needs message ids, - (ids on stdin) or --all') });
    const before = Date.now();
    expect(await cli(config, ['queue', 'retry', '-'], `${a}\n`)).toEqual({ code: 0, out: '1 message will be tried now\n', err: '' });
    expect((await h.store.queue.get(a))!.nextAttemptAt).toBeGreaterThanOrEqual(before);
    expect(await cli(config, ['queue', 'retry', held])).toEqual({ code: 1, out: '0 messages will be tried now\n', err: `postern: message ${held} is held: postern quarantine release ${held} sends it\n` });
    expect((await cli(config, ['queue', 'retry', '--all'])).out).toBe('1 message will be tried now (held and waiting ones are not retried)\n');
    expect((await h.store.queue.get(held))!.nextAttemptAt).toBeNull();
  });

  it('delete removes a message and records who, what and why in the audit table', async () => {
    const { h, config } = await setup();
    const id = await h.submit({ from: 'mallory@sender.example', to: ['x@dest.example', 'y@dest.example'], state: 'held' });
    expect(await cli(config, ['queue', 'delete', id, '--by', 'ops-alice', '--reason', 'phishing run'])).toEqual({ code: 0, out: `message ${id} deleted\n`, err: '' });
    expect(await h.store.queue.get(id)).toBeUndefined();
    expect(sqliteHandle(h.store).prepare('SELECT COUNT(*) AS n FROM recipients').get()).toEqual({ n: 0 });
    expect(sqliteHandle(h.store).prepare('SELECT actor, action, target, detail, reason FROM audit').all()).toEqual([
      { actor: 'ops-alice', action: 'queue.delete', target: `message:${id}`, detail: JSON.stringify({ state: 'held', from: 'mallory@sender.example', recipients: 2 }), reason: 'phishing run' },
    ]);
    expect(await cli(config, ['queue', 'delete', id])).toEqual({ code: 1, out: '', err: `postern: no such message: ${id} (see: postern queue list)\n` });
  });
});

describe('postern queue show', () => {
  it('shows the envelope, the state and why, each recipient and the headers; --json the same with nulls; --raw the exact bytes', async () => {
    const { h, sink, config } = await setup();
    sink.behaviour.rcpt = (a) => (a.startsWith('later') ? '451 4.7.1 Greylisted' : undefined);
    const id = await h.submit({ from: 'alice@sender.example', to: ['now@dest.example', 'later@dest.example'], principal: 'alice', body: 'Hello,\r\nthe invoice.\r\n' });
    await h.drain();
    const raw = (await h.store.queue.body(id))!;
    expect(await cli(config, ['queue', 'show', id])).toEqual({
      code: 0,
      err: '',
      out: [
        `id:           ${id}`,
        // The CLI reads the real clock, which is past the harness's 12:05.
        'state:        queued (due now)',
        'from:         <alice@sender.example>',
        'principal:    user:alice',
        'client ip:    127.0.0.1',
        'accepted by:  -',
        'received:     2026-11-22T12:00:00Z',
        `size:         ${raw.length} bytes`,
        'attempts:     1',
        'next attempt: 2026-11-22T12:05:00Z',
        'delivering:   -',
        '',
        'recipients:',
        '  ADDRESS             STATE      TRIES  LAST TRY              NEXT TRY              STATUS  LAST ERROR',
        '  now@dest.example    delivered  1      2026-11-22T12:00:00Z  -                     2.0.0',
        '  later@dest.example  deferred   1      2026-11-22T12:00:00Z  2026-11-22T12:05:00Z  4.7.1   451 4.7.1 Greylisted',
        '',
        'headers:',
        '  From: <alice@sender.example>',
        '  To: <now@dest.example>, <later@dest.example>',
        '  Subject: test message',
        '  Date: Sun, 22 Nov 2026 12:00:00 +0000',
        `  Message-ID: <${id}@smtp.test.example>`,
        '',
        `(the body is not shown: postern queue show ${id} --raw writes the whole message, ${raw.length} bytes)`,
        '',
      ].join('\n'),
    });

    const json = await cli(config, ['queue', 'show', id, '--json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)).toEqual({
      id,
      state: 'queued',
      from: 'alice@sender.example',
      principal: 'user:alice',
      client_ip: '127.0.0.1',
      size: raw.length,
      received: '2026-11-22T12:00:00Z',
      attempts: 1,
      next_attempt: '2026-11-22T12:05:00Z',
      accepted_by: null,
      delivering_node: null,
      recipients: [
        { address: 'now@dest.example', state: 'delivered', attempts: 1, last_attempt: '2026-11-22T12:00:00Z', next_attempt: null, status: '2.0.0', remote_mta: 'mx.dest.example', tls: { version: null, verified: false, policy: 'opportunistic' }, last_error: null },
        { address: 'later@dest.example', state: 'deferred', attempts: 1, last_attempt: '2026-11-22T12:00:00Z', next_attempt: '2026-11-22T12:05:00Z', status: '4.7.1', remote_mta: 'mx.dest.example', tls: { version: null, verified: false, policy: 'opportunistic' }, last_error: '451 4.7.1 Greylisted' },
      ],
      held: null,
      score: null,
      reasons: [],
      why: 'due now',
      headers: `From: <alice@sender.example>\r\nTo: <now@dest.example>, <later@dest.example>\r\nSubject: test message\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: <${id}@smtp.test.example>`,
    });

    // --raw through the byte writer, as bin/postern.js gives it: not one byte changed.
    const chunks: Buffer[] = [];
    let err = '';
    const code = await runCli(['--config', config, 'queue', 'show', id, '--raw'], { stdout: () => undefined, stdoutBytes: (b) => chunks.push(b), stderr: (s) => (err += s), stdin: async () => '', env: {} });
    expect({ code, err }).toEqual({ code: 0, err: '' });
    expect(Buffer.concat(chunks)).toEqual(raw);
    expect(Buffer.concat(chunks).toString('latin1')).toMatch(/\r\n\r\nHello,\r\nthe invoice\.\r\n$/);

    expect(await cli(config, ['queue', 'show', 'NOSUCHMESSAGE00'])).toEqual({ code: 1, out: '', err: 'postern: no such message: NOSUCHMESSAGE00 (delivered mail leaves the spool; see: postern queue list, postern audit)\n' });
    expect(await cli(config, ['queue', 'show'])).toMatchObject({ code: 2, err: expect.stringContaining('postern queue show needs one message id') });
  });

  it('says why a held or waiting message waits and what moves it on', async () => {
    const { h, config } = await setup();
    const held = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], principal: 'alice' });
    const waiting = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], principal: 'alice', state: 'waiting-quota' });
    expect((await cli(config, ['queue', 'hold', held, '--by', 'ops', '--reason', 'wrong invoice'])).code).toBe(0);
    const shown = JSON.parse((await cli(config, ['queue', 'show', held, '--json'])).out) as Record<string, unknown>;
    expect(shown).toMatchObject({ state: 'held', next_attempt: null, reasons: [{ id: 'admin-hold', weight: 0, detail: 'by ops: wrong invoice' }], why: `admin-hold; nothing is sent until postern quarantine release ${held}` });
    expect(shown.held).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const text = (await cli(config, ['queue', 'show', held])).out;
    expect(text).toContain(`\nstate:        held (admin-hold; nothing is sent until postern quarantine release ${held})\n`);
    expect(text).toContain('\nreasons:\n     0  admin-hold  by ops: wrong invoice\n');
    expect((await cli(config, ['queue', 'show', waiting])).out).toContain(
      `\nstate:        waiting-quota (over user:alice's rate limit; it leaves, oldest first, as quota frees (postern limits show alice), or now with postern queue retry --ignore-quota ${waiting})\n`,
    );
  });
});

describe('postern queue hold', () => {
  it('keeps queued mail from delivery until quarantine release, which then delivers it exactly once', async () => {
    const { h, sink, config } = await setup();
    const id = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example', 'y@dest.example'], principal: 'alice' });
    expect(await cli(config, ['queue', 'hold', id, '--by', 'ops-anna', '--reason', 'customer disputes the invoice'])).toEqual({
      code: 0,
      out: `message ${id} held (postern quarantine release ${id} sends it on)\n`,
      err: '',
    });
    await h.drain();
    expect(sink.messages).toEqual([]);
    // In the quarantine like mail policy held, with the hold as its reason.
    expect(JSON.parse((await cli(config, ['quarantine', 'list', '--json'])).out)).toMatchObject([
      { id, state: 'held', reasons: [{ id: 'admin-hold', weight: 0, detail: 'by ops-anna: customer disputes the invoice' }] },
    ]);
    expect((await cli(config, ['quarantine', 'list'])).out).toMatch(new RegExp(`^${id} .* admin-hold\\n`, 'm'));
    expect(sqliteHandle(h.store).prepare('SELECT actor, action, target, reason FROM audit').all()).toEqual([
      { actor: 'ops-anna', action: 'queue.hold', target: `message:${id}`, reason: 'customer disputes the invoice' },
    ]);

    expect(await cli(config, ['quarantine', 'release', id, '--by', 'ops-anna'])).toMatchObject({ code: 0, out: `message ${id} released to the delivery queue\n` });
    // The release is due by the real clock the CLI reads: the harness's clock catches up.
    h.clock.set(Date.now());
    await h.drain();
    expect(sink.messages.map((m) => m.to)).toEqual([['x@dest.example', 'y@dest.example']]);
    h.clock.advance(24 * 3_600_000);
    await h.drain();
    expect(sink.messages).toHaveLength(1);
    expect(await h.store.queue.get(id)).toBeUndefined();
  });

  it('says per id what it did: held, already held, unknown, or held while a node delivers it; exit 1 if any failed', async () => {
    const { h, config } = await setup();
    const queued = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'] });
    const waiting = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], principal: 'alice', state: 'waiting-quota' });
    const held = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], state: 'held' });
    const busy = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'] });
    // Another node's attempt under way: claimed until a minute from now on the real clock the CLI reads.
    await h.store.delivery.postpone(queued, h.clock.now() + 3_600_000);
    expect(await h.store.delivery.claimDue('relay-2:4242:abcdef', h.clock.now(), Date.now() + 60_000, 10)).toEqual([busy]);
    expect(await cli(config, ['queue', 'hold', '-', 'NOSUCHMESSAGE00'], `${queued}\n${waiting}\n${held}\n${busy}\n`)).toEqual({
      code: 1,
      out: [
        `message ${queued} held (postern quarantine release ${queued} sends it on)`,
        `message ${waiting} held (postern quarantine release ${waiting} sends it on)`,
        `message ${busy} held; relay-2 is delivering it now: that attempt finishes, and what it delivers stays delivered (postern quarantine release ${busy} sends it on)`,
        '',
      ].join('\n'),
      // Ids named on the command line come before those read from stdin.
      err: [
        'postern: no such message: NOSUCHMESSAGE00 (delivered mail leaves the spool; see: postern queue list, postern audit)',
        `postern: message ${held} is already held (see: postern quarantine show ${held})`,
        '',
      ].join('\n'),
    });
    expect((await h.store.queue.list('held')).map((m) => m.id).sort()).toEqual([queued, waiting, held, busy].sort());
    expect(await cli(config, ['queue', 'hold'])).toMatchObject({ code: 2, err: expect.stringContaining('postern queue hold needs message ids') });
  });
});

describe('postern queue retry of held and waiting mail', () => {
  it('gives each id its own reason, and --ignore-quota sends waiting mail now, audited', async () => {
    const { h, sink, config } = await setup();
    const waiting = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], principal: 'alice', state: 'waiting-quota' });
    const held = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], state: 'held' });
    expect(await cli(config, ['queue', 'retry', waiting, held, 'NOSUCHMESSAGE00'])).toEqual({
      code: 1,
      out: '0 messages will be tried now\n',
      err: [
        `postern: message ${waiting} is waiting for quota (user:alice's rate limit): postern queue retry --ignore-quota ${waiting} sends it now, audited; or raise the limit with postern user limits`,
        `postern: message ${held} is held: postern quarantine release ${held} sends it`,
        'postern: no such message: NOSUCHMESSAGE00 (delivered mail leaves the spool; see: postern queue list, postern audit)',
        '',
      ].join('\n'),
    });
    expect(await cli(config, ['queue', 'retry', '--ignore-quota', '--all'])).toMatchObject({ code: 2, err: expect.stringContaining('postern quarantine release --user NAME --all --state waiting-quota') });
    expect(await cli(config, ['queue', 'retry', '--ignore-quota', waiting, '--by', 'ops-anna', '--reason', 'board papers'])).toEqual({
      code: 0,
      out: `message ${waiting} leaves the quota wait: sent outside user:alice's rate limit (audited)\n1 message will be tried now\n`,
      err: '',
    });
    expect(sqliteHandle(h.store).prepare('SELECT actor, action, target, detail, reason FROM audit').all()).toEqual([
      {
        actor: 'ops-anna',
        action: 'queue.ignore-quota',
        target: `message:${waiting}`,
        detail: JSON.stringify({ state: 'waiting-quota', from: 'alice@sender.example', principal: 'alice', principal_kind: 'user', recipients: 1 }),
        reason: 'board papers',
      },
    ]);
    h.clock.set(Date.now());
    await h.drain();
    expect(sink.messages.map((m) => m.to)).toEqual([['x@dest.example']]);
    expect(await h.store.queue.get(waiting)).toBeUndefined();
    expect((await h.store.queue.get(held))?.state).toBe('held');
  });

  it('still makes mail due when delivery is disabled, and says that nothing is sent until it is enabled', async () => {
    const { h, config } = await setup();
    const off = path.join(h.dir, 'off.toml');
    writeFileSync(off, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n[delivery]\nenabled = false\n`);
    const id = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'] });
    await h.store.delivery.postpone(id, Date.now() + 3_600_000);
    const before = Date.now();
    const warning = 'postern: delivery is disabled in the config ([delivery] enabled = false): nothing is sent until it is set to true and postern serve restarted\n';
    expect(await cli(off, ['queue', 'retry', '--all'])).toEqual({ code: 0, out: '1 message due now (held and waiting ones are not retried)\n', err: warning });
    expect((await h.store.queue.get(id))!.nextAttemptAt).toBeGreaterThanOrEqual(before);
    expect(await cli(off, ['queue', 'retry', id])).toEqual({ code: 0, out: '1 message due now\n', err: warning });
    // The same command with delivery on promises an attempt.
    expect(await cli(config, ['queue', 'retry', id])).toEqual({ code: 0, out: '1 message will be tried now\n', err: '' });
  });
});

describe('postern queue delete of everything', () => {
  it('deletes every message with ALL or --all, audited one by one, and refuses "all" in any other case', async () => {
    const { h, config } = await setup();
    const ids: string[] = [];
    for (const state of ['queued', 'held', 'waiting-quota'] as const) {
      ids.push(await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], state }));
      // A millisecond apart: the audit rows come oldest message first.
      h.clock.advance(1);
    }
    for (const word of ['all', 'All', 'aLL']) {
      expect(await cli(config, ['queue', 'delete', word])).toEqual({ code: 2, out: '', err: `postern: postern queue delete ${word}: to delete every message in the spool type ALL in capitals, or use --all\n` });
    }
    expect(await cli(config, ['queue', 'delete', 'ALL', ids[0]!])).toEqual({ code: 2, out: '', err: 'postern: postern queue delete: give ids or ALL (--all), not both\n' });
    expect(await h.store.queue.count()).toBe(3);
    expect(await cli(config, ['queue', 'delete', 'ALL', '--by', 'ops-anna', '--reason', 'test run'])).toEqual({ code: 0, out: '3 messages deleted (each recorded in the audit log)\n', err: '' });
    expect(await h.store.queue.count()).toBe(0);
    expect(sqliteHandle(h.store).prepare('SELECT actor, action, target, reason FROM audit ORDER BY id').all()).toEqual(
      ids.map((id) => ({ actor: 'ops-anna', action: 'queue.delete', target: `message:${id}`, reason: 'test run' })),
    );
    const late = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'] });
    expect(await cli(config, ['queue', 'delete', '--all'])).toEqual({ code: 0, out: '1 message deleted (recorded in the audit log)\n', err: '' });
    expect(await h.store.queue.get(late)).toBeUndefined();
    expect(await cli(config, ['queue', 'delete', '--all'])).toEqual({ code: 0, out: 'queue is empty: nothing deleted\n', err: '' });
  });
});
