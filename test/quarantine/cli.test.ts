import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cli as runCli } from '../helpers/cli.js';
import { fakePe, mime } from '../helpers/mime.js';
import { storeToml, type TestRelay } from '../helpers/relay.js';
import { quarantineRelay, submit } from './helpers.js';

let t: TestRelay;
/**
 * The CLI, as a separate process, then this relay brought up to date with what it committed
 * (SQLite sees it at the next lookup anyway; PostgreSQL otherwise at its NOTIFY, moments later).
 */
const cli = async (...args: Parameters<typeof runCli>) => {
  const r = await runCli(...args);
  await t.relay.store.syncPolicy();
  return r;
};
let config: string;
beforeEach(async () => {
  // No held notices here: they would be queued messages of their own in every listing.
  t = await quarantineRelay({ quarantine: { notify_sender: false } });
  config = path.join(t.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[log]\nlevel = "info"\n${storeToml(t.cfg)}`);
});
afterEach(async () => {
  await t.stop();
});

const exe = (to: string, subject: string) =>
  mime({ From: 'Alice <alice@corp.example>', To: `<${to}>`, Subject: subject }, [
    { type: 'text/plain; charset=utf-8', body: 'Please run the attached tool.\nThanks, Alice\n' },
    { type: 'application/octet-stream', filename: 'tool.exe', body: fakePe() },
  ]);
const spoof = (to: string) => mime({ From: 'IT Desk <it@helpdesk.example>', To: `<${to}>`, Subject: 'Password expiry' }, [{ type: 'text/plain', body: 'Reset now.\n' }]);
const clean = (to: string) => mime({ From: 'alice@corp.example', To: `<${to}>`, Subject: 'Lunch' }, [{ type: 'text/plain', body: 'Noon?\n' }]);

/** Every audit row, oldest first. */
const audit = async () => (await t.relay.store.audit.list()).reverse().map(({ actor, action, target, reason }) => ({ actor, action, target, reason }));

describe('postern quarantine list and show', () => {
  it('lists held mail with age, user, From:, recipients, subject, score and top reasons', async () => {
    const a = await submit(t, exe('bob@a.example', 'Tool for you'), ['bob@a.example', 'carol@a.example']);
    t.clock.advance(60_000);
    const b = await submit(t, spoof('dave@b.example'), ['dave@b.example']);
    await submit(t, clean('erin@c.example'), ['erin@c.example']);

    const json = await cli(config, ['quarantine', 'list', '--json']);
    expect(json.code).toBe(0);
    const rows = JSON.parse(json.out) as Array<Record<string, unknown>>;
    expect(rows.map((r) => r.id)).toEqual([a.id, b.id]);
    expect(rows[0]).toMatchObject({
      id: a.id,
      state: 'held',
      received: '2026-11-22T12:00:00Z',
      held: '2026-11-22T12:00:00Z',
      principal: 'user:alice',
      user: 'alice',
      envelope_from: 'alice@corp.example',
      from: 'Alice <alice@corp.example>',
      recipients: ['bob@a.example', 'carol@a.example'],
      subject: 'Tool for you',
      score: 13,
      reasons: [
        { id: 'EXECUTABLE_ATTACHMENT', weight: 10, detail: 'tool.exe' },
        { id: 'NEW_DOMAIN', weight: 3, detail: 'a.example' },
      ],
    });
    expect(rows[1]).toMatchObject({ id: b.id, from: 'IT Desk <it@helpdesk.example>', subject: 'Password expiry', score: 13 });

    const human = await cli(config, ['quarantine', 'list', '--user', 'alice']);
    expect(human.out.split('\n')[0]).toMatch(/^ID\s+AGE\s+USER\s+FROM\s+RCPTS\s+SCORE\s+SUBJECT\s+REASONS$/);
    expect(human.out).toMatch(new RegExp(`^${a.id}\\s+\\d+[mhd]\\s+alice\\s+Alice <alice@corp\\.example>\\s+2\\s+13\\s+Tool for you\\s+EXECUTABLE_ATTACHMENT,NEW_DOMAIN$`, 'm'));
    expect(human.out).toMatch(/^2 messages$/m);
    expect(await cli(config, ['quarantine', 'list', '--user', 'nobody'])).toEqual({ code: 1, out: '', err: 'postern: no such user: nobody (see: postern user list)\n' });
    expect((await cli(config, ['quarantine', 'list', '--state', 'waiting-quota'])).out).toBe('no waiting-quota messages\n');
    expect(JSON.parse((await cli(config, ['quarantine', 'list', '--state', 'all', '--json'])).out)).toHaveLength(2);
    expect(await cli(config, ['quarantine', 'list', '--state', 'queued'])).toEqual({ code: 2, out: '', err: 'postern: unknown state queued: use one of held, waiting-quota, all\n' });
  });

  it('shows envelope, reasons, headers and a text preview; --raw gives the stored bytes', async () => {
    const { id } = await submit(t, exe('bob@a.example', 'Tool for you'), ['bob@a.example']);
    const out = await cli(config, ['quarantine', 'show', id]);
    expect(out.code).toBe(0);
    expect(out.out).toContain(`id:        ${id}\nstate:     held\nprincipal: user:alice\n`);
    expect(out.out).toContain('envelope from: <alice@corp.example>\nenvelope to:   <bob@a.example>\nscore:     13\nreasons:\n    10  EXECUTABLE_ATTACHMENT  tool.exe\n     3  NEW_DOMAIN  a.example\n');
    expect(out.out).toMatch(/^headers:\n {2}Received: from client\.example/m);
    expect(out.out).toContain('  Subject: Tool for you\n');
    expect(out.out).toContain('preview:\n  Please run the attached tool.\n  Thanks, Alice\n');

    const raw = await cli(config, ['quarantine', 'show', id, '--raw']);
    expect(raw.out).toBe((await t.relay.store.queue.body(id))!.toString('utf8'));
    expect(await cli(config, ['quarantine', 'show', 'NOSUCHID'])).toEqual({ code: 1, out: '', err: 'postern: no such message: NOSUCHID (see: postern quarantine list)\n' });
  });
});

describe('postern quarantine release and delete', () => {
  it('releases to the delivery queue byte for byte, audited, and refuses a second release', async () => {
    const { id } = await submit(t, exe('bob@a.example', 'Tool'), ['bob@a.example']);
    const before = Buffer.from((await t.relay.store.queue.body(id))!);

    const r = await cli(config, ['quarantine', 'release', id, '--by', 'ops-anna', '--reason', 'tool confirmed by phone']);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`message ${id} released to the delivery queue\n`);
    // Text only from the CLI: the decision reaches the server's log from the audit table.
    expect(r.err).toBe('');
    await t.relay.adminLog.poll();
    expect(t.logs.events('admin.action')).toMatchObject([
      { level: 'info', action: 'quarantine.release', queue_id: id, actor: 'ops-anna', reason: 'tool confirmed by phone', detail: { state: 'held', principal: 'alice', principal_kind: 'user', recipients: 1 } },
    ]);

    const m = (await t.relay.store.queue.get(id))!;
    expect(m.state).toBe('queued');
    expect(m.nextAttemptAt).not.toBeNull();
    expect(await t.relay.store.delivery.job(id)).toBeDefined();
    expect((await t.relay.store.queue.body(id))!.equals(before)).toBe(true);
    expect(await audit()).toEqual([{ actor: 'ops-anna', action: 'quarantine.release', target: `message:${id}`, reason: 'tool confirmed by phone' }]);

    const again = await cli(config, ['quarantine', 'release', id]);
    expect(again.code).toBe(1);
    expect(again.out).toBe('');
    expect(again.err).toMatch(new RegExp(`^postern: message ${id} was already released on 20\\d\\d-.+Z by ops-anna\\n$`));
    expect((await t.relay.store.queue.get(id))!.state).toBe('queued');
    expect(await audit()).toHaveLength(1);
  });

  it('deletes held mail for good and refuses to delete or release it again', async () => {
    const { id } = await submit(t, spoof('dave@b.example'), ['dave@b.example']);
    const d = await cli(config, ['quarantine', 'delete', id, '--by', 'ops-anna', '--reason', 'phishing']);
    expect(d).toMatchObject({ code: 0, out: `message ${id} deleted\n` });
    expect(d.err).toBe('');
    await t.relay.adminLog.poll();
    expect(t.logs.events('admin.action')).toMatchObject([{ action: 'quarantine.delete', queue_id: id, actor: 'ops-anna', reason: 'phishing' }]);
    expect(await t.relay.store.queue.get(id)).toBeUndefined();
    expect(await t.relay.store.queue.body(id)).toBeUndefined();
    expect((await cli(config, ['quarantine', 'delete', id])).err).toMatch(new RegExp(`^postern: message ${id} was already deleted on .+ by ops-anna\\n$`));
    expect((await cli(config, ['quarantine', 'release', id])).err).toMatch(new RegExp(`^postern: message ${id} was already deleted on .+ by ops-anna\\n$`));
    expect(await audit()).toEqual([{ actor: 'ops-anna', action: 'quarantine.delete', target: `message:${id}`, reason: 'phishing' }]);
  });

  it('leaves queued mail to the queue commands', async () => {
    const { id } = await submit(t, clean('erin@c.example'), ['erin@c.example']);
    expect(await cli(config, ['quarantine', 'release', id])).toEqual({ code: 1, out: '', err: `postern: message ${id} is queued, not held\n` });
    expect(await cli(config, ['quarantine', 'delete', 'NOSUCHID'])).toEqual({ code: 1, out: '', err: 'postern: no such message: NOSUCHID (see: postern quarantine list)\n' });
  });

  it('takes ids on stdin with -, and releases all of a user\'s held mail only with --all', async () => {
    const a = await submit(t, exe('bob@a.example', 'one'), ['bob@a.example']);
    t.clock.advance(60_000);
    const b = await submit(t, exe('bob@a.example', 'two'), ['bob@a.example']);
    t.clock.advance(60_000);
    const c = await submit(t, exe('bob@a.example', 'three'), ['bob@a.example']);

    const stdin = await cli(config, ['quarantine', 'release', '-', '--by', 'ops'], `${a.id}\n`);
    expect(stdin.out).toBe(`message ${a.id} released to the delivery queue\n`);

    expect(await cli(config, ['quarantine', 'release', '--user', 'alice'])).toMatchObject({ code: 2, err: 'postern: postern quarantine release --user alice acts on all of the user\'s held mail: add --all\n' });
    expect(await cli(config, ['quarantine', 'release'])).toMatchObject({ code: 2, err: expect.stringContaining('needs message ids, - (ids on stdin) or --user NAME --all') });

    const all = await cli(config, ['quarantine', 'release', '--user', 'alice', '--all', '--by', 'ops', '--reason', 'false positives']);
    expect(all.code).toBe(0);
    expect(all.out).toBe(`message ${b.id} released to the delivery queue\nmessage ${c.id} released to the delivery queue\n`);
    expect(await t.relay.store.quarantine.list()).toEqual([]);
    expect((await cli(config, ['quarantine', 'release', '--user', 'alice', '--all'])).out).toBe('no held messages of alice\n');
  });
});
