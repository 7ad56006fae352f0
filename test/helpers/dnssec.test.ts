import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Answer } from 'dns-packet';
import { dnsQuery, dnssecToolsAvailable, NO_DNSSEC_MESSAGE, startSignedDns, type SignedDns, type TestZone } from './dnssec.js';

const HASH = 'a3'.repeat(32);
/** The same mail setup in a zone: an MX, its address and a DANE-EE TLSA record for port 25. */
const mailZone = (origin: string, more: Partial<TestZone>): TestZone => ({
  origin,
  signed: true,
  records: [
    `${origin}. 300 IN MX 10 mx.${origin}.`,
    `mx.${origin}. 300 IN A 127.0.0.2`,
    `_25._tcp.mx.${origin}. 300 IN TLSA 3 1 1 ${HASH}`,
  ],
  ...more,
});

const data = (answers: Answer[], type: string): unknown[] => answers.flatMap((a) => (a.type === type && 'data' in a ? [a.data] : []));
const tlsa = (answers: Answer[]) =>
  (data(answers, 'TLSA') as Array<{ usage: number; selector: number; matchingType: number; certificate: Buffer }>).map(
    (t) => `${t.usage} ${t.selector} ${t.matchingType} ${t.certificate.toString('hex')}`,
  );

if (!dnssecToolsAvailable()) console.warn(NO_DNSSEC_MESSAGE);

describe.skipIf(!dnssecToolsAvailable())('a signed test zone behind a validating resolver (nsd + unbound)', () => {
  let dns: SignedDns;
  beforeAll(async () => {
    dns = await startSignedDns([
      mailZone('dane.example', {}),
      mailZone('plain.example', { signed: false }),
      mailZone('bogus.example', { bogus: true }),
    ]);
  });
  afterAll(() => dns?.stop());

  it('validates the signed zone: MX, A and TLSA answers carry AD and their RRSIGs', async () => {
    const mx = await dnsQuery(dns.resolver, 'dane.example', 'MX');
    expect([mx.rcode, mx.ad]).toEqual([0, true]);
    expect(data(mx.answers, 'MX')).toEqual([{ preference: 10, exchange: 'mx.dane.example' }]);
    expect(data(mx.answers, 'RRSIG')).toHaveLength(1);
    const a = await dnsQuery(dns.resolver, 'mx.dane.example', 'A');
    expect([a.rcode, a.ad, data(a.answers, 'A')]).toEqual([0, true, ['127.0.0.2']]);
    const t = await dnsQuery(dns.resolver, '_25._tcp.mx.dane.example', 'TLSA');
    expect([t.rcode, t.ad, tlsa(t.answers)]).toEqual([0, true, [`3 1 1 ${HASH}`]]);
    // A name the signed zone lacks is a validated NXDOMAIN (NSEC proof).
    const nx = await dnsQuery(dns.resolver, '_25._tcp.nothing.dane.example', 'TLSA');
    expect([nx.rcode, nx.ad]).toEqual([3, true]);
  });

  it('sets AD when the query carries the AD bit or DO, not when it carries neither', async () => {
    const adOnly = await dnsQuery(dns.resolver, 'mx.dane.example', 'A', { dnssecOk: false });
    expect([adOnly.ad, data(adOnly.answers, 'RRSIG')]).toEqual([true, []]);
    const doOnly = await dnsQuery(dns.resolver, 'mx.dane.example', 'A', { adBit: false });
    expect(doOnly.ad).toBe(true);
    const neither = await dnsQuery(dns.resolver, 'mx.dane.example', 'A', { adBit: false, dnssecOk: false });
    expect([neither.rcode, neither.ad, data(neither.answers, 'A')]).toEqual([0, false, ['127.0.0.2']]);
  });

  it('answers the unsigned zone without AD', async () => {
    const mx = await dnsQuery(dns.resolver, 'plain.example', 'MX');
    expect([mx.rcode, mx.ad, data(mx.answers, 'MX')]).toEqual([0, false, [{ preference: 10, exchange: 'mx.plain.example' }]]);
    const t = await dnsQuery(dns.resolver, '_25._tcp.mx.plain.example', 'TLSA');
    expect([t.rcode, t.ad, tlsa(t.answers)]).toEqual([0, false, [`3 1 1 ${HASH}`]]);
  });

  it('answers SERVFAIL for the RRset whose signature is broken, while the rest of that zone validates', async () => {
    const t = await dnsQuery(dns.resolver, '_25._tcp.mx.bogus.example', 'TLSA');
    expect([t.rcode, t.answers]).toEqual([2, []]);
    const a = await dnsQuery(dns.resolver, 'mx.bogus.example', 'A');
    expect([a.rcode, a.ad, data(a.answers, 'A')]).toEqual([0, true, ['127.0.0.2']]);
    // The data itself is as written: only a validating client can tell it is bogus.
    const raw = await dnsQuery(dns.authoritative, '_25._tcp.mx.bogus.example', 'TLSA');
    expect([raw.rcode, raw.aa, tlsa(raw.answers)]).toEqual([0, true, [`3 1 1 ${HASH}`]]);
    expect(dns.logs().unbound).toContain('validation failure <_25._tcp.mx.bogus.example. TLSA IN>');
  });

  it('refuses names outside the test zones itself, asking no other server', async () => {
    const started = performance.now();
    const res = await dnsQuery(dns.resolver, 'gmail.com', 'MX', { timeoutMs: 500 });
    expect(res.rcode).toBe(5);
    expect(performance.now() - started).toBeLessThan(500);
    // unbound's local-zone "." refuse answered: the question never reached the iterator.
    expect(dns.logs().unbound).toMatch(/\. refuse 127\.0\.0\.1@\d+ gmail\.com\. MX IN/);
  });
});
