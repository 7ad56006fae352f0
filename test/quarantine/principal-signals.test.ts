import { afterEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { mime } from '../helpers/mime.js';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cli } from '../helpers/cli.js';
import { storeToml, type TestRelay } from '../helpers/relay.js';
import { quarantineRelay, submit } from './helpers.js';

let t: TestRelay | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

// A link showing one site and going to another: 7, one weak signal, queued on its own.
const phishy = (to: string) =>
  mime({ From: 'alice@corp.example', To: `<${to}>`, Subject: 'Login' }, [{ type: 'text/html', body: '<a href="http://evil.test/">www.bank.example</a>' }]);
const clean = (to: string) => mime({ From: 'alice@corp.example', To: `<${to}>`, Subject: 'hi' }, [{ type: 'text/plain', body: 'hi\n' }]);

/** What the spool recorded: state, score and reason ids. */
const stored = async (id: string) => {
  const m = (await t!.relay.store.quarantine.get(id))!;
  return [m.state, m.score, m.reasons.map((r) => r.id)];
};

describe('signals about the principal, read from the store at DATA', () => {
  it('an open incident joins a weak signal to hold; resolved, it no longer counts', async () => {
    t = await quarantineRelay({ quarantine: { notify_sender: false } });
    await submit(t, clean('bob@known.example'), ['bob@known.example']);
    const insert = sqliteHandle(t.relay.store).prepare(`INSERT INTO incidents (principal_kind, principal_name, principal_ref, kind, created_at) VALUES ('user', 'alice', (SELECT principal_ref FROM users WHERE username = 'alice'), 'manual', ?)`);
    const incident = insert.run(t.clock.now()).lastInsertRowid;
    const held = await submit(t, phishy('bob@known.example'), ['bob@known.example']);
    expect(await stored(held.id)).toEqual(['held', 13, ['LINK_TEXT_MISMATCH', 'OPEN_INCIDENT']]);

    // Resolved by the helpdesk with the CLI, audited; the next message scores without it.
    const config = path.join(t.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n${storeToml(t.cfg)}`);
    expect(await cli(config, ['incidents', 'resolve', String(incident), '--by', 'helpdesk-bob', '--reason', 'looked at it'])).toEqual({ code: 0, out: `incident ${incident} resolved\n`, err: '' });
    expect(await cli(config, ['incidents', 'resolve', String(incident)])).toEqual({ code: 1, out: '', err: `postern: incident ${incident} is already resolved\n` });
    expect(await cli(config, ['incidents', 'resolve', 'x7'])).toEqual({ code: 1, out: '', err: 'postern: not an incident id: "x7" (ids are the numbers in the ID column of postern incidents)\n' });
    expect((await t.relay.store.audit.list({ target: `incident:${incident}` })).map((e) => [e.actor, e.action, e.reason])).toEqual([['helpdesk-bob', 'incident.resolve', 'looked at it']]);
    const queued = await submit(t, phishy('bob@known.example'), ['bob@known.example']);
    expect(await stored(queued.id)).toEqual(['queued', 7, ['LINK_TEXT_MISMATCH']]);
  });

  it('a high recent remote rejection rate (delivery outcomes) joins a weak signal to hold', async () => {
    t = await quarantineRelay({ quarantine: { notify_sender: false } });
    await submit(t, clean('bob@known.example'), ['bob@known.example']);
    const outcome = sqliteHandle(t.relay.store).prepare(`INSERT INTO delivery_outcomes (principal_ref, at, rejected) VALUES ((SELECT principal_ref FROM users WHERE username = 'alice'), ?, ?)`);
    for (let i = 0; i < 10; i++) outcome.run(t.clock.now(), i < 4 ? 1 : 0);
    const { id } = await submit(t, phishy('bob@known.example'), ['bob@known.example']);
    expect(await stored(id)).toEqual(['held', 13, ['LINK_TEXT_MISMATCH', 'REMOTE_REJECTIONS']]);
    expect((await t.relay.store.quarantine.get(id))!.reasons[1]).toEqual({ id: 'REMOTE_REJECTIONS', weight: 6, detail: '4 of 10 rejected' });
  });

  it('being near the rate limit joins a weak signal to hold', async () => {
    t = await quarantineRelay({ quarantine: { notify_sender: false }, limits: { messages_per_hour: 5 } });
    for (let i = 0; i < 3; i++) expect(await stored((await submit(t, clean('bob@known.example'), ['bob@known.example'])).id)).toEqual(['queued', 0, []]);
    // 3 of 5 used: not near yet (0.8 of 5 is 4).
    expect(await stored((await submit(t, phishy('bob@known.example'), ['bob@known.example'])).id)).toEqual(['queued', 7, ['LINK_TEXT_MISMATCH']]);
    // That one was queued too: 4 of 5 now.
    expect(await stored((await submit(t, phishy('bob@known.example'), ['bob@known.example'])).id)).toEqual(['held', 10, ['LINK_TEXT_MISMATCH', 'NEAR_RATE_LIMIT']]);
  });
});
