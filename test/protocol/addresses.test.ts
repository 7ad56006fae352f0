import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { startDnsServer, type DnsServer } from '../helpers/dnsd.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { closeAllSinks, startSink, type Sink, type SinkMessage } from '../helpers/sink.js';

const PASS = 'correct horse battery staple';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;
const SENDER_NOT_NORMAL = '553 5.1.7 Sender address is not in normal form: write it without full-width, invisible or compatibility characters';
const RECIPIENT_NOT_NORMAL = '553 5.1.3 Recipient address is not in normal form: write it without full-width, invisible or compatibility characters';
const NEEDS_SMTPUTF8 = '553 5.6.7 A non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM';

let t: TestRelay;
let dns: DnsServer;
let sink: Sink;
let kate: number;

// One relay, one DNS server and one MX sink for the file: a user per test keeps them apart.
beforeAll(async () => {
  sink = await startSink('127.0.0.2', 0);
  dns = await startDnsServer([
    { type: 'A', name: 'mx.dest.example', data: '127.0.0.2' },
    { type: 'MX', name: 'xn--bcher-kva.example', data: { preference: 10, exchange: 'mx.dest.example' } },
    { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } },
  ]);
  t = await startTestRelay({ delivery: { enabled: true, dns_servers: [dns.address], port: sink.port } });
  kate = await t.addUser('kate', PASS, { senders: ['kate@example.com'] });
});
afterAll(async () => {
  await t.stop();
  await dns.close();
  await closeAllSinks();
});

async function session(): Promise<SmtpClient> {
  const c = await SmtpClient.connect(t.port);
  expect(await c.login('kate', PASS)).toBe('235 2.7.0 Authentication successful');
  return c;
}

describe('envelope addresses in one form', () => {
  it.each([
    ['a full-width domain', 'kate@ｅｘａｍｐｌｅ.com'],
    ['a soft hyphen in the domain', 'kate@exam\u00adple.com'],
    ['a Kelvin sign for K in the local part', '\u212aate@example.com'],
    ['a full-width letter in the local part', 'ｋate@example.com'],
  ])('refuses a sender with %s, which mapping would turn into a bound one, and suspends nobody', async (_name, from) => {
    const c = await session();
    expect(await c.cmd(`MAIL FROM:<${from}> SMTPUTF8`)).toBe(SENDER_NOT_NORMAL);
    expect(await c.cmd('MAIL FROM:<kate@example.com>')).toBe('250 2.1.0 Accepted');
    await c.quit();
    expect((await t.relay.store.users.get(kate))!.status).toBe('active');
    expect(t.logs.events('mail.refused').at(-1)).toMatchObject({ reason: 'SENDER_NOT_NORMAL', from });
  });

  it('refuses recipients not in normal form with 553 5.1.3, and a non-ASCII mailbox without SMTPUTF8 with 553 5.6.7', async () => {
    const c = await session();
    expect(await c.cmd('MAIL FROM:<kate@example.com> SMTPUTF8')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<bob@ｄｅｓｔ.example>')).toBe(RECIPIENT_NOT_NORMAL);
    expect(await c.cmd('RCPT TO:<bob@bu\u0308cher.example>')).toBe(RECIPIENT_NOT_NORMAL);
    expect(await c.cmd('RCPT TO:<b\u00adob@dest.example>')).toBe(RECIPIENT_NOT_NORMAL);
    expect(await c.cmd('RSET')).toMatch(/^250/);
    expect(await c.cmd('MAIL FROM:<kate@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<jörg@dest.example>')).toBe(NEEDS_SMTPUTF8);
    await c.quit();
  });

  it('judges SMTPUTF8 per transaction: a refused MAIL FROM with it does not lend it to the next one', async () => {
    const c = await session();
    expect(await c.cmd('MAIL FROM:<ｋate@example.com> SMTPUTF8')).toBe(SENDER_NOT_NORMAL);
    expect(await c.cmd('MAIL FROM:<kate@example.com>')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<jörg@dest.example>')).toBe(NEEDS_SMTPUTF8);
    await c.quit();
  });

  it('relays IDN domains to the MX as A-labels, however the client wrote them, and stores them so', async () => {
    const c = await session();
    expect(await c.cmd('MAIL FROM:<kate@example.com> SMTPUTF8')).toBe('250 2.1.0 Accepted');
    expect(await c.cmd('RCPT TO:<x@xn--bcher-kva.example>')).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('RCPT TO:<y@BÜCHER.example>')).toBe('250 2.1.5 Accepted');
    expect(await c.cmd('DATA')).toMatch(/^354/);
    const got = once(sink, 'message') as Promise<[SinkMessage]>;
    const reply = await c.cmd('From: <kate@example.com>\r\nSubject: idn\r\n\r\nhi\r\n.');
    expect(reply).toMatch(QUEUED);
    await c.quit();
    await got;
    expect(t.logs.events('message.accepted').at(-1)).toMatchObject({ queue_id: QUEUED.exec(reply)![1] });
    expect(sink.lines.filter((l) => /^RCPT TO:/i.test(l)).sort()).toEqual(['RCPT TO:<x@xn--bcher-kva.example>', 'RCPT TO:<y@xn--bcher-kva.example>']);
  });
});

describe('header sender fields in one form', () => {
  it('holds a message whose From: maps onto a bound sender but is written with full-width letters', async () => {
    const c = await session();
    const reply = await c.send('kate@example.com', ['bob@dest.example'], 'From: <kate@ｅｘａｍｐｌｅ.com>\r\nSubject: hi\r\n\r\nhello\r\n');
    await c.quit();
    const id = QUEUED.exec(reply)![1]!;
    expect(await t.relay.store.queue.get(id)).toMatchObject({ state: 'held' });
    expect(t.logs.events('message.held').at(-1)).toMatchObject({ queue_id: id, reasons: expect.arrayContaining([expect.objectContaining({ id: 'FROM_NOT_BOUND' })]) });
  });
});
