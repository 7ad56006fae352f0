import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/domain/clock.js';
import { sqliteHandle } from '../../src/store/index.js';
import { cli } from '../helpers/cli.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';

let t: TestRelay;
let config: string;
beforeAll(async () => {
  t = await startTestRelay({}, { clock: new ManualClock(Date.now()) });
  await t.addUser('alice', PASS);
  config = path.join(t.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[auth]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n`);
});
afterAll(() => t.stop());

const json = async (args: string[]) => {
  const r = await cli(config, [...args, '--json']);
  expect(r).toMatchObject({ code: 0, err: '' });
  return JSON.parse(r.out) as Array<Record<string, unknown>>;
};

describe('--json listings', () => {
  it('audit gives each detail as an object: what the CLI wrote as an object, an older row of plain text as {"text": ...}', async () => {
    expect((await cli(config, ['user', 'allow', 'alice', '--network', '192.0.2.0/24', '--for', '1h', '--by', 'ann'])).code).toBe(0);
    // A row as an older Postern wrote it: the detail in words.
    sqliteHandle(t.relay.store).prepare("INSERT INTO audit (at, actor, action, target, detail, reason) VALUES (1, 'ann', 'user.passwd', 'user:alice', 'password changed', NULL)").run();
    const rows = await json(['audit', '--user', 'alice']);
    expect(rows).toEqual([
      { id: expect.any(Number), at: expect.stringMatching(/^20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ$/), actor: 'ann', action: 'user.allow', target: 'user:alice', detail: { senders: [], networks: ['192.0.2.0/24'], countries: [], asns: [], until: expect.stringMatching(/Z$/) }, reason: null },
      { id: expect.any(Number), at: '1970-01-01T00:00:00Z', actor: 'ann', action: 'user.passwd', target: 'user:alice', detail: { text: 'password changed' }, reason: null },
    ]);
    // The text listing shows the same: the words as written, an object as compact JSON.
    const text = (await cli(config, ['audit', '--user', 'alice'])).out.split('\n');
    expect(text[0]).toMatch(/^ID\s+AT\s+ACTOR\s+ACTION\s+TARGET\s+DETAIL\s+REASON$/);
    expect(text[1]).toMatch(/ user\.allow\s+user:alice\s+\{"senders":\[\],"networks":\["192\.0\.2\.0\/24"\],"countries":\[\],"asns":\[\],"until":"[^"]+"\}\s+-$/);
    expect(text[2]).toMatch(/ user\.passwd\s+user:alice\s+password changed\s+-$/);
  });

  it('incidents gives the state column and the detail as an object, null for what is not resolved yet', async () => {
    const alice = (await t.relay.store.users.find('alice'))!;
    const who = { principalKind: 'user' as const, principalId: alice.id, principalName: 'alice', principalRef: alice.principalRef };
    await t.relay.store.incidents.record({ ...who, kind: 'remote-rejections', detail: JSON.stringify({ rate: 0.5, rejected: 10, total: 20 }) }, Date.now(), 0);
    await t.relay.store.incidents.record({ ...who, kind: 'rate-limit', detail: 'too much mail waiting for quota' }, Date.now() + 1, 0);
    const rows = await json(['incidents']);
    expect(rows.map(({ principal, kind, state, detail, resolved, resolved_by, client_ip }) => ({ principal, kind, state, detail, resolved, resolved_by, client_ip }))).toEqual([
      { principal: 'user:alice', kind: 'rate-limit', state: 'open', detail: { text: 'too much mail waiting for quota' }, resolved: null, resolved_by: null, client_ip: null },
      { principal: 'user:alice', kind: 'remote-rejections', state: 'open', detail: { rate: 0.5, rejected: 10, total: 20 }, resolved: null, resolved_by: null, client_ip: null },
    ]);
    expect((await cli(config, ['incidents'])).out).toMatch(/^ID\s+AT\s+PRINCIPAL\s+KIND\s+CLIENT_IP\s+SENDER\s+STATE\n/);
  });

});
