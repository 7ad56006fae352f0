import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import net from 'node:net';
import { once } from 'node:events';
import path from 'node:path';
import { openStore } from '../../src/store/index.js';
import { cli } from '../helpers/cli.js';
import { BUILT, killAll, serve } from '../helpers/child.js';
import type { DnsServer } from '../helpers/dnsd.js';
import { SERVED_PASS as PASS, servedRelay, teardownServed } from '../helpers/served.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { SmtpClient } from '../helpers/smtp-client.js';

let dns: DnsServer | undefined;
let blackHole: net.Server | undefined;
afterEach(async () => {
  await teardownServed({ dns, blackHole });
  blackHole = undefined;
  dns = undefined;
});
afterAll(killAll);

/** A config shared by two processes on one data dir, delivering to mx.dest.example; alice without limits. */
async function setup(mxAddress: string, port: number, extra = '') {
  const served = await servedRelay(mxAddress, port, extra);
  dns = served.dns;
  const { dir, config } = served;
  expect((await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', '100000', '--recipients-per-hour', '100000', '--recipients-per-day', '100000'])).code).toBe(0);
  return { dir, config };
}

async function submit(port: number, subjects: string[]): Promise<void> {
  const c = await SmtpClient.connect(port);
  expect(await c.login('alice', PASS)).toMatch(/^235 /);
  for (const s of subjects) expect(await c.send('alice@sender.example', ['bob@dest.example'], `From: <alice@sender.example>\r\nSubject: ${s}\r\n\r\nbody\r\n`)).toMatch(/^250 2\.0\.0 /);
  await c.quit();
}

describe('delivery claims across processes', () => {
  it.runIf(BUILT)('delivers each of 200 messages exactly once when two serve processes share one data dir', async () => {
    const sink: Sink = await startSink('127.0.0.2', 0);
    const { config, dir } = await setup('127.0.0.2', sink.port);
    const [a, b] = [await serve(config), await serve(config)];
    const subjects = Array.from({ length: 200 }, (_, i) => `message ${i}`);
    // Five sessions on each process, twenty messages each.
    await Promise.all(Array.from({ length: 10 }, (_, i) => submit(i % 2 ? b.port : a.port, subjects.slice(i * 20, i * 20 + 20))));
    while (sink.messages.length < 200) await once(sink, 'message');
    const doneIn = (p: typeof a) => p.events.filter((e) => e.event === 'delivery.done').length;
    const done = () => doneIn(a) + doneIn(b);
    while (done() < 200) await Promise.race([a.count('delivery.done', doneIn(a) + 1), b.count('delivery.done', doneIn(b) + 1)]);
    // Both processes took part, and together finished each message once.
    expect(a.events.some((e) => e.event === 'delivery.done') && b.events.some((e) => e.event === 'delivery.done')).toBe(true);
    expect(done()).toBe(200);
    const st = openStore(path.join(dir, 'data'));
    expect(await st.queue.count()).toBe(0);
    st.close();
    const got = sink.messages.map((m) => /Subject: (message \d+)/.exec(m.raw.toString())![1]!);
    expect(got.length).toBe(200);
    expect(new Set(got).size).toBe(200);
  }, 60_000);

  it.runIf(BUILT)('lets another process deliver, once, a message whose claimant was killed mid-delivery, after the claim lapses', async () => {
    const sink: Sink = await startSink('127.0.0.3', 0);
    // An MX that accepts the connection and never says a word: the attempt hangs in flight.
    const connected = new Promise<void>((resolve) => {
      blackHole = net.createServer(() => resolve());
      blackHole.listen(sink.port, '127.0.0.2');
    });
    const { config, dir } = await setup('127.0.0.2', sink.port, 'claim_lease_seconds = 2\n');
    const a = await serve(config);
    await submit(a.port, ['claimed by a']);
    await connected;
    a.child.kill('SIGKILL');
    expect(await a.exited).toBe(null);
    const st = openStore(path.join(dir, 'data'));
    const [claim] = sqliteHandle(st).prepare<[], { claim_owner: string; claim_until: number }>('SELECT claim_owner, claim_until FROM messages').all();
    st.close();
    expect(claim!.claim_owner).toMatch(/:\d+:[0-9a-f]{6}$/);

    dns!.setRecords([
      { type: 'A', name: 'mx.dest.example', data: '127.0.0.3' },
      { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } },
    ]);
    const b = await serve(config);
    const ok = await b.next('delivery.ok');
    await b.next('delivery.done');
    expect(Date.parse(ok.time as string)).toBeGreaterThanOrEqual(claim!.claim_until);
    expect(sink.messages).toHaveLength(1);
    expect(sink.messages[0]!.raw.toString()).toContain('Subject: claimed by a');
  }, 30_000);
});
