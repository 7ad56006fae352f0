import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

/**
 * The classic open-relay battery (the address forms relay testers have tried since the
 * 1990s) against clients that have not authenticated: before TLS, after STARTTLS and on the
 * implicit-TLS port, from an address inside a user's networks (127.0.0.1) and from a foreign
 * one (127.0.0.2). Every attempt is refused and nothing reaches the queue.
 */

const PASS = 'correct horse battery staple';
const TLS_FIRST = '530 5.7.0 Must issue a STARTTLS command first';
const AUTH_FIRST = '530 5.7.0 Authentication required';
const BAD_SENDER = '501 5.1.7 Error: Bad sender address syntax';
const BAD_RCPT = '501 5.1.3 Error: Bad recipient address syntax';
const NEED_MAIL = '503 5.5.1 Error: need MAIL command';
const NEED_RCPT = '503 5.5.1 Error: need RCPT command';
const NOT_BOUND = (a: string) => `550 5.7.1 Recipient address not allowed for this device: <${a}>`;

let t: TestRelay;
beforeAll(async () => {
  t = await startTestRelay({
    limits: { auth_failure_delay_ms: 0 },
  });
  await t.addUser('alice', PASS);
});
afterAll(async () => {
  try {
    expect(await t.relay.store.queue.count()).toBe(0);
  } finally {
    await t.stop();
  }
});

// [what it tries, MAIL FROM, RCPT TO, is MAIL syntactically valid, is RCPT syntactically valid]
const FORMS: Array<[string, string, string, boolean, boolean]> = [
  ['a foreign sender to a foreign recipient', '<spammer@example.net>', '<victim@example.org>', true, true],
  ['our user as the sender to a foreign recipient', '<alice@example.com>', '<victim@example.org>', true, true],
  ['the null sender', '<>', '<victim@example.org>', true, true],
  ['our domain to our domain', '<alice@example.com>', '<bob@example.com>', true, true],
  ['a source route through us', '<alice@example.com>', '<@smtp.test.example:victim@example.org>', true, true],
  ['a multi-hop source route', '<alice@example.com>', '<@a.example,@b.example:victim@example.org>', true, true],
  ['a percent hack through our domain', '<alice@example.com>', '<victim%example.org@example.com>', true, true],
  ['a percent hack through our host name', '<alice@example.com>', '<victim%example.org@smtp.test.example>', true, true],
  ['a bang path through our domain', '<alice@example.com>', '<example.org!victim@example.com>', true, true],
  ['a bang path without a domain', '<alice@example.com>', '<example.org!victim>', true, false],
  ['an IPv4 literal', '<alice@example.com>', '<victim@[192.0.2.1]>', true, true],
  ['an IPv6 literal', '<alice@example.com>', '<victim@[IPv6:2001:db8::1]>', true, true],
  ['our own address literal', '<alice@example.com>', '<victim@[127.0.0.1]>', true, true],
  ['a quoted local part holding the target', '<alice@example.com>', '<"victim@example.org"@example.com>', true, false],
  ['a quoted percent hack', '<alice@example.com>', '<"victim%example.org"@example.com>', true, true],
  ['two at signs', '<alice@example.com>', '<victim@example.org@example.com>', true, false],
  ['the domainless postmaster', '<alice@example.com>', '<postmaster>', true, true],
  ['a recipient without angle brackets', '<alice@example.com>', 'victim@example.org', true, false],
  ['a sender with a source route', '<@example.com:alice@example.com>', '<victim@example.org>', true, true],
  ['a sender with an IP literal', '<alice@[127.0.0.1]>', '<victim@example.org>', true, true],
  ['a quoted sender', '<"alice"@example.com>', '<victim@example.org>', true, true],
  ['a sender without angle brackets', 'alice@example.com', '<victim@example.org>', false, true],
];

type Listener = 'plain' | 'starttls' | 'tls';
const LISTENERS: Listener[] = ['plain', 'starttls', 'tls'];
const CLIENTS: Array<[string, string]> = [
  ['an allowed network', '127.0.0.1'],
  ['a foreign address', '127.0.0.2'],
];

async function open(listener: Listener, localAddress: string): Promise<SmtpClient> {
  const c = await SmtpClient.connect(listener === 'tls' ? t.tlsPort : t.port, { tls: listener === 'tls', localAddress });
  await c.cmd('EHLO relaytest.example');
  if (listener === 'starttls') {
    expect(await c.starttls()).toBe('220 2.0.0 Ready to start TLS');
    await c.cmd('EHLO relaytest.example');
  }
  return c;
}

describe.concurrent('unauthenticated relay attempts', () => {
  const matrix = LISTENERS.flatMap((l) => CLIENTS.map(([who, ip]) => [l, who, ip] as const));
  it.each(matrix)('refuses every form on the %s listener from %s', async (listener, _who, ip) => {
    const c = await open(listener, ip);
    const refusal = listener === 'plain' ? TLS_FIRST : AUTH_FIRST;
    for (const [what, from, to, fromOk, toOk] of FORMS) {
      const got = [await c.cmd(`MAIL FROM:${from}`), await c.cmd(`RCPT TO:${to}`), await c.cmd('DATA')];
      expect(got, what).toEqual([fromOk ? refusal : BAD_SENDER, toOk ? NEED_MAIL : BAD_RCPT, NEED_RCPT]);
      expect(await c.cmd('RSET'), what).toBe('250 2.0.0 Flushed');
    }
    await c.quit();
  });

  it.each(matrix)('refuses a blind pipelined relay attempt on the %s listener from %s', async (listener, _who, ip) => {
    const c = await open(listener, ip);
    // A relay tester that never reads: the envelope, DATA and the message in one write. The
    // message lines then arrive as commands, and unknown ones end the session.
    c.write('MAIL FROM:<alice@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: relay test\r\n\r\nrelayed\r\n.\r\nQUIT\r\n');
    const replies: string[] = [];
    for (let i = 0; i < 8; i++) replies.push(await c.read());
    expect(replies).toEqual([
      listener === 'plain' ? TLS_FIRST : AUTH_FIRST,
      NEED_MAIL,
      NEED_RCPT,
      '500 5.5.2 Error: command not recognized',
      '500 5.5.2 Error: command not recognized',
      '500 5.5.2 Error: command not recognized',
      '500 5.5.2 Error: command not recognized',
      '221 2.0.0 Bye',
    ]);
    c.destroy();
  });

  it.each(CLIENTS)('refuses MAIL after a failed AUTH from %s', async (_who, ip) => {
    const c = await open('starttls', ip);
    expect(await c.authPlain('alice', 'not the password')).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe(AUTH_FIRST);
    expect(await c.cmd('RCPT TO:<victim@example.org>')).toBe(NEED_MAIL);
    await c.quit();
  });
});

describe.concurrent('devices', () => {
  let nextIp = 10;
  /** A device on its own loopback address, bound to scanner@example.com and, if given, recipients. */
  async function addDevice(recipients: string[]): Promise<{ name: string; ip: string }> {
    const ip = `127.0.0.${nextIp++}`;
    const name = `printer-${ip.split('.')[3]}`;
    const now = t.clock.now();
    const d = await t.relay.store.devices.add(name, false, now);
    await t.relay.store.bindings.add('device', d.id, 'network', `${ip}/32`, now);
    await t.relay.store.bindings.add('device', d.id, 'sender', 'scanner@example.com', now);
    for (const r of recipients) await t.relay.store.bindings.add('device', d.id, 'recipient', r, now);
    return { name, ip };
  }

  it("does not lend a device's standing to any other client address", async () => {
    const dev = await addDevice(['@example.com']);
    // The loopback a user may log in from, a foreign address, and a neighbour of the devices
    // (they start at .10) that holds no device.
    for (const ip of ['127.0.0.1', '127.0.0.2', '127.0.0.9']) {
      for (const listener of LISTENERS) {
        const c = await open(listener, ip);
        expect(await c.cmd('MAIL FROM:<scanner@example.com>'), `${listener} ${ip}`).toBe(listener === 'plain' ? TLS_FIRST : AUTH_FIRST);
        expect(await c.cmd('RCPT TO:<ops@example.com>')).toBe(NEED_MAIL);
        await c.quit();
      }
    }
    expect((await t.relay.store.devices.find(dev.name))!.status).toBe('active');
  });

  // A device bound to @example.com recipients: each form that routes elsewhere is refused
  // (and, being a compromise signal, suspends the device, so each case has its own device).
  const escapes: Array<[string, string, string]> = [
    ['a foreign recipient', '<victim@example.org>', NOT_BOUND('victim@example.org')],
    ['a source route through our domain', '<@example.com:victim@example.org>', NOT_BOUND('victim@example.org')],
    ['a percent hack through our domain', '<victim%example.org@example.com>', NOT_BOUND('victim%example.org@example.com')],
    ['a bang path through our domain', '<example.org!victim@example.com>', NOT_BOUND('example.org!victim@example.com')],
    ['an IP literal', '<victim@[192.0.2.1]>', NOT_BOUND('victim@[192.0.2.1]')],
    ['a subdomain', '<victim@evil.example.com>', NOT_BOUND('victim@evil.example.com')],
    ['a look-alike domain', '<victim@example.com.example.org>', NOT_BOUND('victim@example.com.example.org')],
    ['a quoted percent hack', '<"victim%example.org"@example.com>', NOT_BOUND('"victim%example.org"@example.com')],
    ['the domainless postmaster', '<postmaster>', NOT_BOUND('postmaster')],
  ];
  it.each(escapes)('refuses %s from a device bound to its recipients', async (_what, rcpt, expected) => {
    const dev = await addDevice(['@example.com']);
    const c = await SmtpClient.connect(t.port, { localAddress: dev.ip });
    await c.cmd('EHLO printer');
    expect(await c.cmd('MAIL FROM:<scanner@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd(`RCPT TO:${rcpt}`)).toBe(expected);
    expect(await c.cmd('DATA')).toBe(NEED_RCPT);
    await c.quit();
    expect((await t.relay.store.devices.find(dev.name))!.status).toBe('suspended');
  });

  it('sends to its own recipients, and to any only when bound to none', async () => {
    const bound = await addDevice(['@example.com', 'ops%night@example.net']);
    const free = await addDevice([]);
    for (const [dev, rcpts] of [[bound, ['<ops@example.com>', '<ops%night@example.net>']], [free, ['<anyone@example.org>']]] as const) {
      const c = await SmtpClient.connect(t.port, { localAddress: dev.ip });
      await c.cmd('EHLO printer');
      expect(await c.cmd('MAIL FROM:<scanner@example.com>')).toBe('250 2.1.0 Accepted');
      for (const r of rcpts) expect(await c.cmd(`RCPT TO:${r}`), r).toBe('250 2.1.5 Accepted');
      await c.quit();
    }
  });

  it('accepts nothing more in the transaction that suspended the device', async () => {
    const dev = await addDevice(['@example.com']);
    const c = await SmtpClient.connect(t.port, { localAddress: dev.ip });
    await c.cmd('EHLO printer');
    expect(await c.cmd('MAIL FROM:<scanner@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<ops@example.com>')).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('RCPT TO:<victim@example.org>')).toBe(NOT_BOUND('victim@example.org'));
    // The recipient accepted before the refusal is no way through: the device is suspended now.
    expect(await c.cmd('DATA')).toBe('354 End data with <CR><LF>.<CR><LF>');
    c.write('Subject: scan\r\n\r\nscan\r\n.\r\n');
    expect(await c.last()).toBe('550 5.7.1 This account is suspended, please contact your helpdesk');
    await c.quit();
  });

  it('refuses every sender but its own, even from a device free to write to anyone', async () => {
    const senders = ['<>', '<alice@example.com>', '<@example.com:spammer@example.net>', '<scanner%example.net@example.com>', '<"scanner"@example.com>'];
    for (const from of senders) {
      const dev = await addDevice([]);
      const c = await SmtpClient.connect(t.port, { localAddress: dev.ip });
      await c.cmd('EHLO printer');
      expect(await c.cmd(`MAIL FROM:${from}`), from).toMatch(/^553 5\.7\.1 /);
      expect(await c.cmd('RCPT TO:<victim@example.org>')).toBe(NEED_MAIL);
      await c.quit();
    }
  });
});

describe('a suspension during a transaction', () => {
  it('refuses the message of a user suspended between RCPT and the end of DATA', async () => {
    const id = await t.addUser('erin', PASS);
    const c = await SmtpClient.connect(t.port);
    expect(await c.login('erin', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.cmd('MAIL FROM:<erin@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<bob@example.org>')).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('DATA')).toBe('354 End data with <CR><LF>.<CR><LF>');
    // The helpdesk suspends the account (or another session trips a signal) mid-message.
    await t.relay.store.users.suspend(id, 'test', t.clock.now());
    c.write('Subject: late\r\n\r\nlate\r\n.\r\n');
    expect(await c.last()).toBe('550 5.7.1 This account is suspended, please contact your helpdesk');
    await c.quit();
  });
});
