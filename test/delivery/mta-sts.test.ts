import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { closeDeliveryFixtures, startHarness, type Harness } from '../helpers/delivery.js';
import type { Rr } from '../helpers/dnsd.js';
import { startSinks, type Sink } from '../helpers/sink.js';
import { tempDir } from '../helpers/relay.js';
import { makeTestCa } from '../helpers/testca.js';
import { parseStsPolicy, parseStsTxt, stsMxMatches } from '../../src/delivery/mta-sts.js';

/**
 * MTA-STS (RFC 8461) over real sockets: a loopback DNS server publishes the _mta-sts TXT
 * records and MX hosts, an HTTPS server at 127.0.0.5 serves each domain's policy with a
 * certificate from a test CA (trusted through [delivery] tls_ca_file), and two SMTP sinks
 * stand for the MX hosts: 127.0.0.2 offers no STARTTLS, 127.0.0.3 offers it with a
 * certificate the test CA issued for mx.tls.example.
 */
let h: Harness;
let plain: Sink;
let tlsSink: Sink;
let policyServer: https.Server;
/** The policy text each mta-sts.DOMAIN serves; absent: 404. */
const policies = new Map<string, string>();
const served: string[] = [];
/** The TXT id broken.example announces (a test below changes it). */
let brokenId = '1';
/** The UTC day the harness's clock starts on (a test below moves it on). */
let startDay: string;

const policy = (mode: string, ...mx: string[]) => ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), 'max_age: 86400', ''].join('\r\n');

function zone(): Rr[] {
  const rr: Rr[] = [
    { type: 'A', name: 'mx.plain.example', data: '127.0.0.2' },
    { type: 'A', name: 'mx.tls.example', data: '127.0.0.3' },
  ];
  const domain = (name: string, mx: string, id: string | null) => {
    rr.push({ type: 'MX', name, data: { preference: 10, exchange: mx } });
    if (id) {
      rr.push({ type: 'TXT', name: `_mta-sts.${name}`, data: `v=STSv1; id=${id};` });
      rr.push({ type: 'A', name: `mta-sts.${name}`, data: '127.0.0.5' });
    }
  };
  domain('no-starttls.example', 'mx.plain.example', '1');
  domain('unlisted.example', 'mx.tls.example', '1');
  domain('good.example', 'mx.tls.example', '1');
  domain('testing.example', 'mx.plain.example', '1');
  domain('cached.example', 'mx.tls.example', '1');
  domain('nopolicy.example', 'mx.plain.example', null);
  // Another MX name at the address of mx.tls.example, whose certificate does not name it.
  rr.push({ type: 'A', name: 'mx.other.example', data: '127.0.0.3' });
  domain('reuse.example', 'mx.other.example', '1');
  // A TXT record, and a policy host that answers 404.
  domain('broken.example', 'mx.plain.example', brokenId);
  return rr;
}

beforeAll(async () => {
  const dir = tempDir('postern-mta-sts-');
  const ca = makeTestCa(dir);
  const names = ['no-starttls', 'unlisted', 'good', 'testing', 'cached', 'reuse', 'broken'].map((d) => `mta-sts.${d}.example`);
  policyServer = https.createServer({ ...ca.issue(names) }, (req, res) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    served.push(host);
    const text = policies.get(host.replace(/^mta-sts\./, ''));
    if (req.url !== '/.well-known/mta-sts.txt' || text === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(text);
  });
  await new Promise<void>((r) => policyServer.listen(0, '127.0.0.5', r));
  [plain, tlsSink] = (await startSinks(['127.0.0.2', '127.0.0.3'], { tls: [false, true], certs: [undefined, ca.issue(['mx.tls.example'])] })) as [Sink, Sink];
  h = await startHarness({
    records: zone(),
    port: plain.port,
    config: { delivery: { mta_sts_port: (policyServer.address() as AddressInfo).port, tls_ca_file: ca.caFile, tls_reports: true } },
  });
  startDay = new Date(h.clock.now()).toISOString().slice(0, 10);
  policies.set('no-starttls.example', policy('enforce', 'mx.plain.example'));
  policies.set('unlisted.example', policy('enforce', 'mx.other.example', '*.example.com'));
  policies.set('good.example', policy('enforce', '*.tls.example'));
  policies.set('testing.example', policy('testing', 'mx.tls.example'));
  policies.set('cached.example', policy('enforce', 'mx.tls.example'));
  policies.set('reuse.example', policy('enforce', 'mx.other.example'));
});
afterAll(async () => {
  await closeDeliveryFixtures();
  await new Promise((r) => policyServer?.close(r));
});

const rcpt = async (id: string) => (await h.store.delivery.recipients(id))[0]!;
const deliveredTo = (sink: Sink, rcptTo: string) => sink.messages.filter((m) => m.to.includes(rcptTo)).length;

describe('MTA-STS in delivery', () => {
  it('defers with 4.7.5 naming MTA-STS when an enforce policy\'s MX offers no STARTTLS, and sends nothing in plaintext', async () => {
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@no-starttls.example'] });
    await h.drain();
    expect(await rcpt(id)).toMatchObject({
      status: 'pending',
      statusCode: '4.7.5',
      lastError: expect.stringMatching(/^MTA-STS policy of no-starttls\.example \(enforce\) requires TLS with a certificate valid for mx\.plain\.example: ETLS /),
      lastTls: { version: null, verified: false, policy: 'mta-sts' },
    });
    expect(deliveredTo(plain, 'bob@no-starttls.example')).toBe(0);
    expect(h.logs.events('delivery.defer').at(-1)).toMatchObject({ queue_id: id, status: '4.7.5', reason: 'mta-sts', tls_policy: 'mta-sts', tls_version: null });
    expect(h.logs.events('mta_sts.fetched').find((e) => e.domain === 'no-starttls.example')).toMatchObject({ id: '1', mode: 'enforce', mx: ['mx.plain.example'] });
  });

  it('defers an enforce policy that names none of the domain\'s MX hosts, without connecting to any', async () => {
    const before = tlsSink.connections;
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@unlisted.example'] });
    await h.drain();
    expect(await rcpt(id)).toMatchObject({ status: 'pending', statusCode: '4.7.5', lastError: 'MTA-STS policy of unlisted.example (enforce, id 1) names none of its MX hosts (mx.tls.example)' });
    expect(tlsSink.connections).toBe(before);
  });

  it('delivers under enforce over TLS with a certificate valid for the MX name, and records mta-sts', async () => {
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@good.example'] });
    await h.drain();
    expect(deliveredTo(tlsSink, 'bob@good.example')).toBe(1);
    expect(tlsSink.messages.at(-1)!.secure).toBe(true);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ mx: 'mx.tls.example', tls_policy: 'mta-sts', tls_verified: true, tls_version: expect.stringMatching(/^TLSv1\.[23]$/) });
  });

  it('never reuses a connection verified for one MX name for another name at the same address', async () => {
    // A connection to 127.0.0.3, verified for mx.tls.example, is left idle in the pool;
    // mx.other.example resolves to the same address, and the certificate names only mx.tls.example.
    await h.submit({ from: 'alice@sender.example', to: ['carol@good.example'] });
    await h.drain();
    expect(deliveredTo(tlsSink, 'carol@good.example')).toBe(1);
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@reuse.example'] });
    await h.drain();
    expect(deliveredTo(tlsSink, 'bob@reuse.example')).toBe(0);
    expect(await rcpt(id)).toMatchObject({ status: 'pending', statusCode: '4.7.5', lastError: expect.stringMatching(/^MTA-STS policy of reuse\.example \(enforce\) requires TLS with a certificate valid for mx\.other\.example: ETLS .*mx\.other\.example/) });
  });

  it('delivers as today under testing, and logs what enforce would have refused', async () => {
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@testing.example'] });
    await h.drain();
    expect(deliveredTo(plain, 'bob@testing.example')).toBe(1);
    expect(h.logs.events('delivery.mta_sts_testing').filter((e) => e.queue_id === id)).toEqual([
      expect.objectContaining({ domain: 'testing.example', mx: 'mx.plain.example', would: 'defer', reason: 'mx-not-in-policy' }),
      expect.objectContaining({ domain: 'testing.example', mx: 'mx.plain.example', would: 'defer', reason: 'no-tls' }),
    ]);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ tls_policy: 'opportunistic', tls_version: null });
  });

  it('applies the cached policy while the policy server fails a refresh, and keeps it in the store for every node', async () => {
    const first = await h.submit({ from: 'alice@sender.example', to: ['a@cached.example'] });
    await h.drain();
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === first)).toMatchObject({ tls_policy: 'mta-sts' });
    // The TXT id changes (a new policy announced), but the policy server is down for the domain.
    h.dns.setRecords([...zone().filter((r) => r.name !== '_mta-sts.cached.example'), { type: 'TXT', name: '_mta-sts.cached.example', data: 'v=STSv1; id=2;' }]);
    policies.delete('cached.example');
    const second = await h.submit({ from: 'alice@sender.example', to: ['b@cached.example'] });
    await h.drain();
    expect(h.logs.events('mta_sts.error').find((e) => e.domain === 'cached.example')).toMatchObject({ err: expect.stringContaining('HTTP 404'), cached: '1' });
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === second)).toMatchObject({ tls_policy: 'mta-sts', tls_verified: true });
    expect(await h.store.mtaSts.get('cached.example')).toMatchObject({ id: '1', mode: 'enforce', mx: ['mx.tls.example'], maxAge: 86_400 });
  });

  it('delivers a TLS report under the policy where it can, and where the policy refuses it, at once again without it (RFC 8460 3)', async () => {
    const report = { 'TLS-Report-Domain': 'sender.example', 'TLS-Report-Submitter': 'relay.test.example' };
    const counted = async () => (await h.store.tlsReports.entries(new Date(h.clock.now()).toISOString().slice(0, 10))).reduce((n, e) => n + e.count, 0);
    const before = await counted();
    // good.example: enforce, and its MX has a valid certificate: under the policy.
    const ok = await h.submit({ from: '', to: ['tlsrpt@good.example'], headers: report });
    // no-starttls.example: enforce, and its MX has no STARTTLS: refused, then sent in the clear.
    const plainId = await h.submit({ from: '', to: ['tlsrpt@no-starttls.example'], headers: report });
    await h.drain();
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === ok)).toMatchObject({ tls_policy: 'mta-sts', tls_verified: true });
    expect(h.logs.events('delivery.tls_report_fallback').filter((e) => e.queue_id === ok)).toEqual([]);
    expect(h.logs.events('delivery.tls_report_fallback').filter((e) => e.queue_id === plainId)).toEqual([
      expect.objectContaining({ domain: 'no-starttls.example', policy: 'mta-sts', reason: expect.stringMatching(/^MTA-STS policy of no-starttls\.example \(enforce\) requires TLS/) }),
    ]);
    expect(deliveredTo(plain, 'tlsrpt@no-starttls.example')).toBe(1);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === plainId)).toMatchObject({ tls_policy: 'opportunistic', tls_version: null });
    expect(await h.store.queue.get(plainId)).toBeUndefined();
    // Neither counted in a report.
    expect(await counted()).toBe(before);
  });

  it('delivers to a domain without a policy as today: opportunistic TLS, no policy fetched', async () => {
    const fetched = served.length;
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@nopolicy.example'] });
    await h.drain();
    expect(deliveredTo(plain, 'bob@nopolicy.example')).toBe(1);
    expect(served.length).toBe(fetched);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ tls_policy: 'opportunistic' });
  });
  it('refreshes a cached policy in the background once half its max_age has passed, while delivering with the cached one', async () => {
    const before = (await h.store.mtaSts.get('good.example'))!;
    policies.set('good.example', policy('enforce', '*.tls.example').replace('max_age: 86400', 'max_age: 172800'));
    h.clock.advance(13 * 3_600_000);
    const fetched = h.logs.events('mta_sts.fetched').length;
    const id = await h.submit({ from: 'alice@sender.example', to: ['dave@good.example'] });
    await h.drain();
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ tls_policy: 'mta-sts' });
    // The drain also retried the messages deferred above, whose domains' policies are refreshed
    // too, in any order: wait for good.example's.
    const refreshed = () => h.logs.events('mta_sts.fetched').slice(fetched).find((e) => e.domain === 'good.example');
    while (!refreshed()) await h.logs.logged('mta_sts.fetched', h.logs.events('mta_sts.fetched').length + 1);
    expect(refreshed()).toMatchObject({ domain: 'good.example', id: '1', max_age: 172_800, refresh: true });
    expect(await h.store.mtaSts.get('good.example')).toMatchObject({ id: '1', maxAge: 172_800, fetchedAt: before.fetchedAt + 13 * 3_600_000 });
  });

  it('after a failed background refresh waits 5 minutes before the next, but fetches at once when the cached policy has expired', async () => {
    const asked = () => served.filter((host) => host === 'mta-sts.testing.example').length;
    const cached = (await h.store.mtaSts.get('testing.example'))!;
    // Past half its max_age (the test above moved the clock 13 h), and its host now fails.
    expect(h.clock.now()).toBeGreaterThan(cached.fetchedAt + cached.maxAge * 500);
    policies.delete('testing.example');
    const before = asked();
    const errors = () => h.logs.events('mta_sts.error').filter((e) => e.domain === 'testing.example');
    let total = h.logs.events('mta_sts.error').length;
    await h.submit({ from: 'alice@sender.example', to: ['r1@testing.example'] });
    await h.drain();
    // The refresh runs in the background: its failure is logged after the delivery.
    await h.logs.logged('mta_sts.error', ++total);
    expect(asked()).toBe(before + 1);
    expect(errors().at(-1)).toMatchObject({ cached: '1', retry_at: new Date(h.clock.now() + 300_000).toISOString() });
    // Within the 5 minutes: the cached policy applies, no refresh is tried.
    await h.submit({ from: 'alice@sender.example', to: ['r2@testing.example'] });
    await h.drain();
    expect(asked()).toBe(before + 1);
    // 2 minutes before it expires: refreshed again (and it fails again).
    h.clock.set(cached.expiresAt - 120_000);
    await h.submit({ from: 'alice@sender.example', to: ['r3@testing.example'] });
    await h.drain();
    await h.logs.logged('mta_sts.error', ++total);
    expect(asked()).toBe(before + 2);
    // Expired, 3 minutes after that failure: nothing cached any more, so fetched now.
    h.clock.set(cached.expiresAt + 60_000);
    const id = await h.submit({ from: 'alice@sender.example', to: ['r4@testing.example'] });
    await h.drain();
    expect(asked()).toBe(before + 3);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ tls_policy: 'opportunistic' });
    expect(errors().at(-1)).toMatchObject({ cached: null });
  });

  it('after a failed fetch asks the policy host again only 5 minutes later, or at once for a new TXT id (RFC 8461 3.3)', async () => {
    const asked = () => served.filter((host) => host === 'mta-sts.broken.example').length;
    const first = await h.submit({ from: 'alice@sender.example', to: ['a@broken.example'] });
    await h.drain();
    expect(asked()).toBe(1);
    const retryAt = new Date(h.clock.now() + 300_000).toISOString();
    expect(h.logs.events('mta_sts.error').filter((e) => e.domain === 'broken.example')).toEqual([
      expect.objectContaining({ err: 'HTTP 404 from https://mta-sts.broken.example/.well-known/mta-sts.txt', cached: null, retry_at: retryAt }),
    ]);
    // No policy: delivered as to a domain without one (the RFC's fallback).
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === first)).toMatchObject({ tls_policy: 'opportunistic' });
    // Within the 5 minutes: not asked again, and delivered the same way.
    h.clock.advance(299_000);
    const second = await h.submit({ from: 'alice@sender.example', to: ['b@broken.example'] });
    await h.drain();
    expect(asked()).toBe(1);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === second)).toMatchObject({ tls_policy: 'opportunistic' });
    // Each delivery still counts the failure for the domain's TLS report (RFC 8460).
    const day = new Date(h.clock.now()).toISOString().slice(0, 10);
    expect((await h.store.tlsReports.entries(day)).find((e) => e.policyDomain === 'broken.example' && e.result === 'sts-policy-fetch-error')).toMatchObject({ count: 2 });
    // Once they are over: asked again.
    h.clock.advance(1_000);
    await h.submit({ from: 'alice@sender.example', to: ['c@broken.example'] });
    await h.drain();
    expect(asked()).toBe(2);
    // A new id is asked for at once, and a policy that now loads applies.
    brokenId = '2';
    h.dns.setRecords(zone());
    policies.set('broken.example', policy('testing', 'mx.plain.example'));
    const fourth = await h.submit({ from: 'alice@sender.example', to: ['d@broken.example'] });
    await h.drain();
    expect(asked()).toBe(3);
    expect(h.logs.events('mta_sts.fetched').find((e) => e.domain === 'broken.example')).toMatchObject({ id: '2', mode: 'testing' });
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === fourth)).toMatchObject({ tls_policy: 'opportunistic' });
    expect(h.logs.events('delivery.mta_sts_testing').filter((e) => e.queue_id === fourth)).toEqual([expect.objectContaining({ domain: 'broken.example', reason: 'no-tls' })]);
  });
});

describe('TLS reports of these deliveries', () => {
  it('counted each session by policy domain, policy and result (the record() the deliverer calls)', async () => {
    const day = startDay;
    const counts = (await h.store.tlsReports.entries(day)).map((e) => ({ domain: e.policyDomain, type: e.policyType, mx: e.mxHost, result: e.result, count: e.count }));
    expect(counts).toEqual(
      expect.arrayContaining([
        { domain: 'good.example', type: 'sts', mx: 'mx.tls.example', result: 'success', count: 2 },
        { domain: 'reuse.example', type: 'sts', mx: 'mx.other.example', result: 'certificate-host-mismatch', count: 1 },
        { domain: 'no-starttls.example', type: 'sts', mx: 'mx.plain.example', result: 'starttls-not-supported', count: 1 },
        { domain: 'unlisted.example', type: 'sts', mx: 'mx.tls.example', result: 'validation-failure', count: 1 },
        { domain: 'testing.example', type: 'sts', mx: 'mx.plain.example', result: 'starttls-not-supported', count: 1 },
        { domain: 'nopolicy.example', type: 'no-policy-found', mx: 'mx.plain.example', result: 'starttls-not-supported', count: 1 },
      ]),
    );
  });
});

describe('MTA-STS parsing and matching', () => {
  it('matches a wildcard by exactly one leftmost label, and names exactly', () => {
    expect(stsMxMatches(['*.example.com'], 'mx1.example.com')).toBe(true);
    expect(stsMxMatches(['*.example.com'], 'MX1.Example.COM.')).toBe(true);
    expect(stsMxMatches(['*.example.com'], 'a.b.example.com')).toBe(false);
    expect(stsMxMatches(['*.example.com'], 'example.com')).toBe(false);
    expect(stsMxMatches(['*.example.com'], 'xexample.com')).toBe(false);
    expect(stsMxMatches(['mx.example.com'], 'mx.example.com')).toBe(true);
    expect(stsMxMatches(['mx.example.com'], 'mx2.example.com')).toBe(false);
  });

  it('reads the TXT record and the policy file, and refuses what RFC 8461 does not allow', () => {
    expect(parseStsTxt([['v=STSv1; id=2026-12-01;']])).toBe('invalid');
    expect(parseStsTxt([['v=STSv1; id=20261201T000000;']])).toEqual({ id: '20261201T000000' });
    expect(parseStsTxt([['v=STSv1; id=2026120100;'], ['other']])).toEqual({ id: '2026120100' });
    expect(parseStsTxt([['v=STSv1; id=a'], ['v=STSv1; id=b']])).toBe('many');
    expect(parseStsTxt([['v=spf1 -all']])).toBe('none');
    expect(parseStsPolicy(policy('enforce', 'MX.Example.com.', '*.example.net'))).toEqual({ mode: 'enforce', mx: ['mx.example.com', '*.example.net'], maxAge: 86_400, text: ['version: STSv1', 'mode: enforce', 'mx: MX.Example.com.', 'mx: *.example.net', 'max_age: 86400'] });
    expect(() => parseStsPolicy('version: STSv1\nmode: enforce\nmax_age: 86400\n')).toThrow('no mx lines');
    expect(() => parseStsPolicy('version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n')).toThrow('version is not STSv1');
    expect(() => parseStsPolicy('version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n')).toThrow('mode "strict" is not enforce, testing or none');
    expect(() => parseStsPolicy('version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999\n')).toThrow('max_age is missing or out of range');
  });
});
