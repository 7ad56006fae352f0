import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';
const MSG = 'From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nHi Bob.\r\n';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;

let t: TestRelay;
beforeAll(async () => {
  t = await startTestRelay({ submission: { max_recipients: 3, max_message_bytes: 4096 } });
  await t.addUser('alice', PASS);
});
afterAll(() => t.stop());

async function loggedIn(): Promise<SmtpClient> {
  const c = await SmtpClient.connect(t.port);
  expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  return c;
}

async function stored(id: string) {
  return { msg: await t.relay.store.queue.get(id), body: (await t.relay.store.queue.body(id))?.toString('latin1') };
}

describe('submission over STARTTLS', () => {
  it('greets with the configured hostname', async () => {
    const c = await SmtpClient.connect(t.port);
    expect(await c.greeting).toBe('220 smtp.test.example ESMTP Postern ready');
    await c.quit();
  });

  it('does not offer AUTH before TLS and offers PLAIN and LOGIN after it', async () => {
    const c = await SmtpClient.connect(t.port);
    c.write('EHLO client.example\r\n');
    const before = await c.read();
    expect(before).toContain('STARTTLS');
    expect(before).toContain('SIZE 4096');
    expect(before).not.toMatch(/AUTH/);
    await c.starttls();
    c.write('EHLO client.example\r\n');
    const after = await c.read();
    expect(after).toContain('AUTH PLAIN LOGIN');
    expect(after).not.toContain('STARTTLS');
    expect(after).toContain('ENHANCEDSTATUSCODES');
    expect(after).toContain('SMTPUTF8');
    expect(after).toContain('8BITMIME');
    await c.quit();
  });

  it('accepts a message after AUTH PLAIN and stores it with its envelope', async () => {
    const c = await loggedIn();
    const r = await c.send('alice@example.com', ['bob@example.org'], MSG);
    const id = QUEUED.exec(r)![1]!;
    const { msg, body } = await stored(id);
    expect(msg).toMatchObject({ state: 'queued', mailFrom: 'alice@example.com', rcptTo: ['bob@example.org'], principal: 'user:alice', clientIp: '127.0.0.1' });
    expect(body).toMatch(/^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.3 with cipher [A-Z0-9_]+\)\r\n\tby smtp\.test\.example \(Postern\) with ESMTPSA id [0-9A-Z]{15}\r\n\tfor <bob@example\.org>;\r\n\t\w{3}, \d+ \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n/);
    expect(body).toContain(`${MSG.split('\r\n\r\n')[0]}\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: <${id}.`);
    expect(body!.endsWith('\r\n\r\nHi Bob.\r\n')).toBe(true);
    expect(msg!.size).toBe(Buffer.byteLength(body!, 'latin1'));
    await c.quit();
  });

  it('accepts a message after AUTH LOGIN', async () => {
    const c = await SmtpClient.connect(t.port);
    await c.cmd('EHLO client.example');
    await c.starttls();
    await c.cmd('EHLO client.example');
    expect(await c.cmd('AUTH LOGIN')).toBe('334 VXNlcm5hbWU6');
    expect(await c.cmd(Buffer.from('alice').toString('base64'))).toBe('334 UGFzc3dvcmQ6');
    expect(await c.cmd(Buffer.from(PASS).toString('base64'))).toBe('235 2.7.0 Authentication successful');
    expect(await c.send('alice@example.com', ['bob@example.org'], MSG)).toMatch(QUEUED);
    await c.quit();
  });

  it('keeps the Date and Message-ID the client wrote and traces one recipient only when alone', async () => {
    const c = await loggedIn();
    const msg = 'From: <alice@example.com>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\nSubject: s\r\n\r\nbody\r\n';
    const id = QUEUED.exec(await c.send('alice@example.com', ['a@x.example', 'b@x.example'], msg))![1]!;
    const body = (await stored(id)).body!;
    expect(body.match(/^Date:/gm)).toHaveLength(1);
    expect(body.match(/^Message-ID:/gm)).toHaveLength(1);
    expect(body).not.toContain('\tfor <');
    expect(body.endsWith(msg)).toBe(true);
    await c.quit();
  });
});

describe('submission over implicit TLS', () => {
  it('accepts a message after AUTH on the TLS port', async () => {
    const c = await SmtpClient.connect(t.tlsPort, { tls: true });
    c.write('EHLO client.example\r\n');
    expect(await c.read()).toContain('AUTH PLAIN LOGIN');
    expect(await c.authPlain('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    const id = QUEUED.exec(await c.send('alice@example.com', ['bob@example.org'], MSG))![1]!;
    expect((await stored(id)).msg?.state).toBe('queued');
    expect(c.tlsSocket?.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    await c.quit();
  });
});

describe('refusals', () => {
  // [what the client does, the exact reply line]
  const preTls: Array<[string, string]> = [
    ['AUTH PLAIN AGFsaWNlAHg=', '530 5.7.0 Must issue a STARTTLS command first'],
    ['AUTH LOGIN', '530 5.7.0 Must issue a STARTTLS command first'],
    ['MAIL FROM:<alice@example.com>', '530 5.7.0 Must issue a STARTTLS command first'],
    ['RCPT TO:<bob@example.org>', '503 5.5.1 Error: need MAIL command'],
  ];
  it.each(preTls)('before STARTTLS, %s gets %s', async (command, expected) => {
    const c = await SmtpClient.connect(t.port);
    await c.cmd('EHLO client.example');
    expect(await c.cmd(command)).toBe(expected);
    await c.quit();
  });

  it('refuses MAIL after TLS without AUTH, on both listeners', async () => {
    const c = await SmtpClient.connect(t.port);
    await c.cmd('EHLO client.example');
    await c.starttls();
    await c.cmd('EHLO client.example');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('530 5.7.0 Authentication required');
    await c.quit();
    const d = await SmtpClient.connect(t.tlsPort, { tls: true });
    await d.cmd('EHLO client.example');
    expect(await d.cmd('MAIL FROM:<>')).toBe('530 5.7.0 Authentication required');
    await d.quit();
    expect((await t.relay.store.queue.list()).every((m) => m.principal === 'user:alice')).toBe(true);
  });

  it('gives a wrong password and an unknown user the same 535 5.7.8', async () => {
    const c = await SmtpClient.connect(t.port);
    expect(await c.login('alice', 'wrong password!')).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.authPlain('mallory', PASS)).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('530 5.7.0 Authentication required');
    await c.quit();
  });

  it('refuses bare LF and bare CR in the data, including the smuggling variants', async () => {
    const cases = [
      'Subject: a\r\n\r\nline\nline\r\n',
      'Subject: a\r\n\r\nline\rline\r\n',
      'Subject: a\r\n\r\nx\r\n\n.\nMAIL FROM:<evil@example.com>\r\n',
      'Subject: a\r\n\r\nx\r\n\r.\r\nRCPT TO:<x@y>\r\n',
      'Subject: a\r\n\r\nx\n.\r\nDATA\r\n',
    ];
    const before = await t.relay.store.queue.count();
    const c = await loggedIn();
    for (const body of cases) {
      expect(await c.send('alice@example.com', ['bob@example.org'], body)).toBe(
        '550 5.6.0 Message refused: bare CR or LF in message data, lines must end with CRLF',
      );
    }
    // The session stays usable: the next clean message goes through.
    expect(await c.send('alice@example.com', ['bob@example.org'], MSG)).toMatch(QUEUED);
    expect(await t.relay.store.queue.count()).toBe(before + 1);
    expect(t.logs.events('message.refused').filter((l) => l.reason === 'BARE_NEWLINE')).toHaveLength(cases.length);
    await c.quit();
  });

  it('refuses a message over the size limit and accepts one at it', async () => {
    const c = await loggedIn();
    const over = `Subject: big\r\n\r\n${'x'.repeat(4096)}\r\n`;
    expect(await c.send('alice@example.com', ['bob@example.org'], over)).toBe(
      '552 5.3.4 Message size exceeds fixed maximum message size',
    );
    // The limit applies to what the client sends, final CRLF included.
    const head = 'Subject: fits\r\n\r\n';
    const at = `${head}${'y'.repeat(4096 - head.length - 2)}\r\n`;
    expect(await c.send('alice@example.com', ['bob@example.org'], at)).toMatch(QUEUED);
    await c.quit();
  });

  it('refuses SIZE= above the limit at MAIL', async () => {
    const c = await loggedIn();
    expect(await c.cmd('MAIL FROM:<alice@example.com> SIZE=5000')).toBe(
      '552 5.3.4 Error: message exceeds fixed maximum message size 4096',
    );
    await c.quit();
  });

  it('refuses recipients beyond the per-message limit with 452 4.5.3', async () => {
    const c = await loggedIn();
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('250 2.1.0 Accepted');
    for (const n of [1, 2, 3]) expect(await c.cmd(`RCPT TO:<r${n}@example.org>`)).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('RCPT TO:<r4@example.org>')).toBe('452 4.5.3 Too many recipients for one message');
    expect(await c.cmd('DATA')).toBe('354 End data with <CR><LF>.<CR><LF>');
    c.write(`${MSG}.\r\n`);
    const id = QUEUED.exec(await c.last())![1]!;
    expect((await stored(id)).msg?.rcptTo).toEqual(['r1@example.org', 'r2@example.org', 'r3@example.org']);
    await c.quit();
  });

  it('never writes a password, hash or AUTH blob to the log', async () => {
    const c = await loggedIn();
    await c.quit();
    const all = t.logs.raw.join('\n');
    expect(all).not.toContain(PASS);
    expect(all).not.toContain(Buffer.from(`\0alice\0${PASS}`).toString('base64'));
    expect(all).not.toContain('$argon2id$');
    expect(t.logs.events('auth.ok').length).toBeGreaterThan(0);
  });
});
