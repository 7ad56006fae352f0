import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headerProblem } from '../../src/policy/headers.js';
import type { TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { PW, quarantineRelay, submit } from '../quarantine/helpers.js';

let t: TestRelay;
beforeAll(async () => {
  t = await quarantineRelay();
});
afterAll(async () => {
  await t.stop();
});

const MALFORMED = '550 5.6.0 Message refused: malformed header: ';

describe('header fields read one way', () => {
  it.each([
    ['two From fields', 'From: <alice@corp.example>\r\nFrom: "CEO" <ceo@corp.example>\r\n', '2 From fields, RFC 5322 allows one'],
    ['two From fields spelled and spaced differently', 'FROM :<alice@corp.example>\r\nfrom\t: <ceo@corp.example>\r\n', '2 From fields, RFC 5322 allows one'],
    ['a From folded over two lines and another From', 'From: "Alice"\r\n <alice@corp.example>\r\nSubject: x\r\nFrom: ceo@corp.example\r\n', '2 From fields, RFC 5322 allows one'],
    ['two addresses in one From mailbox', 'From: <alice@corp.example> <ceo@bank.example>\r\n', 'From field has two addresses in one mailbox'],
    ['text after the address', 'From: <alice@corp.example> ceo@bank.example\r\n', 'From field has text after an address'],
    ['an unclosed quote in Sender', 'From: <alice@corp.example>\r\nSender: "Alice <alice@corp.example>\r\n', 'Sender field has an unclosed quote'],
    ['a From without an address', 'From: Alice\r\n', 'From field has no address'],
    ['a group in From, which reads as the CEO to some parsers', 'From: "CEO" <ceo@bank.example>: alice@corp.example;\r\n', 'From field has group syntax, which this field does not allow'],
    ['an address before a group name in Reply-To', 'From: <alice@corp.example>\r\nReply-To: "CEO" <ceo@bank.example>: alice@corp.example;\r\n', 'Reply-To field has an address before a group name'],
    ['two bare addresses in one mailbox', 'From: alice@corp.example ceo@bank.example\r\n', 'From field has several words without <> around the address'],
    ['two Subject fields', 'From: <alice@corp.example>\r\nSubject: a\r\nSubject: b\r\n', '2 Subject fields, RFC 5322 allows one'],
    ['two Reply-To fields', 'From: <alice@corp.example>\r\nReply-To: a@corp.example\r\nreply-to: b@corp.example\r\n', '2 Reply-To fields, RFC 5322 allows one'],
    ['a first line that is a fold', ' From: <alice@corp.example>\r\n', 'header line 1 is not a header field'],
    ['a fold of white space only', 'Subject: x\r\n \r\nFrom: <alice@corp.example>\r\n', 'header line 2 is not a header field'],
    ['a line that is not a field', 'From: <alice@corp.example>\r\nFrom ceo@bank.example Mon Jan  1 00:00:00 2024\r\n', 'header line 2 is not a header field'],
  ])('refuses %s with 550 5.6.0 and keeps nothing', async (_name, header, detail) => {
    const depth = (await t.relay.store.queue.list()).length;
    const c = await SmtpClient.connect(t.port);
    expect(await c.login('alice', PW)).toMatch(/^235 /);
    expect(await c.send('alice@corp.example', ['bob@dest.example'], `${header}\r\nhello\r\n`)).toBe(MALFORMED + detail);
    // The session goes on: the client can mend the message and send it again.
    expect(await c.send('alice@corp.example', ['bob@dest.example'], 'From: <alice@corp.example>\r\n\r\nhello\r\n')).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await c.quit();
    expect((await t.relay.store.queue.list()).length).toBe(depth + 1);
    expect((await t.relay.store.users.find('alice'))!.status).toBe('active');
    expect(t.logs.events('message.refused').at(-1)).toMatchObject({ reason: 'HEADER_INVALID', principal: 'alice', principal_kind: 'user' });
  });

  it('accepts comments, quoted names and several mailboxes in From, and groups in Reply-To', () => {
    for (const from of ['(comment) alice@corp.example (Alice)', '"Alice <x>" <alice@corp.example>', 'Alice Smith <alice@corp.example>', '<"odd local"@corp.example>', 'a@corp.example, b@corp.example', '"A \\" B" <a@corp.example>']) {
      expect(headerProblem(`From: ${from}\r\nSubject: s\r\n`), from).toBeNull();
    }
    expect(headerProblem('From: a@corp.example\r\nReply-To: Team: a@corp.example, "B, b" <b@corp.example>;\r\n')).toBeNull();
  });

  it('adds From: <envelope sender> to a message without one, as Postfix does', async () => {
    const { id } = await submit(t, 'Subject: no from\r\n\r\nhello\r\n', ['bob@nofrom.example']);
    const body = (await t.relay.store.queue.body(id))!.toString('latin1');
    expect(body).toMatch(/\r\nSubject: no from\r\nFrom: <alice@corp\.example>\r\nDate: /);
    expect(await t.relay.store.quarantine.get(id)).toMatchObject({ state: 'queued', score: 0 });
  });
});

describe('every sender field against the sender bindings', () => {
  it('holds a Sender: or Resent-From: outside the bindings, like From:', async () => {
    for (const [field, value] of [['Sender', 'ceo@bank.example'], ['Resent-From', '"Bank" <ceo@bank.example>']] as const) {
      const { id } = await submit(t, `From: <alice@corp.example>\r\n${field}: ${value}\r\n\r\nhello\r\n`, ['bob@sender.example']);
      expect(await t.relay.store.quarantine.get(id)).toMatchObject({ state: 'held', reasons: [{ id: 'FROM_NOT_BOUND', weight: 10, detail: `${field}: ceo@bank.example` }, { id: 'NEW_DOMAIN' }] });
    }
  });

  it('counts a Reply-To: outside the bindings as a weak signal that does not hold on its own', async () => {
    const { id } = await submit(t, 'From: <alice@corp.example>\r\nReply-To: <alice@home.example>\r\n\r\nhello\r\n', ['bob@replyto.example']);
    expect(await t.relay.store.quarantine.get(id)).toMatchObject({ state: 'queued', score: 6, reasons: [{ id: 'REPLY_TO_NOT_BOUND', weight: 3, detail: 'alice@home.example' }, { id: 'NEW_DOMAIN', weight: 3 }] });
  });
});
