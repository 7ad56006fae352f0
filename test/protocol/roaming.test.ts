import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../../src/cli/run.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, storeToml, tempDir, type TestRelay } from '../helpers/relay.js';

/**
 * Laptops that travel: country and AS bindings beside CIDRs, and app passwords with places of
 * their own, over real sockets. The IP database is a small CSV pair that places loopback
 * addresses (an admin's own file places whatever rows it holds):
 *   127.0.0.1  DE  AS3320  (home provider)      127.0.0.2  FR  AS16276 OVH
 *   127.0.0.3  PT  AS3243  (a conference)       127.0.0.4  DE  AS8881  (another German provider)
 * 127.0.0.5 is in neither file (an address the database does not place).
 */
const PASS = 'correct horse battery staple';
const INVALID = '535 5.7.8 Authentication credentials invalid';
const OK = '235 2.7.0 Authentication successful';
const QUEUED = /^250 2\.0\.0 Ok: queued as [0-9A-Z]{15}$/;
const MSG = 'Subject: hi\r\n\r\nhello\r\n';
const at = (n: number) => ({ localAddress: `127.0.0.${n}` });

let t: TestRelay;
let config: string;

const cli = async (argv: string[]) => {
  let out = '';
  let err = '';
  const code = await runCli(['--config', config, ...argv], { stdout: (s) => (out += s), stderr: (s) => (err += s), stdin: async () => '', env: {} });
  await t.relay.store.syncPolicy();
  return { code, out, err };
};

async function login(n: number, user: string, pass: string): Promise<string> {
  const c = await SmtpClient.connect(t.port, at(n));
  try {
    return await c.login(user, pass);
  } finally {
    await c.quit();
  }
}

/** A user made through the CLI, as an admin would; returns nothing: the password is PASS. */
async function addUser(name: string, ...places: string[]) {
  const r = await runCli(['--config', config, 'user', 'add', name, '--sender', `${name}@example.com`, '--password-stdin', ...places], {
    stdout: () => undefined,
    stderr: () => undefined,
    stdin: async () => `${PASS}\n`,
    env: {},
  });
  expect(r).toBe(0);
  await t.relay.store.syncPolicy();
}

const userOf = async (name: string) => (await t.relay.store.users.find(name))!;
const incidentsOf = async (name: string) => t.relay.store.incidents.list({ name });

beforeAll(async () => {
  const dir = tempDir();
  const country = path.join(dir, 'country.csv');
  const asn = path.join(dir, 'asn.csv');
  writeFileSync(country, '127.0.0.1,127.0.0.1,DE\n127.0.0.2,127.0.0.2,FR\n127.0.0.3,127.0.0.3,PT\n127.0.0.4,127.0.0.4,DE\n');
  writeFileSync(asn, '127.0.0.1,127.0.0.1,3320,Deutsche Telekom AG\n127.0.0.2,127.0.0.2,16276,OVH SAS\n127.0.0.3,127.0.0.3,3243,MEO\n127.0.0.4,127.0.0.4,8881,Versatel\n');
  t = await startTestRelay({ geo: { country_db: country, asn_db: asn }, notify: { admins: ['secops@example.net'] } }, { dir });
  config = path.join(dir, 'cli.toml');
  writeFileSync(
    config,
    `[server]\nhostname = "smtp.test.example"\ndata_dir = "${dir}"\n[auth]\nargon2_memory_kib = 1024\nargon2_time_cost = 1\n${storeToml(t.cfg)}`,
  );
});
afterAll(() => t.stop());

describe('country and AS bindings', () => {
  it('lets a user bound to a country log in from any address the database places there', async () => {
    await addUser('anna', '--country', 'DE');
    expect(await login(1, 'anna', PASS)).toBe(OK);
    expect(await login(4, 'anna', PASS)).toBe(OK);
    expect(t.logs.events('auth.ok').at(-1)).toMatchObject({ principal: 'anna', principal_kind: 'user', ip: '127.0.0.4' });
    expect((await userOf('anna')).status).toBe('active');
  });

  it('refuses a login from a foreign country as a wrong password, suspends, and names the address, country and AS', async () => {
    await addUser('bert', '--country', 'DE', '--asn', '3320');
    expect(await login(2, 'bert', PASS)).toBe(INVALID);
    expect(await userOf('bert')).toMatchObject({ status: 'suspended' });
    expect(await incidentsOf('bert')).toMatchObject([{ kind: 'foreign-network', clientIp: '127.0.0.2', detail: '127.0.0.2, FR, AS16276 OVH SAS' }]);
    expect(t.logs.events('auth.fail').at(-1)).toMatchObject({ principal: 'bert', reason: 'AUTH_FOREIGN_NETWORK', place: '127.0.0.2, FR, AS16276 OVH SAS' });
    // The notice to the admins says where the login came from.
    await t.logs.logged('notice.queued', 1);
    const notice = (await t.relay.store.queue.list()).find((m) => m.principal === null && m.rcptTo.includes('secops@example.net'))!;
    expect((await t.relay.store.queue.body(notice.id))!.toString()).toContain('Detail:     The correct password for this account was used from 127.0.0.2, FR, AS16276 OVH SAS, an address outside the networks it may send from.');
  });

  it('matches an address the database does not place only by CIDR', async () => {
    await addUser('carl', '--country', 'DE', '--network', '127.0.0.5');
    expect(await login(5, 'carl', PASS)).toBe(OK);
    await addUser('cleo', '--country', 'DE');
    expect(await login(5, 'cleo', PASS)).toBe(INVALID);
    expect(await incidentsOf('cleo')).toMatchObject([{ kind: 'foreign-network', detail: '127.0.0.5' }]);
  });

  it('admits a login by AS alone, from any country the provider serves', async () => {
    await addUser('dora', '--asn', 'AS16276');
    expect(await login(2, 'dora', PASS)).toBe(OK);
    expect(await login(1, 'dora', PASS)).toBe(INVALID);
    expect((await userOf('dora')).status).toBe('suspended');
  });

  it('takes a travel exception by country that lapses by itself, and deny removes a country', async () => {
    await addUser('emil', '--country', 'DE');
    expect(await cli(['user', 'allow', 'emil', '--country', 'pt', '--for', '7d', '--reason', 'conference'])).toMatchObject({ code: 0, out: expect.stringMatching(/^allowed for emil: country PT \(until \d{4}-/) });
    expect(await login(3, 'emil', PASS)).toBe(OK);
    // Past the exception's end (the CLI used the wall clock): Portugal is foreign again.
    const now = t.clock.now();
    t.clock.set(Date.now() + 8 * 86_400_000);
    try {
      expect(await login(3, 'emil', PASS)).toBe(INVALID);
    } finally {
      t.clock.set(now);
    }
    expect((await userOf('emil')).status).toBe('suspended');
    expect(await cli(['user', 'deny', 'emil', '--country', 'DE'])).toMatchObject({ code: 0, out: 'denied for emil: country DE\n' });
    // The CLI reads the wall clock: the exception is still there until it lapses.
    expect(JSON.parse((await cli(['user', 'show', 'emil', '--json'])).out)).toMatchObject({ countries: [expect.stringMatching(/^PT \(until \d{4}-/)], asns: [] });
  });

  it('refuses countries and ASNs that are not codes, naming the value', async () => {
    expect(await cli(['user', 'add', 'fay', '--sender', 'fay@example.com', '--country', 'UK'])).toEqual({ code: 1, out: '', err: 'postern: bad country "UK": the ISO 3166-1 code of the United Kingdom is GB\n' });
    expect(await cli(['user', 'add', 'fay', '--sender', 'fay@example.com', '--country', 'Germany'])).toEqual({
      code: 1,
      out: '',
      err: 'postern: bad country "Germany": use a two-letter ISO 3166-1 code such as DE, AT or PT\n',
    });
    expect(await cli(['user', 'add', 'fay', '--sender', 'fay@example.com', '--asn', 'AS-OVH'])).toEqual({
      code: 1,
      out: '',
      err: 'postern: bad ASN "AS-OVH": use an autonomous system number such as 3320 or AS3320\n',
    });
    expect(await t.relay.store.users.find('fay')).toBeUndefined();
  });
});

describe('app passwords', () => {
  const appPassword = async (user: string, ...args: string[]) => {
    const r = await cli(['user', 'password', 'add', user, ...args, '--json']);
    expect(r).toMatchObject({ code: 0, err: '' });
    return (JSON.parse(r.out) as { password: string }).password;
  };

  it('logs in with an app password from its own country; outside it suspends the user and the incident names the label', async () => {
    await addUser('gina', '--network', '127.0.0.1');
    const phone = await appPassword('gina', '--label', 'phone', '--country', 'FR');
    expect(phone).toMatch(/^ap-[a-z2-7]{8}-[a-z2-7]{24}$/);
    // The phone's places are its own: France, not gina's network.
    expect(await login(2, 'gina', phone)).toBe(OK);
    expect(t.logs.events('auth.ok').at(-1)).toMatchObject({ principal: 'gina', app_password: 'phone' });
    // The main password keeps gina's own network only.
    expect(await login(1, 'gina', PASS)).toBe(OK);
    const c = await SmtpClient.connect(t.port, at(2));
    expect(await c.login('gina', phone)).toBe(OK);
    expect(await c.send('gina@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    await c.quit();
    const listed = JSON.parse((await cli(['user', 'password', 'list', 'gina', '--json'])).out) as Array<Record<string, unknown>>;
    expect(listed).toEqual([{ label: 'phone', networks: [], countries: ['FR'], asns: [], created: expect.any(String), last_used: expect.any(String) }]);
    expect(JSON.stringify(listed)).not.toContain(phone);

    expect(await login(3, 'gina', phone)).toBe(INVALID);
    expect((await userOf('gina')).status).toBe('suspended');
    expect(await incidentsOf('gina')).toMatchObject([{ kind: 'foreign-network', detail: '127.0.0.3, PT, AS3243 MEO; app password phone' }]);
    // The helpdesk's reset keeps app passwords, and says that the one the incident names still works.
    const reset = await cli(['user', 'reset', 'gina']);
    expect(reset.err).toBe('warning: an incident just resolved names the app password phone of gina, and it still works: revoke it unless that login was the user\'s own: postern user password revoke gina phone --reason "..."\n');
    expect(await login(2, 'gina', phone)).toBe(OK);
  });

  it('refuses a revoked app password without suspending anyone, and leaves the others and the main password alone', async () => {
    await addUser('hugo', '--network', '127.0.0.1');
    const phone = await appPassword('hugo', '--label', 'phone');
    const tablet = await appPassword('hugo', '--label', 'tablet');
    // No places of its own: the user's.
    expect(await login(1, 'hugo', phone)).toBe(OK);
    expect(await cli(['user', 'password', 'revoke', 'hugo', 'phone', '--reason', 'phone lost', '--by', 'helpdesk-bob'])).toEqual({ code: 0, out: 'app password phone of hugo revoked\n', err: '' });
    expect(await login(1, 'hugo', phone)).toBe(INVALID);
    expect(await userOf('hugo')).toMatchObject({ status: 'active' });
    expect(await incidentsOf('hugo')).toEqual([]);
    expect(await login(1, 'hugo', tablet)).toBe(OK);
    expect(await login(1, 'hugo', PASS)).toBe(OK);
    expect((await t.relay.store.audit.list({ target: 'user:hugo' }))[0]).toMatchObject({ action: 'user.app_password.revoke', actor: 'helpdesk-bob', reason: 'phone lost', detail: { label: 'phone' } });
    expect(await cli(['user', 'password', 'revoke', 'hugo', 'phone', '--reason', 'again'])).toEqual({
      code: 1,
      out: '',
      err: 'postern: hugo has no app password labelled phone (see: postern user password list hugo)\n',
    });
  });

  it('ends open sessions once the credentials change: an app password revoked, the user reset', async () => {
    await addUser('jane', '--network', '127.0.0.1');
    const phone = await appPassword('jane', '--label', 'phone');
    const onPhone = await SmtpClient.connect(t.port, at(1));
    expect(await onPhone.login('jane', phone)).toBe(OK);
    const onLaptop = await SmtpClient.connect(t.port, at(1));
    expect(await onLaptop.login('jane', PASS)).toBe(OK);
    expect((await cli(['user', 'password', 'revoke', 'jane', 'phone', '--reason', 'phone stolen'])).code).toBe(0);
    // The stolen phone's open session must log in again, and cannot.
    expect(await onPhone.cmd('MAIL FROM:<jane@example.com>')).toBe('421 4.7.0 The credentials of this account changed, please log in again');
    await onPhone.quit().catch(() => undefined);
    expect(t.logs.events('mail.refused').at(-1)).toMatchObject({ principal: 'jane', reason: 'CREDENTIALS_CHANGED' });
    // Every session of the user logs in again (a revoke moves the user's epoch), with what it has.
    expect(await onLaptop.cmd('MAIL FROM:<jane@example.com>')).toBe('421 4.7.0 The credentials of this account changed, please log in again');
    await onLaptop.quit().catch(() => undefined);
    expect(await login(1, 'jane', PASS)).toBe(OK);
    expect((await userOf('jane')).status).toBe('active');
  });

  it('lets a trip exception of the user cover an app password with places of its own', async () => {
    await addUser('kurt', '--network', '127.0.0.1');
    const phone = await appPassword('kurt', '--label', 'phone', '--country', 'FR');
    expect((await cli(['user', 'allow', 'kurt', '--country', 'PT', '--for', '7d', '--reason', 'conference'])).code).toBe(0);
    expect(await login(3, 'kurt', phone)).toBe(OK);
    // A permanent binding of the user is not the phone's: Germany stays foreign to it.
    expect(await login(4, 'kurt', phone)).toBe(INVALID);
    expect((await userOf('kurt')).status).toBe('suspended');
  });

  it('keeps app passwords through a reset unless told to revoke them', async () => {
    await addUser('iris', '--network', '127.0.0.1');
    const phone = await appPassword('iris', '--label', 'phone');
    expect((await cli(['user', 'reset', 'iris'])).out).toMatch(/^user iris reset: password changed, was not suspended, 0 open incidents resolved, app passwords kept \(--revoke-app-passwords to revoke them\); new password/);
    expect(await login(1, 'iris', phone)).toBe(OK);
    expect((await cli(['user', 'reset', 'iris', '--revoke-app-passwords'])).out).toMatch(/^user iris reset: password changed, was not suspended, 0 open incidents resolved, 1 app password revoked; new password/);
    expect(await login(1, 'iris', phone)).toBe(INVALID);
    expect(await cli(['user', 'password', 'add', 'iris', '--label', 'phone', '--json'])).toMatchObject({ code: 0 });
    expect(await cli(['user', 'password', 'add', 'iris', '--label', 'PHONE'])).toMatchObject({ code: 1, err: expect.stringMatching(/^postern: iris already has an app password labelled PHONE/) });
  });
});

describe('without the IP database', () => {
  it('answers a country-bound login 454 whatever the password, and suspends nobody', async () => {
    const dir = tempDir();
    const broken = path.join(dir, 'country.csv');
    writeFileSync(broken, 'this is not,an IP database\n');
    const b = await startTestRelay({ geo: { country_db: broken, asn_db: broken } }, { dir });
    try {
      const id = await b.addUser('lena', PASS, { networks: [] });
      await b.relay.store.bindings.add('user', id, 'country', 'DE', b.clock.now());
      for (const pass of [PASS, 'not the password']) {
        const c = await SmtpClient.connect(b.port, at(1));
        expect(await c.login('lena', pass)).toBe('454 4.7.0 Temporary authentication failure, try again later');
        await c.quit();
      }
      expect(await b.relay.store.users.get(id)).toMatchObject({ status: 'active' });
      expect(await b.relay.store.incidents.list({ name: 'lena' })).toEqual([]);
      expect(b.logs.events('auth.busy')).toMatchObject([{ principal: 'lena', geo: 'unavailable' }, { principal: 'lena', geo: 'unavailable' }]);
      expect(b.logs.events('geo.load_failed')).toHaveLength(1);
    } finally {
      await b.stop();
    }
  });
});
