import { afterEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ManualClock } from '../../src/domain/clock.js';
import { distinctRecipients, decideQuota } from '../../src/policy/limits.js';
import { cli as runCli } from '../helpers/cli.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, storeToml, type TestRelay } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;
const MIN = 60_000;
const HOUR = 60 * MIN;

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
afterEach(() => t?.stop());

/** A relay with these limits; with `storeUrl` on that store ("" = SQLite in the data dir), as a restart would. */
async function relay(limits: Record<string, number>, opts: { dir?: string; clock?: ManualClock; storeUrl?: string } = {}) {
  const store = opts.storeUrl === undefined ? {} : { store: { url: opts.storeUrl } };
  t = await startTestRelay({ limits: { auth_failure_delay_ms: 0, ...limits }, notify: { admins: ['secops@example.net'] }, ...store }, opts);
  return t;
}

const states = async () => (await t.relay.store.queue.list()).filter((m) => m.principal === 'user:alice').map((m) => m.state);
const count = async (s: string) => (await states()).filter((x) => x === s).length;

async function sendMany(n: number, rcpts: string[] = ['x@example.net']): Promise<string[]> {
  const c = await SmtpClient.connect(t.port);
  expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  const replies: string[] = [];
  for (let i = 0; i < n; i++) replies.push(await c.send('alice@example.com', rcpts, MSG));
  await c.quit();
  return replies;
}

describe('rate limits: slow first', () => {
  it('hands a burst within the rate to delivery at once', async () => {
    await relay({ messages_per_hour: 5 });
    await t.addUser('alice', PASS);
    expect((await sendMany(5)).every((r) => QUEUED.test(r))).toBe(true);
    expect(await states()).toEqual(['queued', 'queued', 'queued', 'queued', 'queued']);
  });

  it('accepts a burst over the rate, holds the excess, and drains it one message per hour/limit', async () => {
    await relay({ messages_per_hour: 5 });
    await t.addUser('alice', PASS);
    const replies = await sendMany(8);
    expect(replies.every((r) => QUEUED.test(r))).toBe(true);
    expect(await count('queued')).toBe(5);
    expect(await count('waiting-quota')).toBe(3);

    expect(await t.relay.quota.drain()).toEqual([]);
    t.clock.advance(HOUR + 1); // the burst's window has passed
    expect(await t.relay.quota.drain()).toHaveLength(1);
    expect(await t.relay.quota.drain()).toEqual([]); // paced: the next one only 12 minutes later
    t.clock.advance(12 * MIN);
    expect(await t.relay.quota.drain()).toHaveLength(1);
    t.clock.advance(12 * MIN);
    expect(await t.relay.quota.drain()).toHaveLength(1);
    expect(await count('waiting-quota')).toBe(0);
    expect(t.logs.events('quota.released')).toHaveLength(3);
  });

  it('counts plus-addressed variants of one mailbox as one recipient', () => {
    expect(distinctRecipients(['bob@example.net', 'Bob+news@Example.NET', 'bob+x@example.net', 'carol@example.net'])).toBe(2);
  });

  it('refuses recipients beyond what the principal could ever send in a window', async () => {
    await relay({ recipients_per_hour: 3 });
    await t.addUser('alice', PASS);
    const c = await SmtpClient.connect(t.port);
    await c.login('alice', PASS);
    await c.cmd('MAIL FROM:<alice@example.com>');
    for (const r of ['a', 'b', 'c']) expect(await c.cmd(`RCPT TO:<${r}@example.net>`)).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('RCPT TO:<a+again@example.net>')).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('RCPT TO:<d@example.net>')).toBe('452 4.5.3 Too many recipients for one message');
    await c.quit();
  });
});

describe('rate limits and suspension', () => {
  it('holds a suspended account\'s waiting mail instead of draining it', async () => {
    await relay({ messages_per_hour: 2 });
    await t.addUser('alice', PASS);
    await sendMany(4);
    expect(await count('waiting-quota')).toBe(2);
    const c = await SmtpClient.connect(t.port);
    await c.login('alice', PASS);
    // The thief tries another sender: suspension, and the burst behind it is held.
    expect(await c.cmd('MAIL FROM:<ceo@bank.example>')).toMatch(/^553 5\.7\.1 /);
    await c.quit();
    expect(await count('waiting-quota')).toBe(0);
    expect(await count('held')).toBe(2);
    t.clock.advance(HOUR + 1);
    expect(await t.relay.quota.drain()).toEqual([]);
    const held = (await t.relay.store.queue.list('held'))[0]!;
    expect((await t.relay.store.quarantine.get(held.id))!.reasons).toEqual([{ id: 'principal_suspended', weight: 0, detail: 'suspended: foreign-sender from 127.0.0.1 as <ceo@bank.example>' }]);
  });

  it('holds a waiting message that lowered limits could never let out, instead of blocking the rest', async () => {
    await relay({ messages_per_hour: 1, ceiling: 10 });
    await t.addUser('alice', PASS);
    await sendMany(1);
    await sendMany(1, ['a@x.example', 'b@x.example', 'c@x.example']);
    await sendMany(1);
    expect(await count('waiting-quota')).toBe(2);
    await t.relay.store.limits.setOverride((await t.relay.store.users.find('alice'))!.principalRef, { recipientsPerHour: 2 }, t.clock.now());
    t.clock.advance(HOUR + 1);
    expect(await t.relay.quota.drain()).toHaveLength(1);
    expect(await count('held')).toBe(1);
    expect(await count('waiting-quota')).toBe(0);
  });

  it('counts a correct password from a foreign address towards the lockout, like a wrong one', async () => {
    await relay({ auth_max_failures_per_user_ip: 2 });
    await t.addUser('alice', PASS, { networks: ['127.0.0.1/32'] });
    const c = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    expect(await c.login('alice', PASS)).toBe('535 5.7.8 Authentication credentials invalid');
    // Suspended now, but from outside the reply still says nothing about it.
    expect(await c.authPlain('alice', PASS)).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.authPlain('alice', PASS)).toBe('454 4.7.0 Too many failed logins from this address, please try again later');
    await c.quit();
  });
});

describe('rate limits: then refuse', () => {
  it('gives the first message over the ceiling 451 4.7.1 with a retry time, records one incident and tells the admins once', async () => {
    await relay({ messages_per_hour: 2 });
    await t.addUser('alice', PASS);
    const replies = await sendMany(4); // 2 queued, 2 waiting: the ceiling
    expect(replies.every((r) => QUEUED.test(r))).toBe(true);
    const c = await SmtpClient.connect(t.port);
    await c.login('alice', PASS);
    // Two waiting ahead at 30 minutes each: room again in an hour.
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe(
      '451 4.7.1 Too much mail from this account is waiting to be sent, please try again later: retry after 13:00 UTC',
    );
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toMatch(/^451 4\.7\.1 /);
    await c.quit();
    const incidents = await t.relay.store.incidents.list({ name: 'alice' });
    expect(incidents).toMatchObject([{ kind: 'rate-limit', notified: true }]);
    expect((await t.relay.store.users.find('alice'))!.status).toBe('active');
    // The reply does not wait for the admins' notice: it is queued once the incident is recorded.
    await t.logs.logged('notice.queued');
    const notices = (await t.relay.store.queue.list()).filter((m) => m.principal === null);
    expect(notices.map((m) => m.rcptTo)).toEqual([['secops@example.net']]);
    expect(await count('waiting-quota')).toBe(2);
  });

  it('admits mail again once the window has rolled over', async () => {
    await relay({ messages_per_hour: 2 });
    await t.addUser('alice', PASS);
    await sendMany(4);
    t.clock.advance(HOUR + 1);
    expect(await t.relay.quota.drain()).toHaveLength(1);
    const [r] = await sendMany(1);
    expect(r).toMatch(QUEUED);
    expect(await count('waiting-quota')).toBe(2);
  });

  it('keeps the count across a restart', async () => {
    const clock = new ManualClock();
    const first = await relay({ messages_per_hour: 3 }, { clock });
    const dir = first.dir;
    await t.addUser('alice', PASS);
    await sendMany(3);
    await first.relay.close();
    await relay({ messages_per_hour: 3 }, { dir, clock, storeUrl: first.cfg.store.url });
    const [r] = await sendMany(1);
    expect(r).toMatch(QUEUED);
    expect(await count('waiting-quota')).toBe(1);
  });

  it('hands exactly the limit to delivery when 50 sessions of one user send at once', async () => {
    await relay({ messages_per_hour: 20, ceiling: 1000 });
    await t.addUser('alice', PASS);
    const clients = await Promise.all(Array.from({ length: 50 }, () => SmtpClient.connect(t.port)));
    await Promise.all(clients.map((c) => c.login('alice', PASS)));
    const replies = await Promise.all(clients.map((c) => c.send('alice@example.com', ['x@example.net'], MSG)));
    await Promise.all(clients.map((c) => c.quit()));
    expect(replies.filter((r) => QUEUED.test(r))).toHaveLength(50);
    expect(await count('queued')).toBe(20);
    expect(await count('waiting-quota')).toBe(30);
    expect((await t.relay.store.limits.usage((await t.relay.store.users.find('alice'))!.principalRef, t.clock.now())).messagesHour).toBe(20);
  });
});

describe('password guessing', () => {
  it('locks out an address after repeated failures while the user\'s own network still logs in', async () => {
    await relay({ auth_max_failures_per_user_ip: 3, auth_max_failures_per_ip: 10 });
    await t.addUser('alice', PASS, { networks: ['127.0.0.1/32', '127.0.0.2/32'] });
    const guesser = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    await guesser.login('alice', 'guess 1 guess 1');
    expect(await guesser.authPlain('alice', 'guess 2 guess 2')).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await guesser.authPlain('alice', 'guess 3 guess 3')).toBe('535 5.7.8 Authentication credentials invalid');
    // Locked now: even the right password from there gets the temporary refusal.
    expect(await guesser.authPlain('alice', PASS)).toBe('454 4.7.0 Too many failed logins from this address, please try again later');
    await guesser.quit();

    const owner = await SmtpClient.connect(t.port);
    expect(await owner.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    await owner.quit();

    t.clock.advance(15 * MIN + 1); // the lockout ends
    const later = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    expect(await later.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    await later.quit();
  });

  it('answers unknown and known usernames alike, and throttles sprays across usernames per address', async () => {
    await relay({ auth_max_failures_per_user_ip: 100, auth_max_failures_per_ip: 4 });
    await t.addUser('alice', PASS);
    const c = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    await c.cmd('EHLO x');
    await c.starttls();
    await c.cmd('EHLO x');
    const replies = [];
    for (const u of ['alice', 'nobody', 'root', 'admin', 'alice']) replies.push(await c.authPlain(u, 'wrong password!'));
    expect(replies).toEqual([...Array(4).fill('535 5.7.8 Authentication credentials invalid'), '454 4.7.0 Too many failed logins from this address, please try again later']);
    await c.quit();
  });
});

describe('limits CLI', () => {
  it('sets per-user limits that the relay then applies, and shows usage against them', async () => {
    await relay({ messages_per_hour: 100 });
    await t.addUser('alice', PASS);
    const config = path.join(t.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[limits]\nmessages_per_hour = 100\n${storeToml(t.cfg)}`);
    expect(await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', '2', '--by', 'admin-ann', '--reason', 'test'])).toMatchObject({
      code: 0,
      out: 'user:alice: 2 messages/hour, 1000 recipients/hour, 2000 recipients/day\n',
    });
    await sendMany(3);
    expect(await count('waiting-quota')).toBe(1);
    const shown = JSON.parse((await cli(config, ['limits', 'show', 'alice', '--json'])).out);
    expect(shown).toMatchObject({ limits_source: 'principal', messages_per_hour: { limit: 2 }, waiting: { messages: 1, ceiling: 2 } });
    expect((await t.relay.store.audit.list({ target: 'user:alice' }))[0]).toMatchObject({ action: 'limits.set', actor: 'admin-ann' });
    expect((await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', 'lots'])).err).toBe('postern: --messages-per-hour needs a whole number of at least 1, not "lots"\n');
  });
});

describe('quota decision', () => {
  const limits = { messagesPerHour: 4, recipientsPerHour: 10, recipientsPerDay: 20 };
  const empty = { messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null };
  it.each([
    ['room for it', empty, 1, false, { admit: true }],
    ['messages full', { ...empty, messagesHour: 4, oldestHourAt: 0, lastAt: 0 }, 1, false, { admit: false, retryAt: HOUR }],
    ['recipients full', { ...empty, recipientsHour: 9, oldestHourAt: 0, lastAt: 0 }, 2, false, { admit: false, retryAt: HOUR }],
    ['day full', { ...empty, recipientsDay: 20 }, 1, false, { admit: false, retryAt: 1000 }],
    ['paced too soon', { ...empty, messagesHour: 1, lastAt: 1000, oldestHourAt: 1000 }, 1, true, { admit: false, retryAt: 1000 + 15 * MIN }],
  ])('%s', (_name, usage, rcpts, paced, expected) => {
    expect(decideQuota(limits, usage, rcpts, 1000, paced)).toEqual(expected);
  });
});
