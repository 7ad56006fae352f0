import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../../src/cli/run.js';
import { dovecotAvailable, NO_DOVECOT_MESSAGE, startDovecot, waitForLog, type TestDovecot } from '../helpers/dovecot.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, tempDir, testConfig, type TestRelay } from '../helpers/relay.js';
import { probeDovecot } from '../../src/cli/doctor.js';
import { checkDovecot } from '../../src/dns/checks/auth.js';
import type { DoctorContext } from '../../src/dns/checks/result.js';

/**
 * SMTP AUTH through a real Dovecot ([auth] backend = "dovecot"): the password is the
 * directory's, bindings, limits and suspension stay Postern's, and a password a compromise
 * caught stays refused by Postern (only) until the user changes it in the directory.
 */
const OK = '235 2.7.0 Authentication successful';
const INVALID = '535 5.7.8 Authentication credentials invalid';
const TEMPFAIL = '454 4.7.0 Temporary authentication failure, try again later';
const QUEUED = /^250 2\.0\.0 Ok: queued as [0-9A-Z]{15}$/;
const MSG = 'Subject: hi\r\n\r\nhello\r\n';

const PASSWORDS: Record<string, string> = {
  alice: 'alice-directory-secret-1',
  bob: 'bob-directory-secret-1',
  carol: 'carol-directory-secret-1',
  dave: 'dave-directory-secret-1',
  erin: 'erin-directory-secret-1',
  frank: 'frank-directory-secret-1',
  'gina@example.com': 'gina-directory-secret-1',
  harry: 'harry-directory-secret-1',
  bob2: 'bob2-directory-secret-1',
};
/** Every password a test ever sends: none may appear in any log line. */
const sent = new Set<string>(Object.values(PASSWORDS));

let d: TestDovecot;
let t: TestRelay;
let config: string;

const cli = async (argv: string[], cfg = config) => {
  let out = '';
  let err = '';
  const code = await runCli(['--config', cfg, ...argv], { stdout: (s) => (out += s), stderr: (s) => (err += s), stdin: async () => '', env: {} });
  await t.relay.store.syncPolicy();
  return { code, out, err };
};

/** A Postern user for a directory user, made through the CLI as an admin would. */
async function addUser(name: string, ...flags: string[]) {
  const r = await cli(['user', 'add', name, '--sender', name.includes('@') ? name : `${name}@example.com`, '--network', '127.0.0.1', ...flags]);
  expect(r).toMatchObject({ code: 0, out: `user ${name} added; it logs in with its directory password (auth.backend = "dovecot")\n` });
}

async function session(opts: { from?: number; tls?: boolean } = {}): Promise<SmtpClient> {
  return opts.tls ? SmtpClient.connect(t.tlsPort, { tls: true, localAddress: `127.0.0.${opts.from ?? 1}` }) : SmtpClient.connect(t.port, { localAddress: `127.0.0.${opts.from ?? 1}` });
}

async function login(user: string, pass: string, opts: { from?: number; tls?: boolean } = {}): Promise<string> {
  sent.add(pass);
  const c = await session(opts);
  try {
    return await c.login(user, pass);
  } finally {
    await c.quit();
  }
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const userOf = async (name: string) => (await t.relay.store.users.find(name))!;

beforeAll(async () => {
  if (!dovecotAvailable()) return;
  d = await startDovecot(PASSWORDS);
  const dir = tempDir();
  t = await startTestRelay({ auth: { backend: 'dovecot', dovecot_socket: d.inet, dovecot_timeout_seconds: 2 }, notify: { admins: ['secops@example.net'] } }, { dir });
  config = path.join(dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${dir}"\n[auth]\nbackend = "dovecot"\ndovecot_socket = "${d.inet}"\n`);
});
afterAll(async () => {
  await t?.stop();
  await d?.close();
});

describe.skipIf(!dovecotAvailable())('SMTP AUTH with Dovecot passwords', () => {
  it('accepts the directory password over STARTTLS and implicit TLS, with PLAIN and LOGIN, and tells Dovecot the service, client and TLS', async () => {
    await addUser('alice');
    expect(await login('alice', PASSWORDS.alice!)).toBe(OK);
    expect(await login('alice', PASSWORDS.alice!, { tls: true })).toBe(OK);
    for (const tls of [false, true]) {
      const c = await session({ tls });
      await c.cmd('EHLO client.example');
      if (!tls) {
        await c.starttls();
        await c.cmd('EHLO client.example');
      }
      expect(await c.cmd('AUTH LOGIN')).toBe(`334 ${b64('Username:')}`);
      expect(await c.cmd(b64('alice'))).toBe(`334 ${b64('Password:')}`);
      expect(await c.cmd(b64(PASSWORDS.alice!))).toBe(OK);
      expect(await c.send('alice@example.com', ['x@example.org'], MSG)).toMatch(QUEUED);
      await c.quit();
    }
    expect(t.logs.events('auth.ok').filter((e) => e.principal === 'alice').map((e) => e.method)).toEqual(['PLAIN', 'PLAIN', 'LOGIN', 'LOGIN']);
    // Dovecot saw the service name, the client's address and that the session was secured.
    const log = await waitForLog(d.logFile, (l) => /service=smtp.*rip=127\.0\.0\.1/.test(l));
    expect(log).toMatch(/secured/);
  });

  it('refuses a wrong directory password with 535 5.7.8 and suspends nobody', async () => {
    await addUser('bob');
    expect(await login('bob', 'not-bobs-password')).toBe(INVALID);
    expect(t.logs.events('auth.fail').at(-1)).toMatchObject({ principal: 'bob', reason: 'AUTH_INVALID' });
    expect((await userOf('bob')).status).toBe('active');
    expect(await login('bob', PASSWORDS.bob!)).toBe(OK);
  });

  it('refuses a directory user without a Postern user like an unknown one, logging that the directory knew the password', async () => {
    expect(await t.relay.store.users.find('harry')).toBeUndefined();
    expect(await login('harry', PASSWORDS.harry!)).toBe(INVALID);
    expect(t.logs.events('auth.fail').at(-1)).toMatchObject({ principal: 'harry', reason: 'AUTH_INVALID', unprovisioned: true });
    expect(await t.relay.store.users.find('harry')).toBeUndefined();
  });

  it('suspends SMTP after a login from a foreign network while IMAP goes on; after unsuspend that password stays refused and a changed one works', async () => {
    await addUser('carol');
    expect(await login('carol', PASSWORDS.carol!, { from: 2 })).toBe(INVALID);
    const carol = await userOf('carol');
    expect(carol.status).toBe('suspended');
    expect(await t.relay.store.credentials.countCompromised(carol.id, 'carol')).toBe(1);
    expect(await t.relay.store.incidents.list({ name: 'carol' })).toMatchObject([{ kind: 'foreign-network', clientIp: '127.0.0.2' }]);
    expect(t.logs.events('user.suspended').at(-1)).toMatchObject({ principal: 'carol', password_refused: true });
    // Dovecot was never changed: the same password still opens the mailbox.
    expect(await d.authTest('carol', PASSWORDS.carol!, 'imap')).toMatchObject({ ok: true });
    // The notice tells the user to change the password where they read mail.
    await t.logs.logged('notice.queued', 2);
    const notices = await Promise.all((await t.relay.store.queue.list()).filter((m) => m.principal === null && m.rcptTo.includes('carol@example.com')).map(async (m) => (await t.relay.store.queue.body(m.id))!.toString()));
    expect(notices.join('\n')).toContain('Until you change it, this relay refuses that password for sending, even after access is restored. Reading mail keeps working.');

    const un = await cli(['user', 'unsuspend', 'carol', '--reason', 'helpdesk call 42']);
    expect(un).toMatchObject({ code: 0, out: expect.stringContaining('the password seen in a compromise stays refused for sending until carol changes it in the directory') });
    expect(await login('carol', PASSWORDS.carol!)).toBe(INVALID);
    expect(t.logs.events('auth.compromised_password').at(-1)).toMatchObject({ principal: 'carol', reason: 'AUTH_INVALID' });
    expect((await userOf('carol')).status).toBe('active');
    expect(await d.authTest('carol', PASSWORDS.carol!, 'imap')).toMatchObject({ ok: true });

    const changed = 'carol-directory-secret-2';
    sent.add(changed);
    await d.setPassword('carol', changed);
    expect(await login('carol', changed)).toBe(OK);
    expect(await login('carol', PASSWORDS.carol!)).toBe(INVALID);
  });

  it('enforces the sender binding: a foreign MAIL FROM suspends, and reset keeps that password refused until changed or cleared', async () => {
    await addUser('dave');
    const c = await session();
    expect(await c.login('dave', PASSWORDS.dave!)).toBe(OK);
    expect(await c.cmd('MAIL FROM:<ceo@example.net>')).toBe('553 5.7.1 Sender address not allowed for this account: <ceo@example.net>');
    await c.quit();
    const dave = await userOf('dave');
    expect(dave.status).toBe('suspended');
    expect(await t.relay.store.credentials.countCompromised(dave.id, 'dave')).toBe(1);

    const r = await cli(['user', 'reset', 'dave', '--by', 'helpdesk-ann']);
    expect(r).toMatchObject({ code: 0, out: expect.stringMatching(/^user dave reset: suspension lifted, 1 open incident resolved; the password is the directory's \(not changed by Postern\)\nthe password seen in a compromise stays refused/) });
    expect(await login('dave', PASSWORDS.dave!)).toBe(INVALID);
    // A false alarm: the admin clears it, and the same password works again.
    expect(await cli(['user', 'reset', 'dave', '--clear-compromised', '--reason', 'it was dave on a train'])).toMatchObject({ code: 0, out: expect.stringContaining(', 1 refused password cleared;') });
    expect(await login('dave', PASSWORDS.dave!)).toBe(OK);
    expect((await t.relay.store.audit.list({ target: 'user:dave' }))[0]).toMatchObject({ actor: expect.any(String), action: 'user.reset', detail: { compromised_passwords_cleared: 1 } });
  });

  it('answers 454 4.7.0 while Dovecot is down, counts no failure and suspends nobody; a login cached within its TTL still works', async () => {
    await addUser('erin');
    await addUser('frank');
    expect(await login('erin', PASSWORDS.erin!)).toBe(OK); // cached from here on
    await d.stop();
    try {
      // More tries than auth_max_failures_per_user_ip (5): a failure counted would lock frank out.
      for (let i = 0; i < 7; i++) expect(await login('frank', PASSWORDS.frank!)).toBe(TEMPFAIL);
      expect(await login('frank', 'wrong-but-unjudgeable')).toBe(TEMPFAIL);
      expect(await login('nobody-here', 'whatever-password')).toBe(TEMPFAIL);
      expect(await login('frank', PASSWORDS.frank!, { from: 2 })).toBe(TEMPFAIL);
      expect(await login('erin', PASSWORDS.erin!)).toBe(OK);
      expect(t.logs.events('auth.ok').at(-1)).toMatchObject({ principal: 'erin', cached: true });
    } finally {
      await d.start();
    }
    expect(t.logs.events('auth.unavailable').at(-1)).toMatchObject({ principal: 'frank', reason: 'AUTH_TEMPFAIL', backend: 'dovecot', err: expect.any(String) });
    expect(t.logs.events('auth.lockout')).toEqual([]);
    expect((await userOf('frank')).status).toBe('active');
    expect(await t.relay.store.incidents.list({ name: 'frank' })).toEqual([]);
    expect(await login('frank', PASSWORDS.frank!)).toBe(OK);
    const metrics = await (await fetch(`http://127.0.0.1:${t.relay.metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/^postern_auth_total\{outcome="unavailable",reason="AUTH_TEMPFAIL"\} 10$/m);
  });

  it('keeps a caught password refused for the directory account: a Postern user deleted and added again meets it too', async () => {
    await addUser('bob2');
    expect(await login('bob2', 'bob2-directory-secret-1', { from: 2 })).toBe(INVALID);
    expect(await cli(['user', 'delete', 'bob2'])).toMatchObject({ code: 0 });
    await addUser('bob2');
    expect(await login('bob2', 'bob2-directory-secret-1')).toBe(INVALID);
    expect(t.logs.events('auth.compromised_password').at(-1)).toMatchObject({ principal: 'bob2' });
    expect(JSON.parse((await cli(['user', 'show', 'bob2', '--json'])).out)).toMatchObject({ status: 'active', compromised_passwords: 1 });
  });

  it('ends cached logins and open sessions on user reset even when nothing was suspended (a user who calls after a phishing mail)', async () => {
    expect(await login('erin', PASSWORDS.erin!)).toBe(OK);
    expect(t.logs.events('auth.ok').at(-1)).toMatchObject({ principal: 'erin', cached: true });
    const open = await session();
    expect(await open.login('erin', PASSWORDS.erin!)).toBe(OK);
    expect(await cli(['user', 'reset', 'erin', '--reason', 'phishing mail, ticket 7'])).toMatchObject({ code: 0, out: expect.stringMatching(/^user erin reset: was not suspended, 0 open incidents resolved;/) });
    expect(await open.cmd('MAIL FROM:<erin@example.com>')).toBe('421 4.7.0 The credentials of this account changed, please log in again');
    await open.quit();
    expect(await login('erin', PASSWORDS.erin!)).toBe(OK);
    expect(t.logs.events('auth.ok').at(-1)).toMatchObject({ principal: 'erin', cached: false });
  });

  it('keeps passwords, hashes and AUTH blobs out of every log line, Postern\'s and Dovecot\'s', () => {
    const lines = [...t.logs.raw, ...readFileSync(d.logFile, 'utf8').split('\n')];
    expect(lines.length).toBeGreaterThan(50);
    for (const p of sent) {
      for (const secret of [p, b64(p), b64(`\0alice\0${p}`)]) expect(lines.filter((l) => l.includes(secret))).toEqual([]);
    }
  });
});

describe.skipIf(!dovecotAvailable())('directory users and the CLI', () => {
  it('refuses passwd and --password-stdin, and shows where the password lives', async () => {
    expect(await cli(['user', 'passwd', 'alice'])).toMatchObject({
      code: 1,
      err: expect.stringContaining('the password of alice is the directory\'s (auth.backend = "dovecot"): change it there'),
    });
    expect(await cli(['user', 'add', 'zed', '--sender', 'zed@example.com', '--network', '127.0.0.1', '--password-stdin'])).toMatchObject({ code: 2, err: expect.stringContaining('--password-stdin has no use with auth.backend = "dovecot"') });
    expect(await t.relay.store.users.find('zed')).toBeUndefined();
    const show = await cli(['user', 'show', 'carol', '--json']);
    expect(JSON.parse(show.out)).toMatchObject({ name: 'carol', password: 'directory', compromised_passwords: 1 });
  });
});

describe.skipIf(!dovecotAvailable())('a right password refused takes as long as a wrong one (Dovecot delays only failures)', () => {
  // A Dovecot with a failure delay (1 s; production's default is 2 s): the one above has none.
  let dir: TestDovecot;
  let r: TestRelay;
  beforeAll(async () => {
    dir = await startDovecot({ tim: 'the-right-password', nobody: 'the-right-password' }, { failureDelaySeconds: 1 });
    r = await startTestRelay({ auth: { backend: 'dovecot', dovecot_socket: dir.inet } });
    const u = await r.relay.store.users.add('tim', '', r.clock.now());
    await r.relay.store.bindings.add('user', u.id, 'network', '127.0.0.1/32', r.clock.now());
    await r.relay.store.bindings.add('user', u.id, 'sender', '@example.com', r.clock.now());
  });
  afterAll(async () => {
    await r?.stop();
    await dir?.close();
  });

  const timed = async (user: string, pass: string, from: number) => {
    const c = await SmtpClient.connect(r.port, { localAddress: `127.0.0.${from}` });
    await c.cmd('EHLO client.example');
    await c.starttls();
    await c.cmd('EHLO client.example');
    const t0 = performance.now();
    const reply = await c.authPlain(user, pass);
    const ms = performance.now() - t0;
    await c.quit();
    return { reply, ms };
  };

  it('holds the 535 of a right password from a foreign network, and of a directory user without a Postern user, as long as the wrong ones took', async () => {
    // Dovecot's delay varies with its batching: what counts is that a right password refused
    // waits as long as the wrong one took (the authenticator replays a recent failure's time).
    const wrong = await timed('tim', 'a-wrong-password', 1);
    expect(wrong.reply).toBe(INVALID);
    expect(wrong.ms).toBeGreaterThan(250);
    const foreign = await timed('tim', 'the-right-password', 2);
    expect(foreign).toMatchObject({ reply: INVALID });
    expect(foreign.ms).toBeGreaterThanOrEqual(wrong.ms - 50);
    const unprovisioned = await timed('nobody', 'the-right-password', 1);
    expect(unprovisioned).toMatchObject({ reply: INVALID });
    expect(unprovisioned.ms).toBeGreaterThanOrEqual(wrong.ms - 50);
    // The right password inside the user's networks is not held back (the suspension above is lifted first).
    await r.relay.store.users.unsuspend((await r.relay.store.users.find('tim'))!.id, r.clock.now());
    await r.relay.store.credentials.forgetCompromised((await r.relay.store.users.find('tim'))!.id, 'tim');
    sent.add('the-right-password');
    const ok = await timed('tim', 'the-right-password', 1);
    expect(ok.reply).toBe(OK);
    expect(ok.ms).toBeLessThan(wrong.ms / 2);
  });
});

describe.skipIf(!dovecotAvailable())('postern doctor: auth.dovecot', () => {
  const check = (socket: string) => {
    const cfg = testConfig(t.dir, { auth: { backend: 'dovecot', dovecot_socket: socket, dovecot_timeout_seconds: 1 } });
    return checkDovecot({ cfg } as DoctorContext, () => probeDovecot(cfg));
  };

  it('passes when Dovecot answers with PLAIN, over a unix socket or TCP', async () => {
    expect(await check(d.socketPath)).toEqual([{ id: 'auth.dovecot', subject: d.socketPath, status: 'PASS', reason: "Dovecot's auth service answers (mechanisms PLAIN, LOGIN); Postern asks it as service smtp" }]);
    expect((await check(d.inet))[0]).toMatchObject({ status: 'PASS' });
  });

  it('fails, saying what to check, when nothing listens there', async () => {
    const missing = path.join(t.dir, 'no-such-socket');
    expect(await check(missing)).toEqual([
      {
        id: 'auth.dovecot',
        subject: missing,
        status: 'FAIL',
        reason: expect.stringMatching(/^cannot use Dovecot's auth service: .*ENOENT.*; every login gets 454 4\.7\.0 until it can: start Dovecot, or check its "service auth" listener/),
      },
    ]);
  });
});

describe.skipIf(!dovecotAvailable())('first-login provisioning from [auth.template]', () => {
  let p: TestRelay;
  beforeAll(async () => {
    p = await startTestRelay({
      auth: { backend: 'dovecot', dovecot_socket: `${d.socketPath}`, provision: 'template', template: { senders: ['{user}', '@{domain}'], networks: ['127.0.0.1'] } },
    });
  });
  afterAll(() => p?.stop());

  it('makes a directory user a Postern user at the first login, from the template, audited as made by provision', async () => {
    const c = await SmtpClient.connect(p.port);
    expect(await c.login('gina@example.com', PASSWORDS['gina@example.com']!)).toBe(OK);
    expect(await c.send('gina@example.com', ['x@example.org'], MSG)).toMatch(QUEUED);
    expect(await c.cmd('MAIL FROM:<ceo@example.net>')).toBe('553 5.7.1 Sender address not allowed for this account: <ceo@example.net>');
    await c.quit();
    const gina = (await p.relay.store.users.find('gina@example.com'))!;
    expect((await p.relay.store.bindings.values('user', gina.id, 'sender', p.clock.now())).sort()).toEqual(['@example.com', 'gina@example.com']);
    expect(await p.relay.store.bindings.values('user', gina.id, 'network', p.clock.now())).toEqual(['127.0.0.1/32']);
    expect(await p.relay.store.audit.list({ target: 'user:gina@example.com' })).toMatchObject([{ actor: 'provision', action: 'user.add', detail: { provisioned: true } }]);
    expect(p.logs.events('user.provisioned')).toMatchObject([{ principal: 'gina@example.com' }]);
  });

  it('does not provision a name the directory refuses', async () => {
    const c = await SmtpClient.connect(p.port);
    expect(await c.login('gina2@example.com', 'guess-guess-guess')).toBe(INVALID);
    await c.quit();
    expect(await p.relay.store.users.find('gina2@example.com')).toBeUndefined();
  });
});

// Said once, not counted as a skipped test: .ci/run installs Dovecot.
if (!dovecotAvailable()) console.warn(NO_DOVECOT_MESSAGE);
