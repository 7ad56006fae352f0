import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { sweepLapsedBindings } from '../../src/notify/lapse.js';
import { cli as runCli } from '../helpers/cli.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, storeToml, type TestRelay } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;
const INVALID = '535 5.7.8 Authentication credentials invalid';
const SUSPENDED_AUTH = '535 5.7.8 Authentication credentials invalid: this account is suspended, please contact your helpdesk';
const FOREIGN = { localAddress: '127.0.0.2' };

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
let alice: number;

beforeEach(async () => {
  t = await startTestRelay({ notify: { admins: ['secops@example.net'], helpdesk: 'helpdesk@example.com' } });
  alice = await t.addUser('alice', PASS, { networks: ['127.0.0.1/32'], senders: ['alice@example.com', '@example.org'] });
  await t.relay.store.users.setNotifyAddress(alice, 'alice@home.example', t.clock.now());
  config = path.join(t.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[auth]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n${storeToml(t.cfg)}`);
});
afterEach(() => t.stop());

const user = async () => (await t.relay.store.users.get(alice))!;
const incidents = async () => await t.relay.store.incidents.list({ name: 'alice' });
const notices = async () => (await t.relay.store.queue.list()).filter((m) => m.principal === null).sort((a, b) => a.rcptTo[0]!.localeCompare(b.rcptTo[0]!));

async function session(opts: { localAddress?: string } = {}): Promise<SmtpClient> {
  return SmtpClient.connect(t.port, opts);
}

describe('network binding', () => {
  it('lets the user log in and send from an allowed network', async () => {
    const c = await session();
    expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.send('alice@example.com', ['bob@elsewhere.example'], MSG)).toMatch(QUEUED);
    await c.quit();
    expect((await user()).status).toBe('active');
    expect(await incidents()).toEqual([]);
  });

  it('refuses the correct password from a foreign address exactly like a wrong one, and suspends', async () => {
    const c = await session(FOREIGN);
    expect(await c.login('alice', PASS)).toBe(INVALID);
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('530 5.7.0 Authentication required');
    await c.quit();
    expect(await user()).toMatchObject({ status: 'suspended', statusReason: 'foreign-network from 127.0.0.2' });
    expect(await incidents()).toMatchObject([{ principalKind: 'user', principalName: 'alice', kind: 'foreign-network', clientIp: '127.0.0.2', notified: true, resolvedAt: null }]);
    expect(t.logs.events('auth.fail').at(-1)).toMatchObject({ reason: 'AUTH_FOREIGN_NETWORK', ip: '127.0.0.2' });
  });

  it('suspends nobody for a wrong password, from a foreign address or an allowed one', async () => {
    for (const opts of [FOREIGN, {}]) {
      const c = await session(opts);
      expect(await c.login('alice', 'wrong password 123')).toBe(INVALID);
      await c.quit();
    }
    expect((await user()).status).toBe('active');
    expect(await incidents()).toEqual([]);
  });

  it('matches an IPv4 client arriving on a dual-stack listener as ::ffff:127.0.0.1', async () => {
    const dual = await startTestRelay({ submission: { listen: ['[::]:0'], listen_tls: [] } });
    await dual.addUser('carol', PASS, { networks: ['127.0.0.0/8'], senders: ['carol@example.com'] });
    const c = await SmtpClient.connect(dual.port);
    expect(await c.login('carol', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.send('carol@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    await c.quit();
    expect(dual.logs.events('auth.ok')[0]).toMatchObject({ ip: '127.0.0.1' });
    await dual.stop();
  });

  it('admits a time-limited network until it lapses, then logs and audits the lapse', async () => {
    expect((await cli(config, ['user', 'allow', 'alice', '--network', '127.0.0.2', '--for', '1h', '--by', 'helpdesk-bob', '--reason', 'travel'])).code).toBe(0);
    const c = await session(FOREIGN);
    expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    await c.quit();
    // The CLI used the wall clock; move the relay's clock past the exception's end.
    t.clock.set(Date.now() + 2 * 3_600_000);
    expect(await sweepLapsedBindings(t.relay.store, t.clock, t.relay.log)).toBe(1);
    expect(t.logs.events('binding.lapsed')).toMatchObject([{ principal: 'alice', principal_kind: 'user', kind: 'network', value: '127.0.0.2/32' }]);
    expect((await t.relay.store.audit.list({ target: 'user:alice' }))[0]).toMatchObject({ actor: 'postern', action: 'network.lapsed', detail: { network: '127.0.0.2/32' } });
  });
});

describe('sender binding', () => {
  it('refuses a foreign MAIL FROM after a good login, suspends, and refuses the rest of the session', async () => {
    const c = await session();
    await c.login('alice', PASS);
    expect(await c.cmd('MAIL FROM:<ceo@bank.example>')).toBe('553 5.7.1 Sender address not allowed for this account: <ceo@bank.example>');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('550 5.7.1 This account is suspended, please contact your helpdesk');
    expect(await c.cmd('RCPT TO:<x@example.net>')).toBe('503 5.5.1 Error: need MAIL command');
    await c.quit();
    expect(await user()).toMatchObject({ status: 'suspended', statusReason: 'foreign-sender from 127.0.0.1 as <ceo@bank.example>' });
    expect(await incidents()).toMatchObject([{ kind: 'foreign-sender', sender: 'ceo@bank.example', clientIp: '127.0.0.1' }]);
  });

  it('matches @domain senders for any local part and no other domain', async () => {
    const c = await session();
    await c.login('alice', PASS);
    expect(await c.send('whoever@EXAMPLE.org', ['x@example.net'], MSG)).toMatch(QUEUED);
    expect(await c.send('alice@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    expect(await c.cmd('MAIL FROM:<whoever@sub.example.org>')).toBe('553 5.7.1 Sender address not allowed for this account: <whoever@sub.example.org>');
    await c.quit();
    expect((await user()).status).toBe('suspended');
  });

  it('refuses the null sender without suspending', async () => {
    const c = await session();
    await c.login('alice', PASS);
    expect(await c.cmd('MAIL FROM:<>')).toBe('553 5.7.1 The null sender <> cannot be used for submission, use your own address');
    await c.quit();
    expect((await user()).status).toBe('active');
  });

  it('refuses a user without senders, without suspending', async () => {
    await t.addUser('dave', PASS, { networks: ['127.0.0.1/32'], senders: [] });
    const c = await session();
    await c.login('dave', PASS);
    expect(await c.cmd('MAIL FROM:<dave@example.com>')).toBe('553 5.7.1 This account has no sender addresses and cannot send mail, please contact your helpdesk');
    await c.quit();
    expect((await t.relay.store.users.find('dave'))!.status).toBe('active');
  });
});

describe('suspension and helpdesk reset', () => {
  it('refuses a suspended user with the helpdesk text, and reset restores sending with the new password only', async () => {
    const thief = await session(FOREIGN);
    expect(await thief.login('alice', PASS)).toBe(INVALID);
    await thief.quit();

    const c = await session();
    expect(await c.login('alice', PASS)).toBe(SUSPENDED_AUTH);
    await c.quit();

    const r = await cli(config, ['user', 'reset', 'alice', '--by', 'helpdesk-bob', '--reason', 'ticket 4711']);
    expect(r.code).toBe(0);
    const newPass = /^user alice reset: password changed, suspension lifted, 1 open incident resolved; new password \(shown once\): (\S+)\n$/.exec(r.out)![1]!;
    expect((await user()).status).toBe('active');
    expect(await incidents()).toMatchObject([{ resolvedBy: 'helpdesk-bob' }]);

    const old = await session();
    expect(await old.login('alice', PASS)).toBe(INVALID);
    await old.quit();
    const fresh = await session();
    expect(await fresh.login('alice', newPass)).toBe('235 2.7.0 Authentication successful');
    expect(await fresh.send('alice@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    await fresh.quit();
  });

  it('stops a session already open at its next command when the CLI suspends the user', async () => {
    const c = await session();
    await c.login('alice', PASS);
    expect(await c.send('alice@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    expect((await cli(config, ['user', 'suspend', 'alice', '--reason', 'investigating'])).code).toBe(0);
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('550 5.7.1 This account is suspended, please contact your helpdesk');
    await c.quit();
  });

  it('queues one notice for the user and one for the admins per burst', async () => {
    const thief = await session(FOREIGN);
    await thief.login('alice', PASS);
    await thief.quit();
    // The reply does not wait for the notices: they are queued once the incident is recorded.
    await t.logs.logged('notice.queued', 2);
    const first = await notices();
    expect(first.map((m) => [m.mailFrom, m.rcptTo])).toEqual([
      ['postmaster@smtp.test.example', ['alice@home.example']],
      ['postmaster@smtp.test.example', ['secops@example.net']],
    ]);
    const userNotice = (await t.relay.store.queue.body(first[0]!.id))!.toString();
    expect(userNotice).toContain('Subject: Sending from your mail account alice has been suspended\r\n');
    expect(userNotice).toContain('Auto-Submitted: auto-generated\r\n');
    expect(userNotice).toContain('The correct password for this account was used from 127.0.0.2, an address outside the networks it may send from.');
    expect(userNotice).toContain('contact your helpdesk (helpdesk@example.com)');
    // Only a login happened: the notice must not speak of a message.
    expect(userNotice).toContain('The login was refused, so nothing was sent from it.');
    expect(userNotice).not.toContain('The message was not sent.');
    const adminNotice = (await t.relay.store.queue.body(first[1]!.id))!.toString();
    expect(adminNotice).toContain('Subject: [postern] Suspended user alice: foreign-network from 127.0.0.2\r\n');
    expect(adminNotice).toContain('  postern user reset alice');

    // A false alarm lifted, then the same thing again within the burst window: recorded, not mailed.
    expect((await cli(config, ['user', 'unsuspend', 'alice', '--reason', 'false alarm'])).code).toBe(0);
    const again = await session(FOREIGN);
    expect(await again.login('alice', PASS)).toBe(INVALID);
    await again.quit();
    expect(await incidents()).toHaveLength(2);
    expect((await incidents())[0]!.notified).toBe(false);
    // Recorded without notify before the reply, so no notice can still be on its way.
    expect(t.logs.events('incident.recorded').at(-1)).toMatchObject({ notify: false });
    expect(await notices()).toHaveLength(2);
  });
});

describe('devices', () => {
  beforeEach(async () => {
    expect((await cli(config, ['device', 'add', 'printer-3f', '--ip', '127.0.0.3', '--sender', 'scanner@example.com', '--recipient', '@example.com'])).code).toBe(0);
  });

  it('accepts a device without AUTH or TLS from its own address only', async () => {
    const d = await session({ localAddress: '127.0.0.3' });
    await d.cmd('EHLO printer');
    const id = QUEUED.exec(await d.send('scanner@example.com', ['ops@example.com'], MSG))![1]!;
    await d.quit();
    expect(await t.relay.store.queue.get(id)).toMatchObject({ principal: 'device:printer-3f', clientIp: '127.0.0.3' });
    expect((await t.relay.store.queue.body(id))!.toString()).toMatch(/with ESMTP id /);

    const other = await session();
    await other.cmd('EHLO printer');
    expect(await other.cmd('MAIL FROM:<scanner@example.com>')).toBe('530 5.7.0 Must issue a STARTTLS command first');
    await other.quit();
  });

  it('refuses and suspends a device that sends as another sender', async () => {
    const d = await session({ localAddress: '127.0.0.3' });
    await d.cmd('EHLO printer');
    expect(await d.cmd('MAIL FROM:<ceo@example.com>')).toBe('553 5.7.1 Sender address not allowed for this account: <ceo@example.com>');
    expect(await d.cmd('MAIL FROM:<scanner@example.com>')).toBe('550 5.7.1 This account is suspended, please contact your helpdesk');
    await d.quit();
    expect((await t.relay.store.devices.find('printer-3f'))!.status).toBe('suspended');
    expect(await t.relay.store.incidents.list({ principalKind: 'device' })).toMatchObject([{ principalName: 'printer-3f', kind: 'device-foreign-sender' }]);
  });

  it('refuses and suspends a device that writes to a recipient outside its list', async () => {
    const d = await session({ localAddress: '127.0.0.3' });
    await d.cmd('EHLO printer');
    expect(await d.cmd('MAIL FROM:<scanner@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await d.cmd('RCPT TO:<x@evil.example>')).toBe('550 5.7.1 Recipient address not allowed for this device: <x@evil.example>');
    await d.quit();
    expect((await t.relay.store.devices.find('printer-3f'))!.status).toBe('suspended');
  });

  it('suspends and unsuspends a device by hand, audited', async () => {
    expect(await cli(config, ['device', 'suspend', 'printer-3f'])).toMatchObject({ code: 2, err: 'postern: postern device suspend printer-3f needs --reason "..." (it goes into the audit log)\n' });
    expect(await cli(config, ['device', 'suspend', 'printer-3f', '--reason', 'sends spam', '--by', 'admin-ann'])).toEqual({ code: 0, out: 'device printer-3f suspended\n', err: '' });
    expect(await cli(config, ['device', 'suspend', 'printer-3f', '--reason', 'again'])).toEqual({
      code: 1,
      out: '',
      err: 'postern: device printer-3f is already suspended (to lift it: postern device unsuspend printer-3f --reason "...")\n',
    });
    expect(await t.relay.store.devices.find('printer-3f')).toMatchObject({ status: 'suspended', statusReason: 'manual: sends spam' });
    const d = await session({ localAddress: '127.0.0.3' });
    await d.cmd('EHLO printer');
    expect(await d.cmd('MAIL FROM:<scanner@example.com>')).toBe('550 5.7.1 This account is suspended, please contact your helpdesk');
    await d.quit();
    expect((await cli(config, ['device', 'unsuspend', 'printer-3f', '--reason', 'cleaned up', '--by', 'admin-ann'])).code).toBe(0);
    const again = await session({ localAddress: '127.0.0.3' });
    await again.cmd('EHLO printer');
    expect(await again.send('scanner@example.com', ['ops@example.com'], MSG)).toMatch(QUEUED);
    await again.quit();
    const log = JSON.parse((await cli(config, ['audit', '--device', 'printer-3f', '--json'])).out) as Array<{ actor: string; action: string; reason: string | null }>;
    expect(log.map((e) => [e.action, e.actor, e.reason]).reverse()).toEqual([
      ['device.add', expect.any(String), null],
      ['device.suspend', 'admin-ann', 'sends spam'],
      ['device.unsuspend', 'admin-ann', 'cleaned up'],
    ]);
  });

  it('requires STARTTLS from a device configured to', async () => {
    expect((await cli(config, ['device', 'add', 'alarm', '--ip', '127.0.0.4', '--sender', 'alarm@example.com', '--require-tls'])).code).toBe(0);
    const d = await session({ localAddress: '127.0.0.4' });
    await d.cmd('EHLO alarm');
    expect(await d.cmd('MAIL FROM:<alarm@example.com>')).toBe('530 5.7.0 Must issue a STARTTLS command first');
    await d.starttls();
    await d.cmd('EHLO alarm');
    expect(await d.send('alarm@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    await d.quit();
  });
});

describe('audit', () => {
  it('records every CLI change with who, what and why', async () => {
    const steps: string[][] = [
      ['user', 'add', 'erin', '--sender', 'erin@example.com', '--network', '192.0.2.0/24', '--notify', 'erin@home.example', '--by', 'admin-ann', '--reason', 'new hire'],
      ['user', 'allow', 'erin', '--network', '198.51.100.0/24', '--by', 'admin-ann'],
      ['user', 'deny', 'erin', '--network', '192.0.2.0/24', '--by', 'admin-ann'],
      ['user', 'notify', 'erin', 'erin@elsewhere.example', '--by', 'admin-ann'],
      ['user', 'suspend', 'erin', '--reason', 'left', '--by', 'admin-ann'],
      ['user', 'unsuspend', 'erin', '--reason', 'came back', '--by', 'admin-ann'],
      ['user', 'passwd', 'erin', '--by', 'admin-ann'],
      ['user', 'reset', 'erin', '--by', 'helpdesk-bob', '--reason', 'ticket 1'],
      ['user', 'delete', 'erin', '--by', 'admin-ann'],
    ];
    for (const s of steps) expect((await cli(config, s)).code).toBe(0);
    const log = JSON.parse((await cli(config, ['audit', '--user', 'erin', '--json'])).out) as Array<{ actor: string; action: string; reason: string | null; detail: unknown }>;
    expect(log.map((e) => e.action).reverse()).toEqual(['user.add', 'user.allow', 'user.deny', 'user.notify', 'user.suspend', 'user.unsuspend', 'user.passwd', 'user.reset', 'user.delete']);
    expect(log.at(-1)).toMatchObject({ actor: 'admin-ann', reason: 'new hire' });
    expect(log.find((e) => e.action === 'user.reset')).toMatchObject({ actor: 'helpdesk-bob', reason: 'ticket 1' });
    // Details are objects in --json, never JSON inside a string.
    expect(log.find((e) => e.action === 'user.deny')!.detail).toEqual({ senders: [], networks: ['192.0.2.0/24'], countries: [], asns: [], until: null });
    expect(log.find((e) => e.action === 'user.add')!.detail).toEqual({ senders: ['erin@example.com'], networks: ['192.0.2.0/24'], countries: [], asns: [], notify: 'erin@home.example' });
    expect(log.find((e) => e.action === 'user.reset')!.detail).toEqual({ suspension_lifted: false, incidents_resolved: 0, app_passwords_revoked: 0 });
    expect(log.find((e) => e.action === 'user.suspend')!.detail).toBeNull();
  });

  it('warns when notices would go to one of the user\'s own senders', async () => {
    const r = await cli(config, ['user', 'add', 'fred', '--sender', 'fred@example.com', '--network', '192.0.2.0/24']);
    expect(r.err).toBe("warning: notices for fred go to fred@example.com, one of the account's own senders: whoever holds the account may hold that mailbox too; prefer an address the user reads elsewhere (--notify)\n");
  });
});

describe('network bindings in canonical form', () => {
  it('stores an IPv4-mapped network as the IPv4 network, which then lets 127.0.0.1 in', async () => {
    expect(await cli(config, ['user', 'add', 'carol', '--password-stdin', '--sender', 'carol@example.com', '--network', '::ffff:127.0.0.1', '--network', '::ffff:10.1.0.0/112'], `${PASS}\n`)).toMatchObject({ code: 0 });
    const carol = (await t.relay.store.users.find('carol'))!;
    expect((await t.relay.store.bindings.values('user', carol.id, 'network', t.clock.now())).sort()).toEqual(['10.1.0.0/16', '127.0.0.1/32']);
    const c = await session();
    expect(await c.login('carol', PASS)).toBe('235 2.7.0 Authentication successful');
    await c.quit();
    expect((await t.relay.store.users.get(carol.id))!.status).toBe('active');
  });

  it('matches a mapped network stored before canonical storage against an IPv4 client', async () => {
    await t.addUser('dave', PASS, { networks: ['::ffff:7f00:1/128'], senders: ['dave@example.com'] });
    const c = await session();
    expect(await c.login('dave', PASS)).toBe('235 2.7.0 Authentication successful');
    await c.quit();
  });

  it('refuses ::/0 on its own with the advice to add 0.0.0.0/0, and takes the two together', async () => {
    expect(await cli(config, ['user', 'allow', 'alice', '--network', '::/0'])).toEqual({
      code: 1,
      out: '',
      err: 'postern: --network ::/0 matches IPv6 clients only, never an IPv4 one (not even one a dual-stack listener shows as ::ffff:192.0.2.7): to allow every client give both, --network 0.0.0.0/0 --network ::/0\n',
    });
    expect(await t.relay.store.bindings.values('user', alice, 'network', t.clock.now())).toEqual(['127.0.0.1/32']);
    expect(await cli(config, ['user', 'allow', 'alice', '--network', '0::0/0', '--network', '0.0.0.0/0'])).toMatchObject({ code: 0 });
    expect((await t.relay.store.bindings.values('user', alice, 'network', t.clock.now())).sort()).toEqual(['0.0.0.0/0', '127.0.0.1/32', '::/0']);
    // Removing it is never refused, and with 0.0.0.0/0 bound it may be added on its own.
    expect(await cli(config, ['user', 'deny', 'alice', '--network', '::/0'])).toMatchObject({ code: 0 });
    expect(await cli(config, ['user', 'allow', 'alice', '--network', '::/0'])).toMatchObject({ code: 0 });
    expect((await t.relay.store.bindings.values('user', alice, 'network', t.clock.now())).sort()).toEqual(['0.0.0.0/0', '127.0.0.1/32', '::/0']);
  });
});
