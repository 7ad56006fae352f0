import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

/**
 * TLS session resumption ([tls] session_tickets): a device that reconnects for every message
 * offers the ticket of its last session and skips the full handshake, on either listener, on
 * any process sharing the store, across a rotation of the ticket key; and still has to log in.
 */
let a: TestRelay;
let b: TestRelay;
let rot: TestRelay;
let off: TestRelay;
const PASS = 'resumption password 1';
const HOUR = 3_600_000;

beforeAll(async () => {
  a = await startTestRelay();
  // A second process on the same store (another worker or node): its own listeners and key ring.
  b = await startTestRelay({}, { dir: a.dir, clock: a.clock });
  rot = await startTestRelay();
  off = await startTestRelay({ tls: { session_tickets: false } });
  for (const t of [a, rot, off]) await t.addUser('alice', PASS);
});
afterAll(async () => {
  await b?.relay.close();
  for (const t of [a, rot, off]) await t?.stop();
});

const body = (s: string) => `From: <alice@example.com>\r\nSubject: ${s}\r\n\r\nbody\r\n`;

/** One message on one connection (STARTTLS, or implicit TLS on tlsPort): whether TLS was resumed, the replies, the session to resume next. */
async function visit(t: TestRelay, session: Buffer | undefined, implicit = false) {
  const c = await SmtpClient.connect(implicit ? t.tlsPort : t.port, { tls: implicit, session });
  const auth = await c.login('alice', PASS, session);
  const reused = c.tlsSocket!.isSessionReused();
  const sent = await c.send('alice@example.com', ['bob@dest.example'], body(`resumed ${String(reused)}`));
  const next = c.session;
  await c.quit();
  return { reused, auth, sent, session: next };
}

describe('TLS session resumption', () => {
  it('resumes a device on both listeners; it still logs in, and its mail is queued', async () => {
    for (const implicit of [false, true]) {
      const first = await visit(a, undefined, implicit);
      expect(first).toMatchObject({ reused: false, auth: '235 2.7.0 Authentication successful' });
      expect(first.sent).toMatch(/^250 2\.0\.0 /);
      expect(first.session).toBeInstanceOf(Buffer);
      const again = await visit(a, first.session, implicit);
      expect(again).toMatchObject({ reused: true, auth: '235 2.7.0 Authentication successful' });
      expect(again.sent).toMatch(/^250 2\.0\.0 /);
    }
    const subjects = await Promise.all((await a.relay.store.queue.list()).map(async (m) => /Subject: (.*)/.exec((await a.relay.store.queue.body(m.id))!.toString())![1]));
    expect(subjects.sort()).toEqual(['resumed false', 'resumed false', 'resumed true', 'resumed true']);
    // A resumed session is no shortcut past the password.
    const c = await SmtpClient.connect(a.port);
    await c.cmd('EHLO client.example');
    await c.starttls((await visit(a, undefined)).session);
    expect(c.tlsSocket!.isSessionReused()).toBe(true);
    await c.cmd('EHLO client.example');
    expect(await c.authPlain('alice', 'wrong')).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('530 5.7.0 Authentication required');
    await c.quit();
  });

  it('resumes a TLS 1.2 client too (a session ticket, RFC 5077), on another process sharing the store', async () => {
    const c1 = await SmtpClient.connect(a.tlsPort, { tls: true, maxVersion: 'TLSv1.2' });
    expect(c1.tlsSocket!.getProtocol()).toBe('TLSv1.2');
    expect(await c1.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    const session = c1.session;
    await c1.quit();
    const c2 = await SmtpClient.connect(b.tlsPort, { tls: true, maxVersion: 'TLSv1.2', session });
    expect([c2.tlsSocket!.getProtocol(), c2.tlsSocket!.isSessionReused()]).toEqual(['TLSv1.2', true]);
    expect(await c2.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    await c2.quit();
  });

  it('resumes on another process sharing the store a session begun on the first', async () => {
    const first = await visit(a, undefined);
    const elsewhere = await visit(b, first.session);
    expect(elsewhere).toMatchObject({ reused: true, auth: '235 2.7.0 Authentication successful' });
    expect(elsewhere.sent).toMatch(/^250 2\.0\.0 /);
    // One key per period in the store, the one both processes use.
    expect((await a.relay.store.tlsTickets.since(0)).map((k) => k.startsAt)).toEqual([Math.floor(a.clock.now() / HOUR) * HOUR]);
  });

  it("accepts the previous period's key after a rotation (renewing the ticket), and no older one", async () => {
    const old = (await visit(rot, undefined)).session;
    rot.clock.advance(HOUR);
    await rot.relay.tickets!.refresh();
    const afterOne = await visit(rot, old);
    expect(afterOne).toMatchObject({ reused: true, auth: '235 2.7.0 Authentication successful' });
    // The ticket it got is under the new period's key: it lives on past the next rotation (below).
    expect(afterOne.session).toBeInstanceOf(Buffer);
    rot.clock.advance(HOUR);
    await rot.relay.tickets!.refresh();
    // Two rotations on, the first key is gone from the store: a full handshake, and the device still gets in.
    expect((await rot.relay.store.tlsTickets.since(0)).map((k) => k.startsAt)).toEqual([0, 1].map((i) => Math.floor(rot.clock.now() / HOUR) * HOUR - i * HOUR));
    const afterTwo = await visit(rot, old);
    expect(afterTwo).toMatchObject({ reused: false, auth: '235 2.7.0 Authentication successful' });
    expect(afterTwo.sent).toMatch(/^250 2\.0\.0 /);
    expect((await visit(rot, afterOne.session)).reused).toBe(true);
  });

  it('keeps resuming across a reload (SIGHUP rebuilds the TLS contexts)', async () => {
    const first = await visit(a, undefined);
    expect(await a.relay.reload(structuredClone(a.cfg))).toMatchObject({ ok: true });
    expect(await visit(a, first.session)).toMatchObject({ reused: true, auth: '235 2.7.0 Authentication successful' });
  });

  it('keeps issuing tickets when the clock steps back behind every key held (Node aborts on an encryption answer without a key)', async () => {
    rot.clock.advance(-3 * HOUR);
    const v = await visit(rot, undefined);
    expect(v).toMatchObject({ reused: false, auth: '235 2.7.0 Authentication successful' });
    expect(v.session).toBeInstanceOf(Buffer);
    // Issued under a key held (the oldest), so it resumes.
    expect((await visit(rot, v.session)).reused).toBe(true);
    rot.clock.advance(3 * HOUR);
  });

  it('stores the next period\'s key half a period ahead, so every process holds it before it is used', async () => {
    const start = Math.floor(rot.clock.now() / HOUR) * HOUR;
    rot.clock.set(start + HOUR / 2);
    await rot.relay.tickets!.refresh();
    expect((await rot.relay.store.tlsTickets.since(start)).map((k) => k.startsAt)).toEqual([start + HOUR, start]);
  });

  it('resumes nothing with session_tickets = false', async () => {
    const first = await visit(off, undefined);
    expect(first.session).toBeInstanceOf(Buffer);
    expect(await visit(off, first.session)).toMatchObject({ reused: false, auth: '235 2.7.0 Authentication successful' });
    expect(await off.relay.store.tlsTickets.since(0)).toEqual([]);
  });

  it("runs on a Node whose TLS contexts carry OpenSSL's ticket key callback (else only the current key would be accepted)", () => {
    expect(typeof (tls.createSecureContext().context as { enableTicketKeyCallback?: unknown }).enableTicketKeyCallback).toBe('function');
    expect(a.logs.events('tls.tickets_degraded')).toEqual([]);
  });
});
