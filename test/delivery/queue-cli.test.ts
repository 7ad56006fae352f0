import { afterEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
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
      { address: 'now@dest.example', state: 'delivered', attempts: 1, last_attempt: '2026-11-22T12:00:00Z', next_attempt: '-', status: '2.0.0', remote_mta: 'mx.dest.example', last_error: null },
      { address: 'later@dest.example', state: 'deferred', attempts: 1, last_attempt: '2026-11-22T12:00:00Z', next_attempt: '2026-11-22T12:05:00Z', status: '4.7.1', remote_mta: 'mx.dest.example', last_error: '451 4.7.1 Greylisted' },
    ]);
    const human = (await cli(config, ['queue', 'list'])).out;
    expect(human).toMatch(new RegExp(`^${id}\\s+queued\\s+\\d+\\s+2026-11-22T12:00:00Z\\s+2026-11-22T12:05:00Z\\s+alice@sender\\.example\\s+-\\s+-$`, 'm'));
    expect(human).toMatch(/^ {2}later@dest\.example\s+deferred\s+1 tries\s+2026-11-22T12:00:00Z\s+2026-11-22T12:05:00Z\s+4\.7\.1 451 4\.7\.1 Greylisted$/m);
  });

  it('retry makes a queued message due now, by id, from stdin or --all, and leaves held ones alone', async () => {
    const { h, sink, config } = await setup();
    sink.behaviour.rcpt = () => '451 4.7.1 Greylisted';
    const a = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'] });
    const held = await h.submit({ from: 'alice@sender.example', to: ['x@dest.example'], state: 'held' });
    await h.drain();
    expect(await cli(config, ['queue', 'retry'])).toMatchObject({ code: 2, err: expect.stringContaining('needs message ids, - (ids on stdin) or --all') });
    const before = Date.now();
    expect(await cli(config, ['queue', 'retry', '-'], `${a}\n`)).toEqual({ code: 0, out: '1 message will be tried now (held and waiting ones are not retried)\n', err: '' });
    expect((await h.store.queue.get(a))!.nextAttemptAt).toBeGreaterThanOrEqual(before);
    expect(await cli(config, ['queue', 'retry', held])).toMatchObject({ code: 1, err: expect.stringContaining('1 id is not queued (unknown, held or waiting)') });
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
