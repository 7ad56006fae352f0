import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

/**
 * Hostile input over real sockets. Every case asserts the exact reply lines, then that the
 * server still serves the next client (a fresh EHLO, STARTTLS, AUTH and message), and at the
 * end the queue holds exactly the messages the tests meant to queue. Each suite runs its cases
 * concurrently (the greeting was held back 100 ms when they were written; see greeting.test.ts).
 */

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;
const MAX_BYTES = 4096;
const LINE_TOO_LONG = '421 4.7.0 Line too long, closing connection';
const BARE = '550 5.6.0 Message refused: bare CR or LF in message data, lines must end with CRLF';
const NUL = '550 5.6.0 Message refused: NUL character in message data';

let t: TestRelay;
/** How many messages the tests so far meant to queue; checked after every test. */
let queued = 0;
/** Clients that stall mid-line and mid-DATA, started first so their idle timeout runs meanwhile. */
let stalled: Promise<string[]>;

beforeAll(async () => {
  t = await startTestRelay({
    // 5 s is the schema's minimum idle timeout; the stall test waits for it once.
    server: { idle_timeout_seconds: 5 },
    submission: { max_recipients: 100, max_message_bytes: MAX_BYTES },
    // Rate limits and the failed-AUTH brake are tested elsewhere; here they would only slow
    // the suite down or lock 127.0.0.1 out after the malformed AUTH cases.
    limits: { messages_per_hour: 1_000_000, recipients_per_hour: 10_000_000, recipients_per_day: 10_000_000, auth_failure_delay_ms: 0, auth_max_failures_per_ip: 100_000, auth_max_failures_per_user_ip: 100_000 },
  });
  await t.addUser('alice', PASS);
  stalled = stallingClients();
  // Awaited by the last test; this only keeps an early failure from counting as unhandled.
  stalled.catch(() => undefined);
});
/** Client mail in the queue; Postern's own notices (a suspension tells the user) have no principal. */
const clientMail = async () => (await t.relay.store.queue.list()).filter((m) => m.principal !== null).length;
afterAll(async () => {
  try {
    expect(await clientMail()).toBe(queued);
  } finally {
    await t.stop();
  }
});

async function plain(): Promise<SmtpClient> {
  const c = await SmtpClient.connect(t.port);
  await c.cmd('EHLO client.example');
  return c;
}

async function secure(): Promise<SmtpClient> {
  const c = await SmtpClient.connect(t.tlsPort, { tls: true });
  await c.cmd('EHLO client.example');
  return c;
}

async function authed(): Promise<SmtpClient> {
  const c = await SmtpClient.connect(t.port);
  expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  return c;
}

/** A fresh client completes EHLO, STARTTLS, AUTH and a message: the server survived. */
async function stillServes(): Promise<void> {
  const c = await authed();
  expect(await c.send('alice@example.com', ['bob@example.org'], MSG)).toMatch(QUEUED);
  queued++;
  await c.quit();
}

type Session = 'plain' | 'tls' | 'authed';
/** Raw bytes to write, then the exact reply lines expected for them ('' = the server closed). */
type Step = [send: string | Buffer, replies: string[]];

async function run(session: Session, steps: Step[]): Promise<void> {
  const c = session === 'plain' ? await plain() : session === 'tls' ? await secure() : await authed();
  for (const [send, replies] of steps) {
    c.write(send);
    const got: string[] = [];
    for (let i = 0; i < replies.length; i++) got.push(await c.read());
    expect(got).toEqual(replies);
  }
  c.destroy();
  await stillServes();
}

const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');

describe.concurrent('overlong lines, NUL bytes and invalid UTF-8 in commands', () => {
  const cases: Array<[string, Session, Step[]]> = [
    ['a 20 KB command line is refused with 421 4.7.0 and the connection closed', 'plain', [[`NOOP ${'x'.repeat(20_000)}\r\n`, [LINE_TOO_LONG, '']]]],
    ['a 20 KB line without any newline is refused the same way', 'plain', [[`MAIL FROM:<${'x'.repeat(20_000)}`, [LINE_TOO_LONG, '']]]],
    ['a 10 KB line under the parser limit is answered normally', 'plain', [[`NOOP ${'x'.repeat(10_000)}\r\n`, ['250 2.0.0 OK']]]],
    ['a 1 KB sender address is a syntax error', 'authed', [[`MAIL FROM:<${'a'.repeat(1000)}@example.com>\r\n`, ['501 5.1.7 Error: Bad sender address syntax']]]],
    ['a NUL inside a command name makes it unknown', 'plain', [['NO\0OP\r\n', ['500 5.5.2 Error: command not recognized']]]],
    ['a NUL inside an address is a syntax error', 'authed', [['MAIL FROM:<ali\0ce@example.com>\r\n', ['501 5.1.7 Error: Bad sender address syntax']]]],
    ['a NUL in the EHLO name is refused (RFC 2034: no enhanced code on EHLO replies)', 'plain', [['EHLO a\0b\r\n', ['501 Error: Bad hostname syntax']]]],
    ['a bare CR does not split a command: the whole line is one unknown command', 'plain', [['NOOP\rRSET\r\n', ['500 5.5.2 Error: command not recognized']]]],
    ['invalid UTF-8 in a command name makes it unknown', 'plain', [[Buffer.from('4e4fff4f500d0a', 'hex'), ['500 5.5.2 Error: command not recognized']]]],
    // smtp-server decodes the line as UTF-8, so the bad byte becomes U+FFFD; not ours to mend.
    // It decodes to U+FFFD, a character no mailbox is written with: refused, never relayed.
    ['invalid UTF-8 in a recipient is refused as not in normal form', 'authed', [[Buffer.concat([Buffer.from('MAIL FROM:<alice@example.com> SMTPUTF8\r\nRCPT TO:<a'), Buffer.from([0xc3, 0x28]), Buffer.from('@example.org>\r\n')]), ['250 2.1.0 Accepted', '553 5.1.3 Recipient address is not in normal form: write it without full-width, invisible or compatibility characters']]]],
    ['ten unknown commands end the session with 421 4.7.0', 'plain', [['XYZZY\r\n'.repeat(10), [...Array<string>(9).fill('500 5.5.2 Error: command not recognized'), '421 4.7.0 Too many errors, closing connection', '']]]],
    ['an HTTP request ends the session with 421 4.7.0', 'plain', [['GET / HTTP/1.1\r\n', ['421 4.7.0 HTTP requests not allowed, closing connection', '']]]],
    ["smtp-server's joke commands are unknown commands", 'plain', [['WIZ x\r\nSHELL\r\nKILL\r\n', Array<string>(3).fill('500 5.5.2 Error: command not recognized')]]],
  ];
  it.each(cases)('%s', async (_name, session, steps) => run(session, steps));

  it('writes an invalid UTF-8 EHLO name into the Received field as printable ASCII only', async () => {
    const c = await SmtpClient.connect(t.port);
    c.write(Buffer.from('EHLO \xff\xfe.example\r\n', 'latin1'));
    expect((await c.read()).split('\n')[0]).toBe('250-smtp.test.example Hello [127.0.0.1]');
    await c.starttls();
    c.write(Buffer.from('EHLO \xc3\xa9\xff.example\r\n', 'latin1'));
    await c.read();
    expect(await c.authPlain('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    const id = QUEUED.exec(await c.send('alice@example.com', ['bob@example.org'], MSG))![1]!;
    queued++;
    await c.quit();
    const body = (await t.relay.store.queue.body(id))!;
    expect(body.toString('latin1')).toMatch(/^Received: from \?\?\.example \(\[127\.0\.0\.1\]\)\r\n/);
    await stillServes();
  });
});

describe.concurrent('AUTH abuse', () => {
  const cases: Array<[string, Session, Step[]]> = [
    ['a 1 MB AUTH PLAIN blob is refused as an overlong line', 'tls', [[`AUTH PLAIN ${'A'.repeat(1024 * 1024)}\r\n`, [LINE_TOO_LONG, '']]]],
    ['a 1 MB AUTH LOGIN answer is refused as an overlong line', 'tls', [['AUTH LOGIN\r\n', ['334 VXNlcm5hbWU6']], [`${'A'.repeat(1024 * 1024)}\r\n`, [LINE_TOO_LONG, '']]]],
    ['a 1 MB AUTH blob before TLS is refused as an overlong line', 'plain', [[`AUTH PLAIN ${'A'.repeat(1024 * 1024)}\r\n`, [LINE_TOO_LONG, '']]]],
    ['AUTH PLAIN with characters outside base64 is invalid userdata', 'tls', [['AUTH PLAIN !!!!\r\n', ['501 5.5.4 Error: invalid userdata']]]],
    ['AUTH PLAIN without the two NULs is invalid userdata', 'tls', [[`AUTH PLAIN ${b64('alice')}\r\n`, ['501 5.5.4 Error: invalid userdata']]]],
    ['AUTH PLAIN with a control character in the name is invalid userdata', 'tls', [[`AUTH PLAIN ${b64('\0al\x01ice\0pw')}\r\n`, ['501 5.5.4 Error: invalid userdata']]]],
    ['AUTH PLAIN with truncated base64 fails like a wrong password', 'tls', [[`AUTH PLAIN ${b64(`\0alice\0${PASS}`).slice(0, -3)}\r\n`, ['535 5.7.8 Authentication credentials invalid']]]],
    ['AUTH PLAIN with two arguments is a syntax error', 'tls', [['AUTH PLAIN a b\r\n', ['501 5.5.4 Error: syntax: AUTH PLAIN token']]]],
    ['AUTH LOGIN with a name that is not base64 has no username', 'tls', [['AUTH LOGIN !!!\r\n', ['501 5.5.4 Error: missing username']]]],
    ['AUTH LOGIN with a password that is not base64 fails like a wrong password', 'tls', [['AUTH LOGIN\r\n', ['334 VXNlcm5hbWU6']], [`${b64('alice')}\r\n`, ['334 UGFzc3dvcmQ6']], ['%%%%\r\n', ['535 5.7.8 Authentication credentials invalid']]]],
    ['a client may abort AUTH with *', 'tls', [['AUTH PLAIN\r\n', ['334 ']], ['*\r\n', ['501 5.5.4 Authentication aborted']]]],
    ['an unoffered mechanism is refused', 'tls', [['AUTH CRAM-MD5\r\nAUTH XOAUTH2 x\r\n', ['504 5.5.4 Error: Unrecognized authentication type', '504 5.5.4 Error: Unrecognized authentication type']]]],
    ['AUTH before TLS is refused whatever the blob', 'plain', [[`AUTH PLAIN ${b64(`\0alice\0${PASS}`)}\r\nAUTH LOGIN\r\n`, ['530 5.7.0 Must issue a STARTTLS command first', '530 5.7.0 Must issue a STARTTLS command first']]]],
    ['a second AUTH is refused', 'authed', [[`AUTH PLAIN ${b64(`\0alice\0${PASS}`)}\r\n`, ['503 5.5.1 Error: No identity changes permitted']]]],
  ];
  it.each(cases)('%s', async (_name, session, steps) => run(session, steps));
});

describe.concurrent('command order and floods', () => {
  const cases: Array<[string, Session, Step[]]> = [
    ['DATA before MAIL is a bad sequence', 'authed', [['DATA\r\n', ['503 5.5.1 Error: need RCPT command']]]],
    ['RCPT before MAIL is a bad sequence', 'authed', [['RCPT TO:<bob@example.org>\r\n', ['503 5.5.1 Error: need MAIL command']]]],
    ['DATA before RCPT is a bad sequence', 'authed', [['MAIL FROM:<alice@example.com>\r\nDATA\r\n', ['250 2.1.0 Accepted', '503 5.5.1 Error: need RCPT command']]]],
    ['a second MAIL is refused as nested', 'authed', [['MAIL FROM:<alice@example.com>\r\nMAIL FROM:<alice@example.com>\r\n', ['250 2.1.0 Accepted', '503 5.5.1 Error: nested MAIL command']]]],
    ['STARTTLS on the implicit-TLS port is refused', 'tls', [['STARTTLS\r\n', ['503 5.5.1 Error: TLS already active']]]],
    ['STARTTLS with an argument is a syntax error', 'plain', [['STARTTLS now\r\n', ['501 5.5.4 Error: syntax: STARTTLS']]]],
    ['a second STARTTLS after the upgrade is refused', 'authed', [['STARTTLS\r\n', ['503 5.5.1 Error: TLS already active']]]],
    ['5,000 pipelined NOOPs are all answered', 'plain', [['NOOP\r\n'.repeat(5000), Array<string>(5000).fill('250 2.0.0 OK')]]],
    ['1,000 pipelined MAIL commands before TLS are all refused', 'plain', [['MAIL FROM:<alice@example.com>\r\n'.repeat(1000), Array<string>(1000).fill('530 5.7.0 Must issue a STARTTLS command first')]]],
  ];
  it.each(cases)('%s', async (_name, session, steps) => run(session, steps));

  it('refuses MAIL, RCPT and DATA before EHLO', async () => {
    const c = await SmtpClient.connect(t.port);
    for (const cmd of ['MAIL FROM:<alice@example.com>', 'RCPT TO:<bob@example.org>', 'DATA']) {
      expect(await c.cmd(cmd)).toBe('503 5.5.1 Error: send HELO/EHLO first');
    }
    c.destroy();
    await stillServes();
  });

  it('refuses STARTTLS a second time on the STARTTLS port, before and after AUTH', async () => {
    const c = await SmtpClient.connect(t.port);
    await c.cmd('EHLO client.example');
    expect(await c.starttls()).toBe('220 2.0.0 Ready to start TLS');
    expect(await c.cmd('STARTTLS')).toBe('503 5.5.1 Error: TLS already active');
    await c.cmd('EHLO client.example');
    expect(await c.authPlain('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.cmd('STARTTLS')).toBe('503 5.5.1 Error: TLS already active');
    c.destroy();
    await stillServes();
  });
});

describe.concurrent('SMTP smuggling and message data', () => {
  // The cases run side by side, so each one checks that nothing was queued for its own
  // recipient, and the suite checks that nothing reached the victim once they are all done.
  // The total of client mail is checked once, when the file ends: the concurrent cases of the
  // next suite may already be submitting (counted only after their 250) while this one ends,
  // which made a total here fail now and then (52 queued, 51 counted, in a CI run).
  afterAll(async () => {
    expect((await t.relay.store.queue.list()).filter((m) => m.rcptTo.includes('victim@example.net'))).toEqual([]);
  });

  // Each body would, at a receiver that ends DATA at a bare-LF or bare-CR dot, end the
  // message early and run the rest as a second transaction under our authenticated name.
  const smuggled: Array<[string, string]> = [
    ['\\n.\\n', 'Subject: a\r\n\r\nx\n.\nMAIL FROM:<ceo@example.com>\nRCPT TO:<victim@example.net>\nDATA\nSubject: smuggled\n\nevil\n'],
    ['\\r.\\n', 'Subject: a\r\n\r\nx\r.\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n'],
    ['\\n.\\r\\n', 'Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n'],
    ['\\r\\n.\\n', 'Subject: a\r\n\r\nx\r\n.\nMAIL FROM:<ceo@example.com>\r\n'],
    ['\\r\\n.\\r', 'Subject: a\r\n\r\nx\r\n.\rMAIL FROM:<ceo@example.com>\r\n'],
  ];
  it.each(smuggled)('refuses a message smuggled with %s and queues nothing', async (name, body) => {
    const rcpt = `smuggle-${smuggled.findIndex(([n]) => n === name)}@example.org`;
    const c = await authed();
    expect(await c.send('alice@example.com', [rcpt], body)).toBe(BARE);
    // The session is still in step: the next command is answered as a command.
    expect(await c.cmd('NOOP')).toBe('250 2.0.0 OK');
    c.destroy();
    expect((await t.relay.store.queue.list()).filter((m) => m.rcptTo.includes(rcpt) || m.rcptTo.includes('victim@example.net'))).toEqual([]);
    await stillServes();
  });

  it('ends DATA at the first CRLF.CRLF only and checks what follows like any command', async () => {
    // Its own user: the foreign sender below suspends the account.
    await t.addUser('dave', PASS);
    const c = await SmtpClient.connect(t.port);
    expect(await c.login('dave', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<bob@example.org>')).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('DATA')).toBe('354 End data with <CR><LF>.<CR><LF>');
    // A correct smuggle to us is just pipelining: the second transaction is checked like any other.
    c.write('Subject: one\r\n\r\nx\r\n.\r\nMAIL FROM:<ceo@evil.example>\r\n');
    expect(await c.last()).toMatch(QUEUED);
    queued++;
    expect(await c.last()).toBe('553 5.7.1 Sender address not allowed for this account: <ceo@evil.example>');
    c.destroy();
    expect((await t.relay.store.users.find('dave'))!.status).toBe('suspended');
    await stillServes();
  });

  it('refuses a NUL byte in the message data', async () => {
    const c = await authed();
    expect(await c.send('alice@example.com', ['bob@example.org'], 'Subject: a\r\n\r\nnul\0byte\r\n')).toBe(NUL);
    expect(await c.send('alice@example.com', ['bob@example.org'], 'Subject: a\0b\r\n\r\nbody\r\n')).toBe(NUL);
    c.destroy();
    await stillServes();
  });

  it('keeps invalid UTF-8 in the data byte for byte (8BITMIME promises 8-bit, not UTF-8)', async () => {
    const c = await authed();
    const body = Buffer.concat([Buffer.from('Subject: \xff\xfe\r\n\r\n', 'latin1'), Buffer.from([0xc3, 0x28, 0xe2, 0x82, 0x0d, 0x0a])]);
    const id = QUEUED.exec(await c.send('alice@example.com', ['bob@example.org'], body))![1]!;
    queued++;
    c.destroy();
    const stored = (await t.relay.store.queue.body(id))!;
    expect(stored.indexOf(body.subarray(0, 13))).toBeGreaterThan(0);
    expect(stored.subarray(-6)).toEqual(body.subarray(-6));
    await stillServes();
  });

  it('accepts an overlong header line as it came (RFC 5322 998 is a SHOULD for the author)', async () => {
    const c = await authed();
    const body = `Subject: ${'x'.repeat(2000)}\r\nX-Long: ${'y'.repeat(1500)}\r\n\r\nbody\r\n`;
    const id = QUEUED.exec(await c.send('alice@example.com', ['bob@example.org'], body))![1]!;
    queued++;
    c.destroy();
    const stored = (await t.relay.store.queue.body(id))!.toString('latin1');
    for (const line of body.split('\r\n')) expect(stored).toContain(`${line}\r\n`);
    await stillServes();
  });

  it('accepts a message of exactly max_message_bytes and refuses one byte more', async () => {
    const c = await authed();
    const head = 'Subject: size\r\n\r\n';
    const at = `${head}${'y'.repeat(MAX_BYTES - head.length - 2)}\r\n`;
    expect(Buffer.byteLength(at)).toBe(MAX_BYTES);
    expect(await c.send('alice@example.com', ['bob@example.org'], at)).toMatch(QUEUED);
    queued++;
    const over = `${head}${'y'.repeat(MAX_BYTES - head.length - 1)}\r\n`;
    expect(Buffer.byteLength(over)).toBe(MAX_BYTES + 1);
    expect(await c.send('alice@example.com', ['bob@example.org'], over)).toBe('552 5.3.4 Message size exceeds fixed maximum message size');
    c.destroy();
    await stillServes();
  });
});

describe.concurrent('address forms from an authenticated user', () => {
  it('accepts source routes, percent hacks, bang paths and IP literals as recipients, route stripped', async () => {
    const c = await authed();
    expect(await c.cmd('MAIL FROM:<@relay.example,@other.example:alice@example.com>')).toBe('250 2.1.0 Accepted');
    const accepted = ['<@a.example,@b.example:u@c.example>', '<u%c.example@d.example>', '<c.example!u@d.example>', '<u@[192.0.2.1]>', '<u@[IPv6:2001:db8::1]>', '<"quoted"@example.org>'];
    for (const a of accepted) expect(await c.cmd(`RCPT TO:${a}`)).toBe('250 2.1.5 Accepted');
    const refused = ['<"a b"@example.org>', '<"a@b"@example.org>', '<u@c@d.example>', '<u@[300.1.1.1]>', 'u@d.example', '<>'];
    for (const a of refused) expect(await c.cmd(`RCPT TO:${a}`)).toBe('501 5.1.3 Error: Bad recipient address syntax');
    expect(await c.cmd('DATA')).toBe('354 End data with <CR><LF>.<CR><LF>');
    c.write(`${MSG}.\r\n`);
    const id = QUEUED.exec(await c.last())![1]!;
    queued++;
    c.destroy();
    expect(await t.relay.store.queue.get(id)).toMatchObject({
      mailFrom: 'alice@example.com',
      rcptTo: ['u@c.example', 'u%c.example@d.example', 'c.example!u@d.example', 'u@[192.0.2.1]', 'u@[IPv6:2001:db8::1]', '"quoted"@example.org'],
    });
    await stillServes();
  });

  // A user bound to one address: no spelling of another sender gets past the binding. Each
  // refusal suspends the account (a foreign sender is a compromise signal), so each case has its own user.
  const spoofs: Array<[string, string]> = [
    ['a source route to a foreign address', '<@example.com:carol@evil.example>'],
    ['a percent hack through our domain', '<carol%evil.example@example.com>'],
    ['a bang path through our domain', '<evil.example!carol@example.com>'],
    ['an IP literal', '<carol@[192.0.2.1]>'],
    ['a quoted local part', '<"carol"@example.com>'],
    ['a subdomain', '<carol@mail.example.com>'],
    ['a look-alike domain', '<carol@example.com.evil.example>'],
  ];
  it.each(spoofs)('refuses %s as the sender of a user bound to one address', async (_name, from) => {
    const name = `carol${spoofs.findIndex(([, f]) => f === from)}`;
    await t.addUser(name, PASS, { senders: ['carol@example.com'] });
    const c = await SmtpClient.connect(t.port);
    expect(await c.login(name, PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.cmd(`MAIL FROM:${from}`)).toBe(`553 5.7.1 Sender address not allowed for this account: <${from.replace(/^<(@[^:]+:)?|>$/g, '')}>`);
    expect(await c.cmd('RCPT TO:<bob@example.org>')).toBe('503 5.5.1 Error: need MAIL command');
    c.destroy();
    await stillServes();
  });

  it('takes 100 of 1,000 pipelined recipients, refuses the rest with 452 4.5.3 and sends to the 100', async () => {
    const c = await authed();
    const rcpts = Array.from({ length: 1000 }, (_, i) => `r${i}@example.org`);
    c.write(`MAIL FROM:<alice@example.com>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`);
    const replies: string[] = [];
    for (let i = 0; i < 1002; i++) replies.push(await c.read());
    expect(replies[0]).toBe('250 2.1.0 Accepted');
    expect(replies.slice(1, 101)).toEqual(Array<string>(100).fill('250 2.1.5 Accepted'));
    expect(replies.slice(101, 1001)).toEqual(Array<string>(900).fill('452 4.5.3 Too many recipients for one message'));
    expect(replies[1001]).toBe('354 End data with <CR><LF>.<CR><LF>');
    c.write(`${MSG}.\r\n`);
    const id = QUEUED.exec(await c.last())![1]!;
    queued++;
    c.destroy();
    expect((await t.relay.store.queue.get(id))!.rcptTo).toEqual(rcpts.slice(0, 100));
    await stillServes();
  });
});

/** A raw socket, so the test decides exactly when each byte leaves. */
async function rawClient(): Promise<{ sock: net.Socket; text: () => string; closed: Promise<void>; waitFor: (re: RegExp) => Promise<void> }> {
  const sock = net.connect({ host: '127.0.0.1', port: t.port });
  sock.setNoDelay(true);
  let buf = '';
  const waiters = new Set<() => void>();
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => {
    buf += d;
    for (const w of waiters) w();
  });
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  const waitFor = (re: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (re.test(buf)) {
          waiters.delete(check);
          resolve();
        }
      };
      waiters.add(check);
      void closed.then(() => (re.test(buf) ? resolve() : reject(new Error(`closed before ${re}: ${JSON.stringify(buf)}`))));
      check();
    });
  await waitFor(/^220 .*\r\n/);
  return { sock, text: () => buf, closed, waitFor };
}

/** Writes one byte per TCP segment, each after the previous one has left. */
async function trickle(sock: net.Socket, s: string): Promise<void> {
  for (const ch of s) await new Promise<void>((r) => sock.write(ch, () => r()));
}

/** Two clients that stop sending, one mid-command and one mid-DATA; resolves with what each was told. */
async function stallingClients(): Promise<string[]> {
  const midLine = await rawClient();
  await trickle(midLine.sock, 'EHLO slow.example\r\nMAIL FROM:<al');
  const midData = await SmtpClient.connect(t.port);
  expect(await midData.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  expect(await midData.cmd('MAIL FROM:<alice@example.com>')).toBe('250 2.1.0 Accepted');
  expect(await midData.cmd('RCPT TO:<bob@example.org>')).toBe('250 2.1.5 Accepted');
  expect(await midData.cmd('DATA')).toBe('354 End data with <CR><LF>.<CR><LF>');
  midData.write('Subject: half\r\n\r\nhalf a mess');
  await midLine.closed;
  return [midLine.text().split('\r\n').slice(-2)[0]!, await midData.read(), await midData.read()];
}

describe('slowloris', () => {
  it('answers a client that sends its commands one byte at a time', async () => {
    const c = await rawClient();
    await trickle(c.sock, 'EHLO slow.example\r\n');
    await c.waitFor(/250 SIZE \d+\r\n$/);
    await trickle(c.sock, 'NOOP\r\nQUIT\r\n');
    await c.waitFor(/221 2\.0\.0 Bye\r\n$/);
    expect(c.text().split('\r\n').slice(-3)).toEqual(['250 2.0.0 OK', '221 2.0.0 Bye', '']);
    await c.closed;
    await stillServes();
  });

  it('cuts off clients that stop mid-command or mid-DATA at the idle timeout with 421 4.4.2, queueing nothing', async () => {
    expect(await stalled).toEqual(['421 4.4.2 Timeout - closing connection', '421 4.4.2 Timeout - closing connection', '']);
    await stillServes();
  });
});
