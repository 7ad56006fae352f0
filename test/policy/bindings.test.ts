import { describe, expect, it } from 'vitest';
import { asciiDomain, canonicalAddress, canonicalNetwork, canonicalSenderBinding, envelopeAddress, networkAllowed, senderAllowed } from '../../src/policy/bindings.js';
import { judgeLogin, judgeRecipient, judgeSender } from '../../src/policy/access.js';
import { describePlace, loginDetail, loginDetailParts, placeAllowed, type LoginPlaces, type Placer } from '../../src/policy/places.js';
import { clientKey } from '../../src/policy/client.js';

describe('network bindings', () => {
  it.each([
    ['192.0.2.7', ['192.0.2.0/24'], true],
    ['192.0.3.7', ['192.0.2.0/24'], false],
    ['::ffff:192.0.2.7', ['192.0.2.0/24'], true],
    // A mapped network is the IPv4 network it stands for (::ffff:0:0/96 is 0.0.0.0/0).
    ['::ffff:192.0.2.7', ['::ffff:0:0/96'], true],
    ['192.0.2.7', ['::ffff:192.0.2.0/120'], true],
    ['192.0.2.7', ['::/0'], false],
    ['2001:db8::5', ['2001:db8::/32'], true],
    ['2001:db9::5', ['2001:db8::/32'], false],
    ['192.0.2.7', ['0.0.0.0/0'], true],
    ['2001:db8::5', ['0.0.0.0/0'], false],
    ['2001:db8::5', ['::/0'], true],
    ['192.0.2.7', [], false],
    ['not-an-ip', ['0.0.0.0/0'], false],
  ])('client %s against %j is %s', (ip, nets, ok) => {
    expect(networkAllowed(ip, nets)).toBe(ok);
  });

  it('canonicalises networks and refuses host bits and garbage', () => {
    expect(canonicalNetwork('192.0.2.7')).toBe('192.0.2.7/32');
    expect(canonicalNetwork('2001:DB8:0::/32')).toBe('2001:db8::/32');
    expect(() => canonicalNetwork('192.0.2.7/24')).toThrow('192.0.2.7/24 has host bits set; did you mean 192.0.2.0/24?');
    expect(() => canonicalNetwork('192.0.2.0/33')).toThrow();
    expect(() => canonicalNetwork('example.com')).toThrow();
  });
});

describe('sender bindings', () => {
  const senders = ['alice@example.com', '@example.org', canonicalSenderBinding('@bücher.example')!];
  it.each([
    ['alice@example.com', true],
    ['Alice@EXAMPLE.com', true],
    ['bob@example.com', false],
    ['anyone@example.org', true],
    ['x@sub.example.org', false],
    ['x@example.org.evil.example', false],
    ['x@xn--bcher-kva.example', true],
    ['x@bücher.example', true],
    ['', false],
    ['no-at-sign', false],
  ])('%j is allowed: %s', (addr, ok) => {
    expect(senderAllowed(addr, senders)).toBe(ok);
  });

  it('stores IDN domains as A-labels', () => {
    expect(canonicalSenderBinding('@Bücher.Example')).toBe('@xn--bcher-kva.example');
    expect(canonicalSenderBinding('Info@Bücher.example')).toBe('info@xn--bcher-kva.example');
    expect(canonicalSenderBinding('@')).toBeNull();
  });
});

describe('per-client keys', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::99', '2001:db8:1:2::/64'],
    ['2001:0DB8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['2001:0db8:0000:0000:ffff::2', '2001:db8:0:0::/64'],
    ['2001:db8::1.2.3.4', '2001:db8:0:0::/64'],
  ])('%s counts as %s', (ip, key) => {
    expect(clientKey(ip)).toBe(key);
  });
});

describe('access verdicts', () => {
  const nets = (...networks: string[]): LoginPlaces => ({ networks, countries: [], asns: [] });
  it('judges logins: suspended, no networks, foreign, allowed', () => {
    expect(judgeLogin('suspended', '192.0.2.1', nets('0.0.0.0/0'), null)).toMatchObject({ kind: 'reject', reason: { id: 'AUTH_SUSPENDED' } });
    // Suspended, from outside: the wrong-password reply, and it is another foreign-network signal.
    expect(judgeLogin('suspended', '203.0.113.9', nets('192.0.2.0/24'), null)).toMatchObject({ reason: { id: 'AUTH_FOREIGN_NETWORK' }, incident: { kind: 'foreign-network' } });
    expect(judgeLogin('active', '192.0.2.1', nets(), null)).toEqual({ kind: 'reject', reason: expect.objectContaining({ id: 'AUTH_NO_NETWORKS' }) });
    expect(judgeLogin('active', '203.0.113.9', nets('192.0.2.0/24'), null)).toMatchObject({ kind: 'reject', incident: { kind: 'foreign-network', suspend: true } });
    expect(judgeLogin('active', '192.0.2.1', nets('192.0.2.0/24'), null)).toEqual({ kind: 'accept' });
  });

  it('judges logins by country and AS; an address the database does not place matches only CIDRs', () => {
    const geo: Placer = {
      lookup: (ip) =>
        ({
          '203.0.113.9': { country: 'FR', asn: 16276, org: 'OVH' },
          '198.51.100.7': { country: 'DE', asn: 3320, org: 'Deutsche Telekom AG' },
          '2001:db8::7': { country: 'DE', asn: null, org: null },
        })[ip] ?? { country: null, asn: null, org: null },
    };
    const de = { networks: ['192.0.2.0/24'], countries: ['DE'], asns: [] };
    expect(judgeLogin('active', '198.51.100.7', de, geo)).toEqual({ kind: 'accept' });
    expect(judgeLogin('active', '2001:db8::7', de, geo)).toEqual({ kind: 'accept' });
    expect(judgeLogin('active', '203.0.113.9', de, geo)).toMatchObject({ kind: 'reject', incident: { kind: 'foreign-network', suspend: true } });
    // An unplaced address: only the CIDR can let it in.
    expect(judgeLogin('active', '10.1.2.3', de, geo)).toMatchObject({ reason: { id: 'AUTH_FOREIGN_NETWORK' } });
    expect(judgeLogin('active', '192.0.2.9', de, geo)).toEqual({ kind: 'accept' });
    // Without a database at hand, country bindings match nothing (they never let anyone in by default).
    expect(judgeLogin('active', '198.51.100.7', de, null)).toMatchObject({ reason: { id: 'AUTH_FOREIGN_NETWORK' } });
    // An AS binding alone is a binding: not "no networks".
    const ovh = { networks: [], countries: [], asns: ['16276'] };
    expect(judgeLogin('active', '203.0.113.9', ovh, geo)).toEqual({ kind: 'accept' });
    expect(judgeLogin('active', '198.51.100.7', ovh, geo)).toMatchObject({ reason: { id: 'AUTH_FOREIGN_NETWORK' } });
    expect(placeAllowed('::ffff:203.0.113.9', ovh, { lookup: (ip) => geo.lookup(ip.replace('::ffff:', '')) })).toBe(true);
    expect(describePlace('203.0.113.9', geo.lookup('203.0.113.9'))).toBe('203.0.113.9, FR, AS16276 OVH');
    expect(describePlace('2001:db8::7', geo.lookup('2001:db8::7'))).toBe('2001:db8::7, DE');
    expect(describePlace('10.1.2.3', geo.lookup('10.1.2.3'))).toBe('10.1.2.3');
    expect(describePlace('10.1.2.3', null)).toBe('10.1.2.3');
    expect(loginDetail('203.0.113.9, FR, AS16276 OVH', 'phone')).toBe('203.0.113.9, FR, AS16276 OVH; app password phone');
    expect(loginDetailParts(loginDetail('203.0.113.9, FR, AS16276 OVH', 'phone'))).toEqual({ place: '203.0.113.9, FR, AS16276 OVH', appLabel: 'phone' });
    expect(loginDetailParts('127.0.0.5')).toEqual({ place: '127.0.0.5', appLabel: null });
  });

  it('judges senders: only a foreign sender is a compromise signal', () => {
    expect(judgeSender('user', 'mallory@evil.example', ['@example.com'])).toMatchObject({ reason: { id: 'SENDER_NOT_BOUND' }, detail: '<mallory@evil.example>', incident: { kind: 'foreign-sender', suspend: true } });
    expect(judgeSender('user', '', ['@example.com'])).toEqual({ kind: 'reject', reason: expect.objectContaining({ id: 'SENDER_NULL' }) });
    expect(judgeSender('user', 'a@example.com', [])).toEqual({ kind: 'reject', reason: expect.objectContaining({ id: 'NO_SENDERS' }) });
    expect(judgeSender('device', 'x@evil.example', ['scan@example.com'])).toMatchObject({ incident: { kind: 'device-foreign-sender' } });
  });

  it('judges device recipients: none bound means any', () => {
    expect(judgeRecipient('x@anywhere.example', [])).toEqual({ kind: 'accept' });
    expect(judgeRecipient('ops@example.com', ['@example.com'])).toEqual({ kind: 'accept' });
    expect(judgeRecipient('x@evil.example', ['@example.com'])).toMatchObject({ kind: 'reject', incident: { kind: 'foreign-recipient' } });
  });
});

describe('address forms', () => {
  it.each([
    ['example.com', 'example.com'],
    ['EXAMPLE.com', 'example.com'],
    ['bücher.example', 'xn--bcher-kva.example'],
    ['BÜCHER.example', 'xn--bcher-kva.example'],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['ｅｘａｍｐｌｅ.com', null],
    ['exam\u00adple.com', null],
    ['\u212aexample.com', null],
    ['bu\u0308cher.example', null],
    ['xn--zz.example', null],
  ])('domain %j is %j', (domain, want) => {
    expect(asciiDomain(domain)).toBe(want);
  });

  it.each([
    ['Alice@Bücher.example', false, { ok: true, address: 'Alice@xn--bcher-kva.example' }],
    ['jörg@example.com', true, { ok: true, address: 'jörg@example.com' }],
    ['jörg@example.com', false, { ok: false, problem: 'needs-smtputf8' }],
    ['\u212aate@example.com', true, { ok: false, problem: 'not-normal' }],
    ['al\u00adice@example.com', true, { ok: false, problem: 'not-normal' }],
    ['alice@ｅｘａｍｐｌｅ.com', true, { ok: false, problem: 'not-normal' }],
    ['x@[192.0.2.1]', false, { ok: true, address: 'x@[192.0.2.1]' }],
    ['', false, { ok: true, address: '' }],
  ])('envelope address %j (SMTPUTF8 %s) is %j', (address, smtputf8, want) => {
    expect(envelopeAddress(address, smtputf8)).toEqual(want);
  });

  it('binds no address that is not in normal form, so a look-alike header From is never "bound"', () => {
    expect(canonicalAddress('kate@ｅｘａｍｐｌｅ.com')).toBeNull();
    expect(senderAllowed('\u212aate@example.com', ['kate@example.com'])).toBe(false);
    expect(senderAllowed('Kate@Example.COM', ['kate@example.com'])).toBe(true);
  });
});
