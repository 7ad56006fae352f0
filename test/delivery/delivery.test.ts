import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import type { Rr } from '../helpers/dnsd.js';
import { closeDeliveryFixtures, startHarness, type Harness } from '../helpers/delivery.js';
import { startSink, startSinks, type Sink } from '../helpers/sink.js';
import { tempDir } from '../helpers/relay.js';
import { makeTestCa } from '../helpers/testca.js';

const MIN = 60_000;
let h: Harness | undefined;
let sinks: Sink[] = [];
// Everything a test starts is closed after it, whatever the test left assigned here.
afterEach(closeDeliveryFixtures);

/** Zone: MX hosts on loopback addresses; 127.0.0.9 has nothing listening (refuses connections). */
const zone = (extra: Rr[] = []): Rr[] => [
  { type: 'A', name: 'mx1.dest.example', data: '127.0.0.2' },
  { type: 'A', name: 'mx2.dest.example', data: '127.0.0.3' },
  { type: 'A', name: 'dead.dest.example', data: '127.0.0.9' },
  { type: 'MX', name: 'sender.example', data: { preference: 10, exchange: 'mx2.dest.example' } },
  ...extra,
];

async function setup(records: Rr[], opts: { tls?: (boolean | 'broken')[]; config?: Parameters<typeof startHarness>[0]['config']; random?: () => number; admins?: string[] } = {}) {
  sinks = await startSinks(['127.0.0.2', '127.0.0.3'], { tls: opts.tls });
  h = await startHarness({ records, port: sinks[0]!.port, config: opts.config, random: opts.random, admins: opts.admins });
  return { h, mx1: sinks[0]!, mx2: sinks[1]! };
}

const rcptStates = async (h: Harness, id: string) =>
  (await h.store.delivery.recipients(id)).map((r) => ({ address: r.address, status: r.status, code: r.statusCode, attempts: r.attempts }));

describe('routing to MX hosts', () => {
  it('delivers to the preferred MX and greets it with EHLO identity.helo from identity.outbound_ip', async () => {
    const { h, mx1, mx2 } = await setup(
      zone([
        { type: 'MX', name: 'dest.example', data: { preference: 20, exchange: 'mx2.dest.example' } },
        { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } },
      ]),
      { config: { identity: { helo: 'mta-out.test.example', ptr: 'mail.test.example', outbound_ip: '127.0.0.1' } } },
    );
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(mx1.messages).toHaveLength(1);
    expect(mx2.messages).toHaveLength(0);
    expect(mx1.messages[0]).toMatchObject({ from: 'alice@sender.example', to: ['bob@dest.example'], helo: 'mta-out.test.example', remoteAddress: '127.0.0.1' });
    expect(await h.store.queue.get(id)).toBeUndefined();
    const ok = h.logs.events('delivery.ok');
    expect(ok).toHaveLength(1);
    expect(ok[0]).toMatchObject({ queue_id: id, rcpt: 'bob@dest.example', mx: 'mx1.dest.example', tls: 'none (not-offered)' });
  });

  it('sends the message bytes unchanged, with the envelope given explicitly', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    // Envelope recipients differ from the To: header (Bcc), and the sender from From:.
    const id = await h.submit({ from: 'bounce@sender.example', to: ['hidden@dest.example'], headers: { From: 'Alice <alice@other.example>', To: 'someone@else.example' }, body: 'Line one\r\n.leading dot\r\n' });
    await h.drain();
    const original = await h.store.queue.body(id);
    expect(original).toBeUndefined(); // delivered and removed
    expect(mx1.messages[0]!.from).toBe('bounce@sender.example');
    expect(mx1.messages[0]!.to).toEqual(['hidden@dest.example']);
    expect(mx1.messages[0]!.raw.toString('latin1')).toMatch(/^From: Alice <alice@other\.example>\r\nTo: someone@else\.example\r\nSubject: test message\r\n/);
    expect(mx1.messages[0]!.raw.toString('latin1')).toContain('\r\n\r\nLine one\r\n.leading dot\r\n');
  });

  it('falls back to the next MX when the preferred one refuses connections', async () => {
    const { h, mx2 } = await setup(
      zone([
        { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'dead.dest.example' } },
        { type: 'MX', name: 'dest.example', data: { preference: 20, exchange: 'mx2.dest.example' } },
      ]),
    );
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(mx2.messages).toHaveLength(1);
    expect(h.logs.events('delivery.mx_unusable')[0]).toMatchObject({ mx: 'dead.dest.example', address: '127.0.0.9' });
    expect(String(h.logs.events('delivery.mx_unusable')[0]!.error)).toMatch(/^ECONNREFUSED/);
    expect(h.logs.events('delivery.ok')[0]).toMatchObject({ mx: 'mx2.dest.example' });
  });

  it('uses the domain address as an implicit MX when there is no MX record', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'A', name: 'plain.example', data: '127.0.0.2' }]));
    await h.submit({ from: 'alice@sender.example', to: ['bob@plain.example'] });
    await h.drain();
    expect(mx1.messages).toHaveLength(1);
    expect(h.logs.events('delivery.ok')[0]).toMatchObject({ mx: 'plain.example' });
  });

  it('fails a null MX domain at once with 5.1.10, without connecting anywhere', async () => {
    const { h, mx1, mx2 } = await setup(zone([{ type: 'MX', name: 'nomail.example', data: { preference: 0, exchange: '.' } }]));
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@nomail.example'] });
    await h.drain();
    expect(mx1.connections).toBe(0);
    expect(h.logs.events('delivery.fail')[0]).toMatchObject({ queue_id: id, rcpt: 'bob@nomail.example', status: '5.1.10' });
    expect(await h.store.queue.get(id)).toBeUndefined();
    // The DSN went to the sender's MX (mx2).
    expect(mx2.messages).toHaveLength(1);
    expect(mx2.messages[0]!.raw.toString()).toContain('Status: 5.1.10');
  });

  it('routes everything through [delivery] smarthost when it is set, whatever the MX says', async () => {
    sinks = await startSinks(['127.0.0.3']);
    h = await startHarness({ records: zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), port: 9, config: { delivery: { smarthost: `127.0.0.3:${sinks[0]!.port}` } } });
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example', 'carol@elsewhere.example'] });
    await h.drain();
    expect(sinks[0]!.messages.flatMap((m) => m.to).sort()).toEqual(['bob@dest.example', 'carol@elsewhere.example']);
  });
});

describe('TLS', () => {
  it('uses STARTTLS when the MX offers it, without checking its certificate, and logs the outcome', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), { tls: [true, false] });
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(mx1.messages).toHaveLength(1);
    expect(mx1.messages[0]!.secure).toBe(true);
    expect(String(h.logs.events('delivery.ok')[0]!.tls)).toMatch(/^TLSv1\.[23] .* unverified$/);
  });

  it('retries the same MX in plaintext at once when the TLS handshake fails under the default "may" policy', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), { tls: ['broken', false] });
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(mx1.messages).toHaveLength(1);
    expect(mx1.messages[0]!.secure).toBe(false);
    expect(h.logs.events('delivery.tls.fallback')[0]).toMatchObject({ mx: 'mx1.dest.example' });
    expect(h.logs.events('delivery.ok')[0]).toMatchObject({ tls: 'none (handshake-failed)' });
  });

  it('defers instead of sending in plaintext when a domain requires verified TLS and the certificate does not verify', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), {
      tls: [true, false],
      config: { delivery: { tls_policy: { 'dest.example': 'verify' } } },
    });
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(mx1.messages).toHaveLength(0);
    expect(await rcptStates(h, id)).toEqual([{ address: 'bob@dest.example', status: 'pending', code: '4.7.5', attempts: 1 }]);
    expect(h.logs.events('delivery.defer')[0]).toMatchObject({ reason: 'tls' });
  });

  it('with tls_ca_file set still trusts the CAs of NODE_EXTRA_CA_CERTS, as Node does without it', async () => {
    const own = makeTestCa(tempDir('postern-own-ca-'));
    const extra = makeTestCa(tempDir('postern-extra-ca-'));
    sinks = await startSinks(['127.0.0.2', '127.0.0.3'], { tls: [true, false], certs: [extra.issue(['mx1.dest.example']), undefined] });
    const before = process.env.NODE_EXTRA_CA_CERTS;
    process.env.NODE_EXTRA_CA_CERTS = extra.caFile;
    try {
      h = await startHarness({
        records: zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]),
        port: sinks[0]!.port,
        config: { delivery: { tls_ca_file: own.caFile, tls_policy: { 'dest.example': 'verify' } } },
      });
    } finally {
      if (before === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
      else process.env.NODE_EXTRA_CA_CERTS = before;
    }
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(await rcptStates(h, id)).toEqual([]);
    expect(sinks[0]!.messages).toHaveLength(1);
    expect(sinks[0]!.messages[0]!.secure).toBe(true);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ tls_verified: true });
  });

  it('defers under "encrypt" when the MX offers no STARTTLS at all', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), {
      config: { delivery: { tls_policy: { 'dest.example': 'encrypt' } } },
    });
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    expect(mx1.messages).toHaveLength(0);
    expect((await h.store.delivery.recipients(id))[0]).toMatchObject({ status: 'pending', statusCode: '4.7.5' });
  });
});

describe('outcomes per recipient', () => {
  it('declares 8-bit data with BODY=8BITMIME, and 7-bit data with nothing', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], body: 'caf\xc3\xa9\r\n' });
    await h.drain();
    await h.submit({ from: 'carol@sender.example', to: ['bob@dest.example'], body: 'plain\r\n' });
    await h.drain();
    expect(mx1.lines.filter((l) => /^MAIL FROM:/i.test(l))).toEqual(['MAIL FROM:<alice@sender.example> BODY=8BITMIME', 'MAIL FROM:<carol@sender.example>']);
  });

  it('sends a non-ASCII mailbox only to a host that offers SMTPUTF8, and fails it with 5.6.7 elsewhere', async () => {
    const plainMx = await startSink('127.0.0.4', 0, { smtputf8: false });
    const h = await startHarness({ records: [{ type: 'A', name: 'mx.dest.example', data: '127.0.0.4' }, { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } }], port: plainMx.port });
    const id = await h.submit({ from: 'alice@sender.example', to: ['jörg@dest.example', 'bob@dest.example'] });
    await h.drain();
    expect(plainMx.messages.map((m) => m.to)).toEqual([['bob@dest.example']]);
    expect(plainMx.lines.some((l) => /jörg|j\?rg/.test(l))).toBe(false);
    expect(h.logs.events('delivery.fail').find((e) => e.queue_id === id)).toMatchObject({ rcpt: 'jörg@dest.example', status: '5.6.7', reason: 'smtputf8' });
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ rcpt: 'bob@dest.example' });
    expect(h.logs.events('dsn.queued')).toMatchObject([{ queue_id: id, to: 'alice@sender.example', recipients: ['jörg@dest.example'] }]);
  });

  it('retries a 4xx on the backoff schedule (5, 10, 20 minutes) and delivers once it is accepted', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    let refusals = 3;
    mx1.behaviour.rcpt = () => (refusals-- > 0 ? '451 4.7.1 Greylisted, try again later' : undefined);
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    const t0 = h.clock.now();
    await h.drain();
    const tries = () => mx1.helos.length;
    expect(tries()).toBe(1);
    expect((await h.store.queue.get(id))!.nextAttemptAt).toBe(t0 + 5 * MIN);
    for (const [wait, expected] of [
      [5 * MIN - 1, 1],
      [1, 2],
      [10 * MIN - 1, 2],
      [1, 3],
      [20 * MIN - 1, 3],
      [1, 4],
    ] as const) {
      h.clock.advance(wait);
      await h.drain();
      expect(tries()).toBe(expected);
    }
    expect(mx1.messages).toHaveLength(1);
    expect(await h.store.queue.get(id)).toBeUndefined();
    expect(h.logs.events('delivery.defer').map((e) => e.attempt)).toEqual([1, 2, 3]);
    expect(h.logs.events('delivery.ok')[0]).toMatchObject({ attempt: 4 });
  });

  it('caps the interval between attempts at retry_max_minutes', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    mx1.behaviour.rcpt = () => '450 4.2.1 Mailbox busy';
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    for (let i = 0; i < 7; i++) {
      h.clock.set((await h.store.queue.get(id))!.nextAttemptAt!);
      await h.drain();
    }
    const m = (await h.store.queue.get(id))!;
    expect(m.attempts).toBe(8);
    expect(m.nextAttemptAt! - h.clock.now()).toBe(240 * MIN);
  });

  it('turns a 5xx into exactly one DSN to the sender, with the original headers, from MAILER-DAEMON with a null sender', async () => {
    const { h, mx1, mx2 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    mx1.behaviour.rcpt = () => '550 5.1.1 No such user here';
    const id = await h.submit({ from: 'alice@sender.example', to: ['nobody@dest.example'], headers: { Subject: 'Quarterly report' } });
    await h.drain();
    h.clock.advance(24 * 60 * MIN);
    await h.drain();
    expect(mx1.messages).toHaveLength(0);
    expect(mx2.messages).toHaveLength(1);
    const dsn = mx2.messages[0]!;
    expect(dsn.from).toBe('');
    expect(dsn.to).toEqual(['alice@sender.example']);
    const text = dsn.raw.toString('latin1');
    expect(text).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@smtp\.test\.example>\r\n/m);
    expect(text).toMatch(/Content-Type: multipart\/report; report-type=delivery-status;/);
    expect(text).toContain('Content-Type: message/delivery-status');
    expect(text).toContain('Final-Recipient: rfc822; nobody@dest.example\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx1.dest.example\r\nDiagnostic-Code: smtp; 550 5.1.1 No such user here');
    expect(text).toContain('Content-Type: text/rfc822-headers');
    expect(text).toContain('Subject: Quarterly report\r\n');
    expect(text).toContain(`Message-ID: <${id}@smtp.test.example>\r\n`);
    expect(h.logs.events('dsn.queued')).toHaveLength(1);
    expect(await h.store.queue.count()).toBe(0);
  });

  it('sends no DSN about a message with a null sender', async () => {
    const { h, mx1, mx2 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    mx1.behaviour.rcpt = () => '550 5.1.1 No such user here';
    const id = await h.submit({ from: '', to: ['nobody@dest.example'] });
    await h.drain();
    expect(mx2.messages).toHaveLength(0);
    expect(h.logs.events('dsn.queued')).toHaveLength(0);
    expect(h.logs.events('dsn.suppressed')[0]).toMatchObject({ queue_id: id, reason: 'null-sender' });
    expect(await h.store.queue.count()).toBe(0);
  });

  it('gives each recipient of one transaction its own outcome, and keeps the message until all are final', async () => {
    const { h, mx1, mx2 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    let busy = true;
    mx1.behaviour.rcpt = (a) => (a.startsWith('gone') ? '550 5.1.1 User unknown' : a.startsWith('busy') && busy ? '452 4.2.2 Over quota, try later' : undefined);
    const id = await h.submit({ from: 'alice@sender.example', to: ['ok@dest.example', 'busy@dest.example', 'gone@dest.example'] });
    await h.drain();
    expect(mx1.messages.map((m) => m.to)).toEqual([['ok@dest.example']]);
    expect(await rcptStates(h, id)).toEqual([
      { address: 'ok@dest.example', status: 'delivered', code: '2.0.0', attempts: 1 },
      { address: 'busy@dest.example', status: 'pending', code: '4.2.2', attempts: 1 },
      { address: 'gone@dest.example', status: 'failed', code: '5.1.1', attempts: 1 },
    ]);
    // The DSN names only the failed recipient; the deferred one is still being tried.
    expect(mx2.messages).toHaveLength(1);
    expect(mx2.messages[0]!.raw.toString()).toContain('Final-Recipient: rfc822; gone@dest.example');
    expect(mx2.messages[0]!.raw.toString()).not.toContain('Final-Recipient: rfc822; busy@dest.example');
    expect(await h.store.queue.get(id)).toBeDefined();

    busy = false;
    h.clock.advance(5 * MIN);
    await h.drain();
    expect(mx1.messages.map((m) => m.to)).toEqual([['ok@dest.example'], ['busy@dest.example']]);
    expect(await h.store.queue.get(id)).toBeUndefined();
    expect(mx2.messages).toHaveLength(1);
  });

  it('gives up a recipient deferred past max_queue_days with 4.4.7 and a DSN', async () => {
    const { h, mx1, mx2 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), {
      config: { delivery: { max_queue_days: 1 } },
    });
    mx1.behaviour.rcpt = () => '451 4.3.0 Temporary failure';
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.drain();
    h.clock.advance(24 * 60 * MIN);
    await h.drain();
    expect(await h.store.queue.get(id)).toBeUndefined();
    expect(h.logs.events('delivery.fail')[0]).toMatchObject({ status: '4.4.7', reason: 'expired' });
    const dsn = mx2.messages[0]!.raw.toString();
    expect(dsn).toContain('Status: 4.4.7');
    expect(dsn).toContain('delivery time expired after 1 days; last error: 451 4.3.0 Temporary failure');
  });

  it('never touches held or waiting-quota messages', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    const held = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], state: 'held' });
    const waiting = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], state: 'waiting-quota' });
    h.clock.advance(60 * MIN);
    await h.drain();
    expect(mx1.connections).toBe(0);
    expect((await h.store.queue.get(held))!.attempts).toBe(0);
    expect((await h.store.queue.get(waiting))!.attempts).toBe(0);
  });

  it('reuses one connection for several messages to the same MX host', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), {
      config: { delivery: { connections_per_host: 1 } },
    });
    for (let i = 0; i < 5; i++) await h.submit({ from: 'alice@sender.example', to: [`r${i}@dest.example`] });
    await h.drain();
    expect(mx1.messages).toHaveLength(5);
    expect(mx1.connections).toBe(1);
  });
});

describe('reputation feedback', () => {
  it('counts remote 5xx per principal and opens one remote-rejections incident above reject_alert, notifying the admins', async () => {
    const { h, mx1, mx2 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]), {
      config: { delivery: { reject_alert: 0.5, reject_min_sample: 4 } },
      admins: ['postmaster@sender.example'],
    });
    mx1.behaviour.rcpt = (a) => (a.startsWith('spam') ? '550 5.7.1 Message rejected as spam' : undefined);
    const mallory = (await h.store.users.add('mallory', 'x', h.clock.now())).principalRef;
    await h.submit({ from: 'mallory@sender.example', to: ['a@dest.example', 'spam1@dest.example'], principal: 'mallory' });
    await h.drain();
    expect(await h.delivery.reputation.recentRejectionRate(mallory)).toBe(0.5);
    expect(await h.store.incidents.list()).toEqual([]);
    await h.submit({ from: 'mallory@sender.example', to: ['spam2@dest.example', 'spam3@dest.example'], principal: 'mallory' });
    await h.submit({ from: 'mallory@sender.example', to: ['spam4@dest.example'], principal: 'mallory' });
    await h.drain();
    expect(await h.delivery.reputation.recentRejectionRate(mallory)).toBe(0.8);
    const incidents = (await h.store.incidents.list()).map(({ principalKind, principalName, principalId, kind }) => ({ principalKind, principalName, principalId, kind }));
    expect(incidents).toEqual([{ principalKind: 'user', principalName: 'mallory', principalId: 1, kind: 'remote-rejections' }]);
    expect(h.logs.events('incident.opened')).toHaveLength(1);
    // The admins' notice went through the spool like any message (to sender.example's MX).
    expect(mx2.messages.filter((m) => m.to.includes('postmaster@sender.example'))).toHaveLength(1);
    // Outside the window the rate starts afresh.
    h.clock.advance(61 * MIN);
    expect(await h.delivery.reputation.recentRejectionRate(mallory)).toBe(0);
  });
});

describe('scheduler', () => {
  it('starts an attempt as soon as the spool commits a message, without waiting for its timer', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    const attempted = once(h.delivery.scheduler, 'attempted');
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    expect(await attempted).toEqual([id]);
    expect(mx1.messages).toHaveLength(1);
  });

  it('postpones a message whose attempt fails locally instead of spinning on it', async () => {
    const { h, mx1 } = await setup(zone([{ type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx1.dest.example' } }]));
    await h.delivery.scheduler.stop();
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'] });
    await h.loseBody(id);
    h.delivery.scheduler.start();
    await h.drain();
    expect(mx1.connections).toBe(0);
    expect(h.logs.events('delivery.error')[0]).toMatchObject({ queue_id: id, err: `message ${id} has no body in the spool` });
    expect(await h.store.queue.get(id)).toMatchObject({ attempts: 0, nextAttemptAt: h.clock.now() + 5 * MIN });
  });
});
