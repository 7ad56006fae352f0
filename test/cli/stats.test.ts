import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ManualClock } from '../../src/domain/clock.js';
import { cli } from '../helpers/cli.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { startSink } from '../helpers/sink.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const PLAIN = 'From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n';
// A header From: outside alice's sender bindings scores from_not_bound = 10: held.
const SUSPECT = 'From: "CEO" <ceo@bank.example>\r\nSubject: urgent\r\n\r\npay now\r\n';

let t: TestRelay;
let config: string;
beforeEach(async () => {
  // The CLI reads the system clock, so the relay's records are made at real "now".
  t = await startTestRelay({ server: { node_id: 'node-a' } }, { clock: new ManualClock(Date.now()) });
  await t.addUser('alice', PASS);
  await t.addUser('bob', PASS);
  config = path.join(t.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[auth]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n`);
});
afterEach(() => t.stop());

async function sendAs(user: string, bodies: string[]): Promise<void> {
  const c = await SmtpClient.connect(t.port);
  expect(await c.login(user, PASS)).toMatch(/^235/);
  for (const b of bodies) expect(await c.send(`${user}@example.com`, ['x@elsewhere.example'], b)).toMatch(/^250 2\.0\.0 Ok/);
  await c.quit();
}

describe('postern stats', () => {
  it('reports per user the messages handed to delivery, what remote servers accepted and refused, what is held and the incidents, from the store', async () => {
    await sendAs('alice', [PLAIN, PLAIN, SUSPECT]);
    await sendAs('bob', [PLAIN]);
    // Two final verdicts from remote servers for alice, one of them a 5xx (as delivery records them).
    const outcome = sqliteHandle(t.relay.store).prepare(`INSERT INTO delivery_outcomes (principal_ref, at, rejected) VALUES ((SELECT principal_ref FROM users WHERE username = ?), ?, ?)`);
    outcome.run('alice', t.clock.now(), 1);
    outcome.run('alice', t.clock.now(), 0);
    const foreign = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    await foreign.login('alice', PASS);
    await foreign.quit();

    const r = await cli(config, ['stats', '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out) as { principals: unknown[]; notes: string[]; nodes: unknown[] };
    // Delivery is off: bob's message was handed to the queue, and nothing calls it delivered.
    expect(out.principals).toEqual([
      { principal: 'user:alice', messages: 2, delivered: 1, rejected: 1, held: 1, incidents: 1 },
      { principal: 'user:bob', messages: 1, delivered: 0, rejected: 0, held: 0, incidents: 0 },
    ]);
    expect(out.notes).toEqual(['refusals: not stored per user; see /metrics postern_messages_refused_total or the log']);
    // Everything in the spool, the incident's notice included, was accepted by this node
    // (delivery is off, so nobody delivers).
    const queued = (await t.relay.store.queue.list('queued')).length;
    expect(queued).toBeGreaterThanOrEqual(3);
    expect(out.nodes).toEqual([{ node: 'node-a', queued, held: 1, waiting: 0, delivering: 0 }]);
    const human = (await cli(config, ['stats'])).out;
    expect(human).toMatch(new RegExp(`\\nspool by node:\\nNODE\\s+QUEUED\\s+HELD\\s+WAITING\\s+DELIVERING\\nnode-a\\s+${queued}\\s+1\\s+0\\s+0\\n$`));

    const one = await cli(config, ['stats', '--user', 'bob']);
    // The text columns are the JSON keys.
    expect(one.out).toMatch(/^PRINCIPAL\s+MESSAGES\s+DELIVERED\s+REJECTED\s+HELD\s+INCIDENTS\nuser:bob\s+1\s+0\s+0\s+0\s+0\n/);
    const header = (await cli(config, ['stats'])).out.split('\n')[0]!.split(/\s+/).map((c) => c.toLowerCase());
    expect(header).toEqual(Object.keys(out.principals[0] as object));
    expect(one.out).toContain('refusals are not stored per user');
  });

  it('says which figures do not reach back as far as a longer window asks', async () => {
    await sendAs('bob', [PLAIN]);
    const week = await cli(config, ['stats', '--since', '7d']);
    expect(week.out.match(/^note: .*$/gm)).toEqual(['note: MESSAGES covers only the last 24h: the quota ledger keeps no more']);
    const month = await cli(config, ['stats', '--since', '30d']);
    expect(month.out.match(/^note: .*$/gm)).toEqual([
      'note: MESSAGES covers only the last 24h: the quota ledger keeps no more',
      'note: DELIVERED and REJECTED cover only the last 7 days: older outcomes are not kept',
    ]);
  });

  it('tells the admin where to look for a user that does not exist', async () => {
    expect(await cli(config, ['stats', '--user', 'mallory'])).toEqual({ code: 1, out: '', err: 'postern: no such user: mallory (see: postern user list)\n' });
  });

  it('says so when nothing happened in the window', async () => {
    expect((await cli(config, ['stats', '--user', 'bob'])).out).toMatch(/^no messages, deliveries, rejections, held mail or incidents for user:bob since 20/);
  });
});

describe('postern stats with delivery on', () => {
  it('counts as DELIVERED and REJECTED what the remote server answered, per recipient', async () => {
    const sink = await startSink('127.0.0.2', 0, { behaviour: { rcpt: (a) => (a.startsWith('nobody@') ? '550 5.1.1 no such user' : undefined) } });
    const d = await startTestRelay({ delivery: { enabled: true, smarthost: `127.0.0.2:${sink.port}` } }, { clock: new ManualClock(Date.now()) });
    try {
      await d.addUser('carol', PASS);
      const c = await SmtpClient.connect(d.port);
      expect(await c.login('carol', PASS)).toMatch(/^235 /);
      expect(await c.send('carol@example.com', ['x@dest.example', 'nobody@dest.example'], 'Subject: hi\r\n\r\nhello\r\n')).toMatch(/^250 /);
      await c.quit();
      await d.logs.logged('delivery.done');
      const cfg = path.join(d.dir, 'cli.toml');
      writeFileSync(cfg, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${d.dir}"\n`);
      const out = JSON.parse((await cli(cfg, ['stats', '--json'])).out) as { principals: unknown[] };
      expect(out.principals).toEqual([{ principal: 'user:carol', messages: 1, delivered: 1, rejected: 1, held: 0, incidents: 0 }]);
      expect(sink.messages.map((m) => m.to)).toEqual([['x@dest.example']]);
    } finally {
      await d.stop();
      await sink.close();
    }
  });
});
