import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import path from 'node:path';
import { openStore } from '../../src/store/index.js';
import { cli } from '../helpers/cli.js';
import { BUILT, killAll, serve, type ServeChild } from '../helpers/child.js';
import type { DnsServer } from '../helpers/dnsd.js';
import { SERVED_PASS as PASS, servedRelay } from '../helpers/served.js';
import { closeAllSinks, startSink } from '../helpers/sink.js';
import { SmtpClient } from '../helpers/smtp-client.js';

let dns: DnsServer | undefined;
afterEach(async () => {
  killAll();
  await closeAllSinks();
  await dns?.close();
  dns = undefined;
});

async function send(port: number, bodies: string[]): Promise<string[]> {
  const c = await SmtpClient.connect(port);
  expect(await c.login('alice', PASS)).toMatch(/^235 /);
  const replies: string[] = [];
  for (const b of bodies) replies.push(await c.send('alice@sender.example', ['bob@dest.example'], b));
  await c.quit();
  return replies;
}

const total = (ps: ServeChild[], event: string) => ps.reduce((n, p) => n + p.events.filter((e) => e.event === event).length, 0);
async function until(ps: ServeChild[], events: string[], n: number): Promise<void> {
  const sum = () => events.reduce((k, e) => k + total(ps, e), 0);
  while (sum() < n) await Promise.race(ps.flatMap((p) => events.map((e) => p.count(e, total([p], e) + 1))));
}

describe('limits and notices across two serve processes on one data dir', () => {
  it.runIf(BUILT)('delivers exactly the hourly limit in total, and sends one held-mail notice per burst in total', async () => {
    const sink = await startSink('127.0.0.2', 0);
    const served = await servedRelay('127.0.0.2', sink.port);
    ({ dns } = served);
    const { dir, config } = served;
    expect((await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', '3'])).code).toBe(0);
    const ps = [await serve(config), await serve(config)];

    // Held mail first: it takes no quota (and, once three wait, new mail is refused).
    const spoof = (i: number) => `From: "CEO" <ceo@bank.example>\r\nSubject: held ${i}\r\n\r\nwire the money\r\n`;
    await Promise.all([send(ps[0]!.port, [0, 1].map(spoof)), send(ps[1]!.port, [2, 3].map(spoof))]);
    await until(ps, ['quarantine.notice_queued', 'quarantine.notice_skipped'], 4);
    expect(total(ps, 'message.held')).toBe(4);
    expect(total(ps, 'quarantine.notice_queued')).toBe(1);
    expect(total(ps, 'quarantine.notice_skipped')).toBe(3);

    const clean = (i: number) => `From: <alice@sender.example>\r\nSubject: clean ${i}\r\n\r\nhello\r\n`;
    const replies = (await Promise.all([send(ps[0]!.port, [0, 1, 2].map(clean)), send(ps[1]!.port, [3, 4, 5].map(clean))])).flat();
    expect(replies.every((r) => /^250 2\.0\.0 /.test(r))).toBe(true);
    while (sink.messages.length < 3) await once(sink, 'message');
    // Three sent and recorded: the sink sees a message a moment before its outcome is written,
    // and the held-mail notice's attempts (to a domain that does not exist) count as
    // delivery.done too, so wait on the spool itself, one delivery.done at a time.
    const st = openStore(path.join(dir, 'data'));
    const aliceStates = async () => (await st.queue.list()).filter((m) => m.principal !== null).map((m) => m.state);
    let states: string[];
    for (;;) {
      // The counts to wait for are taken before the spool is read: an outcome written in
      // between resolves the wait at once instead of being missed.
      const next = ps.map((p) => total([p], 'delivery.done') + 1);
      states = await aliceStates();
      if (!states.includes('queued')) break;
      await Promise.race(ps.map((p, i) => p.count('delivery.done', next[i]!)));
    }
    expect(states.filter((x) => x === 'waiting-quota')).toHaveLength(3);
    expect(states.filter((x) => x === 'held')).toHaveLength(4);
    expect(states).toHaveLength(7);
    st.close();
    expect(sink.messages).toHaveLength(3);

  }, 30_000);
});
