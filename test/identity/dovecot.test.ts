import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { DovecotAuthClient, parseDovecotSocket, type DovecotAuthRequest } from '../../src/identity/dovecot.js';
import { dovecotAvailable, NO_DOVECOT_MESSAGE, startDovecot, waitForLog, type TestDovecot } from '../helpers/dovecot.js';
import { freePort } from '../helpers/net.js';

const ALICE = 'alice-Pa55-horse';
const BOB = 'bob-Tr0ub4dor-3';
const WRONG = 'not-alices-password';
const NEW = 'alice-N3w-staple';
const CLIENT = { rip: '192.0.2.10', lip: '127.0.0.1', secured: true } as const;
const req = (username: string, password: string, more: Partial<DovecotAuthRequest> = {}): DovecotAuthRequest => ({ ...CLIENT, username, password, ...more });
const blob = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');

describe('parseDovecotSocket', () => {
  it.each([
    ['/run/dovecot/auth-client', { path: '/run/dovecot/auth-client' }],
    ['inet:127.0.0.1:12345', { host: '127.0.0.1', port: 12345 }],
    ['inet:[::1]:12345', { host: '::1', port: 12345 }],
    ['inet:auth.example.org:1', { host: 'auth.example.org', port: 1 }],
  ])('accepts %j', (spec, endpoint) => {
    expect(parseDovecotSocket(spec)).toEqual(endpoint);
  });

  it.each(['', 'run/dovecot/auth-client', 'inet:127.0.0.1', 'inet:127.0.0.1:0', 'inet:127.0.0.1:65536', 'inet::1:12345', 'inet:[nothost]:1', 'inet:[::1]', 'tcp:127.0.0.1:12345', 'inet:127.0.0.1:12345 '])(
    'refuses %j with a message naming the value',
    (spec) => {
      expect(() => parseDovecotSocket(spec)).toThrow(`dovecot_socket ${JSON.stringify(spec)} is not a socket: give an absolute path`);
    },
  );
});

/** What Dovecot 2.3 sends after a client's VERSION and CPID. */
const HANDSHAKE = 'VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t4711\nCUID\t1\nCOOKIE\t0123456789abcdef\nDONE\n';

interface Fake {
  socket: string;
  /** Every line clients sent, in order. */
  lines: string[];
  connections: number;
  /** Resolves once a client has sent this line. */
  seen(line: string): Promise<void>;
  close(): Promise<void>;
}

/** A loopback server that sends `greeting` on each connection and lets `answer` reply to each line. */
async function fake(answer: (fields: string[], s: net.Socket) => void = () => {}, greeting: string | null = HANDSHAKE): Promise<Fake> {
  const sockets = new Set<net.Socket>();
  const f = { lines: [] as string[], connections: 0 };
  const waiting: Array<{ line: string; resolve: () => void }> = [];
  const srv = net.createServer((s) => {
    f.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    if (greeting) s.write(greeting);
    createInterface({ input: s }).on('line', (line) => {
      f.lines.push(line);
      for (const w of waiting.filter((x) => x.line === line)) w.resolve();
      answer(line.split('\t'), s);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return Object.assign(f, {
    socket: `inet:127.0.0.1:${(srv.address() as net.AddressInfo).port}`,
    seen: (line: string) => (f.lines.includes(line) ? Promise.resolve() : new Promise<void>((resolve) => waiting.push({ line, resolve }))),
    close: () =>
      new Promise<void>((r) => {
        sockets.forEach((s) => s.destroy());
        srv.close(() => r());
      }),
  });
}

/** The username inside an AUTH line's PLAIN resp. */
const userOf = (fields: string[]) => Buffer.from(fields.find((x) => x.startsWith('resp='))!.slice(5), 'base64').toString().split('\0')[1];

describe('DovecotAuthClient on the wire', () => {
  it('speaks the handshake, then one AUTH line per request with every field Dovecot reads, tab-escaped', async () => {
    const answered = await fake(([cmd, id], s) => {
      if (cmd === 'AUTH') s.write(`OK\t${id}\tuser=alice\x01tx\n`);
    });
    const c = new DovecotAuthClient({ socket: answered.socket, service: 'smtp', connections: 1 });
    const r = await c.authenticate({ username: 'alice', password: 'pa\tss:wörd', rip: '::ffff:192.0.2.9', lip: '127.0.0.1', rport: 40001, lport: 587, secured: true, session: 'a\tb\x01c' });
    expect(r).toEqual({ kind: 'ok', user: 'alice\tx' });
    expect(answered.lines[0]).toBe('VERSION\t1\t2');
    expect(answered.lines[1]).toMatch(/^CPID\t[1-9]\d*$/);
    expect(answered.lines[2]!.split('\t')).toEqual([
      'AUTH',
      '1',
      'PLAIN',
      'service=smtp',
      'secured',
      'no-penalty',
      'lip=127.0.0.1',
      'rip=192.0.2.9',
      'lport=587',
      'rport=40001',
      'session=a\x01tb\x011c',
      `resp=${blob('alice', 'pa\tss:wörd')}`,
    ]);
    // Not secured: no flag; and the next request on this connection has the next id.
    await c.authenticate(req('alice', 'x', { secured: false, session: undefined }));
    expect(answered.lines[3]!.split('\t').slice(0, 7)).toEqual(['AUTH', '2', 'PLAIN', 'service=smtp', 'no-penalty', 'lip=127.0.0.1', 'rip=192.0.2.10']);
    await c.close();
    await answered.close();
  });

  it('tells a temporary failure (temp, code=temp_fail, CONT) from wrong credentials, and takes user= from OK or the given name', async () => {
    const srv = await fake(([cmd, id, ...rest], s) => {
      if (cmd !== 'AUTH') return;
      const reply: Record<string, string> = {
        temp: `FAIL\t${id}\tuser=temp\ttemp`,
        code: `FAIL\t${id}\tcode=temp_fail\treason=LDAP\x01tdown`,
        disabled: `FAIL\t${id}\tuser=disabled\tcode=user_disabled`,
        wrong: `FAIL\t${id}\tuser=wrong\treason=Password mismatch`,
        cont: `CONT\t${id}\t`,
        Alice: `OK\t${id}\tuser=alice`,
        plain: `OK\t${id}`,
        nologin: `OK\t${id}\tuser=nologin\tnologin\treason=Account locked`,
        proxy: `OK\t${id}\tuser=proxy\tproxy\thost=10.0.0.9\tnopassword`,
      };
      s.write(`${reply[userOf(rest)!]}\n`);
    });
    const c = new DovecotAuthClient({ socket: srv.socket, service: 'smtp', connections: 2 });
    const names = ['temp', 'code', 'disabled', 'wrong', 'cont', 'Alice', 'plain', 'nologin', 'proxy'];
    expect(await Promise.all(names.map((n) => c.authenticate(req(n, 'pw'))))).toEqual([
      { kind: 'tempfail', reason: 'dovecot auth temporary failure' },
      { kind: 'tempfail', reason: 'dovecot auth temporary failure: LDAP\tdown' },
      { kind: 'fail', reason: null },
      { kind: 'fail', reason: 'Password mismatch' },
      { kind: 'tempfail', reason: 'dovecot auth asked to continue a PLAIN login' },
      { kind: 'ok', user: 'alice' },
      { kind: 'ok', user: 'plain' },
      // An OK Dovecot's own login processes would refuse: a disabled account, a proxy answer.
      { kind: 'fail', reason: 'dovecot answered OK with nologin: Account locked' },
      { kind: 'fail', reason: 'dovecot answered OK with proxy' },
    ]);
    // A CONT is cancelled, so Dovecot does not keep the request open.
    const contId = srv.lines.find((l) => l.startsWith('AUTH') && userOf(l.split('\t')) === 'cont')!.split('\t')[1];
    await srv.seen(`CANCEL\t${contId}`);
    expect(c.stats).toEqual({ requests: 9, ok: 2, fail: 4, tempfail: 3, timeouts: 0 });
    await c.close();
    await srv.close();
  });

  it('answers tempfail after timeoutMs from a server that never answers, and reconnects for the next request', async () => {
    const mute = await fake(undefined, null);
    const silent = await fake(); // finishes the handshake, then answers nothing
    const timeouts = [mute, silent].map((f) => new DovecotAuthClient({ socket: f.socket, service: 'smtp', timeoutMs: 200 }));
    const t0 = performance.now();
    const twice = (c: DovecotAuthClient) => c.authenticate(req('alice', ALICE)).then(async (first) => [first, await c.authenticate(req('alice', ALICE))]);
    const timedOut = { kind: 'tempfail', reason: 'dovecot auth timed out after 200 ms' };
    expect(await Promise.all(timeouts.map(twice))).toEqual([
      [timedOut, timedOut],
      [timedOut, timedOut],
    ]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(395);
    // A handshake that never finished, or a connection silent since the request, is not used
    // again: each second request had a connection of its own.
    expect([mute.connections, silent.connections]).toEqual([2, 2]);
    expect(timeouts[1]!.stats).toEqual({ requests: 2, ok: 0, fail: 0, tempfail: 2, timeouts: 2 });
    expect(await timeouts[0]!.probe()).toEqual({ ok: false, error: 'dovecot auth handshake timed out after 200 ms' });
    await Promise.all([...timeouts.map((c) => c.close()), mute.close(), silent.close()]);
  });

  it('cancels a request it gave up on and ignores the late answer, while the connection serves the others', async () => {
    const srv = await fake(([cmd, id, ...rest], s) => {
      if (cmd === 'CANCEL') s.write(`OK\t${id}\tuser=slow\n`); // too late
      if (cmd === 'AUTH' && userOf(rest) === 'quick') s.write(`OK\t${id}\tuser=quick\n`);
    });
    const c = new DovecotAuthClient({ socket: srv.socket, service: 'smtp', connections: 1, timeoutMs: 200 });
    expect(await Promise.all([c.authenticate(req('slow', 'pw')), c.authenticate(req('quick', 'pw'))])).toEqual([
      { kind: 'tempfail', reason: 'dovecot auth timed out after 200 ms' },
      { kind: 'ok', user: 'quick' },
    ]);
    await srv.seen('CANCEL\t1');
    expect(await c.authenticate(req('quick', 'pw'))).toEqual({ kind: 'ok', user: 'quick' });
    expect(srv.lines.filter((l) => !l.startsWith('AUTH'))).toEqual(['VERSION\t1\t2', expect.stringMatching(/^CPID\t/), 'CANCEL\t1']);
    expect(srv.connections).toBe(1);
    await c.close();
    await srv.close();
  });

  it('resolves tempfail when the server closes mid-request, sends an endless line, speaks another version or offers no PLAIN', async () => {
    const closes = await fake(([cmd], s) => cmd === 'AUTH' && s.destroy());
    const floods = await fake(([cmd], s) => cmd === 'AUTH' && s.write('x'.repeat(70 * 1024)));
    const v2 = await fake(undefined, 'VERSION\t2\t0\nMECH\tPLAIN\nDONE\n');
    const noPlain = await fake(undefined, 'VERSION\t1\t2\nMECH\tLOGIN\nMECH\tCRAM-MD5\nDONE\n');
    const results = await Promise.all([closes, floods, v2, noPlain].map((f) => new DovecotAuthClient({ socket: f.socket, service: 'smtp' }).authenticate(req('alice', ALICE))));
    expect(results).toEqual([
      { kind: 'tempfail', reason: 'dovecot auth connection closed' },
      { kind: 'tempfail', reason: 'dovecot auth reply line too long' },
      { kind: 'tempfail', reason: 'dovecot auth protocol version 2 is not 1' },
      { kind: 'tempfail', reason: 'dovecot offers no PLAIN mechanism (auth_mechanisms)' },
    ]);
    expect(await new DovecotAuthClient({ socket: noPlain.socket, service: 'smtp' }).probe()).toEqual({ ok: false, error: 'dovecot offers no PLAIN mechanism (auth_mechanisms)' });
    await Promise.all([closes, floods, v2, noPlain].map((f) => f.close()));
  });

  it('refuses names with TAB, LF, CR or NUL and an empty name as fail without connecting', async () => {
    const srv = await fake(([cmd, id], s) => cmd === 'AUTH' && s.write(`OK\t${id}\n`));
    const c = new DovecotAuthClient({ socket: srv.socket, service: 'smtp' });
    for (const name of ['ali\tce', 'alice\nAUTH', 'alice\r', 'al\0ice', '']) {
      expect(await c.authenticate(req(name, ALICE))).toEqual({ kind: 'fail', reason: 'username or password with control characters' });
    }
    expect(srv.connections).toBe(0);
    expect(c.stats).toEqual({ requests: 5, ok: 0, fail: 5, tempfail: 0, timeouts: 0 });
    await c.close();
    await srv.close();
  });

  it('resolves pending requests tempfail on close(), and later ones without connecting', async () => {
    const srv = await fake(undefined, null);
    const c = new DovecotAuthClient({ socket: srv.socket, service: 'smtp' });
    const pending = c.authenticate(req('alice', ALICE));
    await c.close();
    expect(await pending).toEqual({ kind: 'tempfail', reason: 'dovecot auth client closed' });
    expect(await c.authenticate(req('alice', ALICE))).toEqual({ kind: 'tempfail', reason: 'dovecot auth client closed' });
    await srv.close();
  });

  it('probes and authenticates against nothing listening as a quick tempfail', async () => {
    const port = await freePort();
    const c = new DovecotAuthClient({ socket: `inet:127.0.0.1:${port}`, service: 'smtp' });
    expect(await c.probe()).toEqual({ ok: false, error: 'dovecot auth connection: ECONNREFUSED' });
    expect(await c.authenticate(req('alice', ALICE))).toEqual({ kind: 'tempfail', reason: 'dovecot auth connection: ECONNREFUSED' });
    const u = new DovecotAuthClient({ socket: '/nonexistent/postern/auth-client', service: 'smtp' });
    expect(await u.authenticate(req('alice', ALICE))).toEqual({ kind: 'tempfail', reason: 'dovecot auth connection: ENOENT' });
  });
});

if (!dovecotAvailable()) console.warn(NO_DOVECOT_MESSAGE);

describe.skipIf(!dovecotAvailable())('DovecotAuthClient against a real Dovecot', () => {
  let dv: TestDovecot;
  let inet: DovecotAuthClient;
  let unix: DovecotAuthClient;
  beforeAll(async () => {
    dv = await startDovecot({ alice: ALICE, bob: BOB });
    inet = new DovecotAuthClient({ socket: dv.inet, service: 'smtp', connections: 3 });
    unix = new DovecotAuthClient({ socket: dv.socketPath, service: 'smtp' });
  });
  afterAll(async () => {
    await inet?.close();
    await unix?.close();
    await dv?.close();
  });

  it('accepts the directory password over TCP and over the unix socket, with the name as Dovecot canonicalises it', async () => {
    expect(await Promise.all([inet.authenticate(req('alice', ALICE)), unix.authenticate(req('alice', ALICE)), inet.authenticate(req('Alice', ALICE))])).toEqual([
      { kind: 'ok', user: 'alice' },
      { kind: 'ok', user: 'alice' },
      // auth_username_format = %Lu (Dovecot's default) lowercases the name.
      { kind: 'ok', user: 'alice' },
    ]);
  });

  it('refuses a wrong password and an unknown user alike', async () => {
    expect(await Promise.all([inet.authenticate(req('alice', WRONG)), unix.authenticate(req('mallory', ALICE)), inet.authenticate(req('bob', ALICE))])).toEqual([
      { kind: 'fail', reason: null },
      { kind: 'fail', reason: null },
      { kind: 'fail', reason: null },
    ]);
  });

  it('passes the service, the addresses, the ports, secured and the session to Dovecot', async () => {
    await inet.authenticate(req('alice', ALICE, { rip: '192.0.2.44', lport: 587, rport: 40000, session: 'sess-44' }));
    await inet.authenticate(req('bob', BOB, { rip: '::ffff:192.0.2.45', secured: false }));
    const log = await waitForLog(dv.logFile, (l) => l.includes('rip=192.0.2.45'));
    const seen = log
      .split('\n')
      .filter((l) => /client in: AUTH\t.*\trip=192\.0\.2\.4[45]\t/.test(l))
      .map((l) => l.slice(l.indexOf('AUTH\t')).split('\t').slice(2));
    expect(seen).toEqual([
      ['PLAIN', 'service=smtp', 'secured', 'no-penalty', 'lip=127.0.0.1', 'rip=192.0.2.44', 'lport=587', 'rport=40000', 'session=sess-44', 'resp=<hidden>'],
      ['PLAIN', 'service=smtp', 'no-penalty', 'lip=127.0.0.1', 'rip=192.0.2.45', 'resp=<hidden>'],
    ]);
    expect(log).toContain('passwd-file(alice,192.0.2.44,<sess-44>)');
  });

  it('answers 50 logins at once right over a pool of 3 connections', async () => {
    const c = new DovecotAuthClient({ socket: dv.inet, service: 'smtp', connections: 3 });
    const before = (await readFile(dv.logFile, 'utf8')).split('auth client connected').length;
    const asks = Array.from({ length: 50 }, (_, i) => (i % 5 === 0 ? ['alice', WRONG] : i % 5 === 1 ? ['bob', BOB] : ['alice', ALICE]) as [string, string]);
    const results = await Promise.all(asks.map(([u, p]) => c.authenticate(req(u, p))));
    expect(results).toEqual(asks.map(([u, p]) => (p === WRONG ? { kind: 'fail', reason: null } : { kind: 'ok', user: u })));
    expect(c.stats).toEqual({ requests: 50, ok: 40, fail: 10, tempfail: 0, timeouts: 0 });
    const log = await waitForLog(dv.logFile, (l) => l.split('auth client connected').length >= before + 3);
    expect(log.split('auth client connected').length - before).toBe(3);
    await c.close();
  });

  it('lets doveadm auth test log in for another service', async () => {
    const [ok, wrong] = await Promise.all([dv.authTest('alice', ALICE), dv.authTest('alice', WRONG)]);
    expect(ok).toEqual({ ok: true, output: expect.stringContaining('passdb: alice auth succeeded') });
    expect(wrong).toEqual({ ok: false, output: expect.stringContaining('passdb: alice auth failed') });
    await waitForLog(dv.logFile, (l) => /client in: AUTH\t\d+\tPLAIN\tservice=imap\t/.test(l));
  });

  it('probes the handshake and lists the mechanisms', async () => {
    expect(await inet.probe()).toEqual({ ok: true, mechanisms: ['PLAIN', 'LOGIN'] });
    expect(await unix.probe()).toEqual({ ok: true, mechanisms: ['PLAIN', 'LOGIN'] });
  });

  it('answers tempfail at once while Dovecot is stopped, and logs in again with the same client once it is back', async () => {
    expect(await inet.authenticate(req('alice', ALICE))).toEqual({ kind: 'ok', user: 'alice' });
    await dv.stop();
    const t0 = performance.now();
    const down = await Promise.all([inet.authenticate(req('alice', ALICE)), inet.authenticate(req('alice', ALICE)), unix.authenticate(req('alice', ALICE))]);
    // Well before the 5 s timeout: a dead Dovecot is noticed, not waited for.
    expect(performance.now() - t0).toBeLessThan(1000);
    for (const r of down) expect(r).toEqual({ kind: 'tempfail', reason: expect.stringMatching(/^dovecot auth connection( closed|: ECONNREFUSED|: ECONNRESET|: EPIPE|: ENOENT)$/) });
    expect(await inet.probe()).toEqual({ ok: false, error: 'dovecot auth connection: ECONNREFUSED' });
    await dv.start();
    expect(await Promise.all([inet.authenticate(req('alice', ALICE)), unix.authenticate(req('alice', ALICE))])).toEqual([
      { kind: 'ok', user: 'alice' },
      { kind: 'ok', user: 'alice' },
    ]);
  });

  it('sees a password changed in the passwd-file from the next login: the old one fails, the new one works', async () => {
    await Promise.all([dv.setPassword('alice', NEW), dv.removeUser('bob')]);
    expect(await Promise.all([inet.authenticate(req('alice', ALICE)), inet.authenticate(req('alice', NEW)), inet.authenticate(req('bob', BOB))])).toEqual([
      { kind: 'fail', reason: null },
      { kind: 'ok', user: 'alice' },
      { kind: 'fail', reason: null },
    ]);
  });

  it('leaves no password in Dovecot’s log, only names and hidden responses', async () => {
    const log = await readFile(dv.logFile, 'utf8');
    expect(log).toContain('passwd-file(alice,192.0.2.10): Password mismatch');
    expect(log).toContain('resp=<hidden>');
    for (const secret of [ALICE, BOB, WRONG, NEW, blob('alice', ALICE), blob('alice', WRONG)]) expect(log).not.toContain(secret);
  });
});
