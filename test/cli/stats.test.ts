import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ManualClock } from '../../src/domain/clock.js';
import { cli } from '../helpers/cli.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
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
  it('reports per user what was sent, held, rejected remotely and the incidents, from the store', async () => {
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
    expect(out.principals).toEqual([
      { principal: 'user:alice', sent: 2, held: 1, refused: null, remote_rejections: 1, remote_outcomes: 2, incidents: 1 },
      { principal: 'user:bob', sent: 1, held: 0, refused: null, remote_rejections: 0, remote_outcomes: 0, incidents: 0 },
    ]);
    expect(out.notes).toEqual(['refused: not stored per user; see /metrics postern_messages_refused_total or the log']);
    // Everything in the spool, the incident's notice included, was accepted by this node
    // (delivery is off, so nobody delivers).
    const queued = (await t.relay.store.queue.list('queued')).length;
    expect(queued).toBeGreaterThanOrEqual(3);
    expect(out.nodes).toEqual([{ node: 'node-a', queued, held: 1, waiting_quota: 0, delivering: 0 }]);
    const human = (await cli(config, ['stats'])).out;
    expect(human).toMatch(new RegExp(`\\nspool by node:\\nNODE\\s+QUEUED\\s+HELD\\s+WAITING\\s+DELIVERING\\nnode-a\\s+${queued}\\s+1\\s+0\\s+0\\n$`));

    const one = await cli(config, ['stats', '--user', 'bob']);
    expect(one.out).toMatch(/^PRINCIPAL\s+SENT\s+HELD\s+REJECTED\s+OUTCOMES\s+INCIDENTS\nuser:bob\s+1\s+0\s+0\s+0\s+0\n/);
    expect(one.out).toContain('refusals are not stored per user');
  });

  it('says that sent mail older than a day is not on record when asked for a longer window', async () => {
    await sendAs('bob', [PLAIN]);
    const r = await cli(config, ['stats', '--since', '7d']);
    expect(r.out).toContain('note: SENT covers only the last 24h: the quota ledger keeps no more');
  });

  it('tells the admin where to look for a user that does not exist', async () => {
    expect(await cli(config, ['stats', '--user', 'mallory'])).toEqual({ code: 1, out: '', err: 'postern: no such user: mallory (see: postern user list)\n' });
  });

  it('says so when nothing happened in the window', async () => {
    expect((await cli(config, ['stats', '--user', 'bob'])).out).toMatch(/^no mail sent, held or rejected and no incidents for user:bob since 20/);
  });
});
