import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { closeDeliveryFixtures, startHarness, type Harness } from '../helpers/delivery.js';
import { dnssecToolsAvailable, NO_DNSSEC_MESSAGE, startSignedDns, type SignedDns } from '../helpers/dnssec.js';
import { startSinks, type Sink } from '../helpers/sink.js';
import { tempDir } from '../helpers/relay.js';
import { makeTestCa } from '../helpers/testca.js';

/**
 * DANE (RFC 7672) over real sockets: nsd serves DNSSEC-signed test zones on loopback, unbound
 * validates them with the zones' own trust anchors (its AD bit is what delivery trusts), and
 * two SMTP sinks stand for the MX hosts: 127.0.0.3 with STARTTLS and a certificate from a test
 * CA for mx.tls.example (which no public CA would vouch for: only the TLSA record can),
 * 127.0.0.2 without STARTTLS.
 */
let dns: SignedDns;
let h: Harness;
let tlsSink: Sink;
let plain: Sink;
let taSink: Sink;
let policyServer: https.Server | undefined;

const tlsa = (owner: string, hex: string) => `_25._tcp.${owner} 300 IN TLSA 3 1 1 ${hex}`;
/** The DANE-EE digest of mx.tls.example's key, and one of no key (set in beforeAll). */
let spki = '';
let wrong = '';

beforeAll(async () => {
  if (!dnssecToolsAvailable()) return;
  const ca = makeTestCa(tempDir('postern-dane-'));
  const cert = ca.issue(['mx.tls.example']);
  spki = createHash('sha256').update(new X509Certificate(cert.cert).publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
  wrong = createHash('sha256').update('another key').digest('hex');
  // 127.0.0.4 presents its chain (leaf and the test CA): a DANE-TA(2) record names the CA.
  const caPem = readFileSync(ca.caFile, 'utf8');
  const taLeaf = ca.issue(['mx.dane-ta.example']);
  const caHash = createHash('sha256').update(new X509Certificate(caPem).raw).digest('hex');
  [plain, tlsSink, taSink] = (await startSinks(['127.0.0.2', '127.0.0.3', '127.0.0.4'], {
    tls: [false, true, true],
    certs: [undefined, cert, { key: taLeaf.key, cert: `${taLeaf.cert}${caPem}` }],
  })) as [Sink, Sink, Sink];
  // Each case is a zone of its own: the MX host name is inside the zone, so its address and
  // TLSA records are as secure (or not) as the zone.
  const zone = (origin: string, address: string, extra: string[] = []) => [`${origin}. 300 IN MX 10 mx.${origin}.`, `mx.${origin}. 300 IN A ${address}`, ...extra];
  dns = await startSignedDns([
    { origin: 'dane-ok.example', signed: true, records: zone('dane-ok.example', '127.0.0.3', [tlsa('mx.dane-ok.example.', spki), tlsa('mx.dane-ok.example.', wrong)]) },
    { origin: 'dane-wrong.example', signed: true, records: zone('dane-wrong.example', '127.0.0.3', [tlsa('mx.dane-wrong.example.', wrong)]) },
    { origin: 'dane-bogus.example', signed: true, bogus: true, records: zone('dane-bogus.example', '127.0.0.3', [tlsa('mx.dane-bogus.example.', spki)]) },
    { origin: 'dane-ta.example', signed: true, records: zone('dane-ta.example', '127.0.0.4', [`_25._tcp.mx.dane-ta.example. 300 IN TLSA 2 0 1 ${caHash}`]) },
    // The same server and chain under another MX name: a TA record needs the name to match.
    { origin: 'dane-ta-name.example', signed: true, records: zone('dane-ta-name.example', '127.0.0.4', [`_25._tcp.mx.dane-ta-name.example. 300 IN TLSA 2 0 1 ${caHash}`]) },
    { origin: 'unsigned.example', signed: false, records: zone('unsigned.example', '127.0.0.2', [tlsa('mx.unsigned.example.', wrong)]) },
    { origin: 'signed-no-tlsa.example', signed: true, records: zone('signed-no-tlsa.example', '127.0.0.2') },
    // A DANE host that does not answer (127.0.0.9), and a backup MX in an unsigned zone that
    // the domain's MTA-STS enforce policy governs.
    {
      origin: 'mixed.example',
      signed: true,
      records: [
        ...zone('mixed.example', '127.0.0.9', [tlsa('mx.mixed.example.', spki)]),
        'mixed.example. 300 IN MX 20 mx.unsigned.example.',
        '_mta-sts.mixed.example. 300 IN TXT "v=STSv1; id=1;"',
        'mta-sts.mixed.example. 300 IN A 127.0.0.5',
      ],
    },
  ]);
  const sts = https.createServer(ca.issue(['mta-sts.mixed.example']), (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('version: STSv1\r\nmode: enforce\r\nmx: mx.mixed.example\r\nmx: mx.unsigned.example\r\nmax_age: 86400\r\n');
  });
  policyServer = sts;
  await new Promise<void>((r) => sts.listen(0, '127.0.0.5', r));
  h = await startHarness({
    records: [],
    port: plain.port,
    config: { delivery: { dns_servers: [dns.resolver], dane: 'auto', mta_sts_port: (sts.address() as AddressInfo).port, tls_ca_file: ca.caFile, tls_reports: true } },
  });
});
afterAll(async () => {
  await closeDeliveryFixtures();
  await dns?.stop();
  await new Promise((r) => (policyServer ? policyServer.close(r) : r(undefined)));
});

const rcpt = async (id: string) => (await h.store.delivery.recipients(id))[0]!;
const got = (sink: Sink, to: string) => sink.messages.filter((m) => m.to.includes(to)).length;

describe.skipIf(!dnssecToolsAvailable())('DANE in delivery', () => {
  it('delivers over TLS to an MX whose certificate matches its DNSSEC-secure DANE-EE record, and records dane', async () => {
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dane-ok.example'] });
    await h.drain();
    expect(got(tlsSink, 'bob@dane-ok.example')).toBe(1);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ mx: 'mx.dane-ok.example', tls_policy: 'dane', tls_verified: true, tls_version: expect.stringMatching(/^TLSv1\.[23]$/) });
    // The TLS report's session: policy tlsa, its policy-string the TLSA records in presentation
    // form (RFC 8460 4.4), sorted whatever order DNS gave them in.
    const day = new Date(h.clock.now()).toISOString().slice(0, 10);
    const records = [`3 1 1 ${spki.toUpperCase()}`, `3 1 1 ${wrong.toUpperCase()}`].sort().join('\n');
    expect((await h.store.tlsReports.entries(day)).filter((e) => e.policyDomain === 'dane-ok.example')).toEqual([
      expect.objectContaining({ policyType: 'tlsa', policyString: records, mxHost: 'mx.dane-ok.example', result: 'success', count: 1 }),
    ]);
  });

  it('delivers under a DANE-TA record that names the CA of the chain the server presents, for the MX name its certificate holds', async () => {
    const ok = await h.submit({ from: 'alice@sender.example', to: ['bob@dane-ta.example'] });
    const other = await h.submit({ from: 'alice@sender.example', to: ['bob@dane-ta-name.example'] });
    await h.drain();
    expect(got(taSink, 'bob@dane-ta.example')).toBe(1);
    expect(h.logs.events('delivery.ok').find((e) => e.queue_id === ok)).toMatchObject({ tls_policy: 'dane', tls_verified: true });
    expect(got(taSink, 'bob@dane-ta-name.example')).toBe(0);
    expect(await rcpt(other)).toMatchObject({ statusCode: '4.7.5', lastError: expect.stringContaining('ETLS DANE: the certificate is not valid for mx.dane-ta-name.example') });
  });

  it('defers with 4.7.5 naming DANE when no TLSA record matches the certificate, and sends nothing', async () => {
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dane-wrong.example'] });
    await h.drain();
    expect(got(tlsSink, 'bob@dane-wrong.example')).toBe(0);
    expect(await rcpt(id)).toMatchObject({
      status: 'pending',
      statusCode: '4.7.5',
      lastError: expect.stringMatching(/^DANE: dane-wrong\.example: no MX host could be authenticated by its TLSA records; last mx\.dane-wrong\.example: ETLS DANE: no TLSA record of mx\.dane-wrong\.example matches the certificate it presented/),
      lastTls: { version: null, verified: false, policy: 'dane' },
    });
  });

  it('defers, without connecting, when the TLSA records fail DNSSEC validation (bogus)', async () => {
    const before = tlsSink.connections;
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@dane-bogus.example'] });
    await h.drain();
    expect(tlsSink.connections).toBe(before);
    expect(await rcpt(id)).toMatchObject({ status: 'pending', statusCode: '4.7.5', lastError: expect.stringContaining('failed DNSSEC validation') });
    expect(h.logs.events('delivery.dane_refused').find((e) => e.queue_id === id)).toMatchObject({ domain: 'dane-bogus.example', reason: 'tlsa-bogus' });
  });

  it('keeps the MTA-STS policy for the MX hosts without DANE: the unsigned backup MX gets verified TLS or nothing', async () => {
    const id = await h.submit({ from: 'alice@sender.example', to: ['bob@mixed.example'] });
    await h.drain();
    expect(got(plain, 'bob@mixed.example')).toBe(0);
    expect(await rcpt(id)).toMatchObject({ status: 'pending', statusCode: '4.7.5', lastError: expect.stringMatching(/^MTA-STS policy of mixed\.example \(enforce\) requires TLS with a certificate valid for mx\.unsigned\.example: ETLS /) });
    expect(h.logs.events('delivery.mx_unusable').filter((e) => e.queue_id === id).map((e) => e.mx)).toEqual(['mx.mixed.example', 'mx.unsigned.example']);
  });

  it('falls back to opportunistic TLS for an unsigned zone, whatever TLSA records it has, and for a signed zone without TLSA', async () => {
    const a = await h.submit({ from: 'alice@sender.example', to: ['bob@unsigned.example'] });
    const b = await h.submit({ from: 'alice@sender.example', to: ['bob@signed-no-tlsa.example'] });
    await h.drain();
    expect(got(plain, 'bob@unsigned.example')).toBe(1);
    expect(got(plain, 'bob@signed-no-tlsa.example')).toBe(1);
    for (const id of [a, b]) expect(h.logs.events('delivery.ok').find((e) => e.queue_id === id)).toMatchObject({ tls_policy: 'opportunistic', tls_version: null });
  });
});

if (!dnssecToolsAvailable()) console.warn(NO_DNSSEC_MESSAGE);
