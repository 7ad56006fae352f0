import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundledData, geoDataDates, GeoDbError, loadGeo, versionDate, type GeoDb } from '../../src/geo/index.js';
import { isSpecial, parseAddress } from '../../src/geo/ip.js';
import { writeMmdb } from './mmdb-writer.js';

let dir: string;
const file = (name: string, text: string | Buffer) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};
// The other half in tests about one half: the bundled data would cost half a second a load.
const smallCountry = () => file('small-country.csv', '1.0.0.0,1.0.0.255,AU\n');
const smallAsn = () => file('small-asn.csv', '1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."\n');
const place = (country: string | null, asn: number | null = null, org: string | null = null) => ({ country, asn, org });

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'postern-geo-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('address parsing', () => {
  const words = (ip: string) => {
    const w = new Uint32Array(4);
    const family = parseAddress(ip, w);
    return family === 0 ? null : [family, ...Array.from(w, (x) => x.toString(16))];
  };
  it.each([
    ['8.8.8.8', [4, '0', '0', '0', '8080808']],
    ['255.255.255.255', [4, '0', '0', '0', 'ffffffff']],
    ['::ffff:8.8.8.8', [4, '0', '0', '0', '8080808']],
    ['::FFFF:0808:0808', [4, '0', '0', '0', '8080808']],
    ['::', [6, '0', '0', '0', '0']],
    ['::1', [6, '0', '0', '0', '1']],
    ['1::', [6, '10000', '0', '0', '0']],
    ['2001:4860:4860::8888', [6, '20014860', '48600000', '0', '8888']],
    ['2001:db8:0:0:1:0:0:1', [6, '20010db8', '0', '10000', '1']],
    ['2c0f:e9a0:2:0:0:0:2a::', [6, '2c0fe9a0', '20000', '0', '2a0000']],
    ['fe80::1%eth0', [6, 'fe800000', '0', '0', '1']],
    ['64:ff9b::192.0.2.33', [6, '64ff9b', '0', '0', 'c0000221']],
  ])('%s is %j', (ip, want) => {
    expect(words(ip)).toEqual(want);
  });

  it.each(['', 'junk', '1.2.3', '1.2.3.4.5', '1.2.3.256', '1..2.3', '::1::', '1:2:3:4:5:6:7:8:9', '12345::', ':1', '1:', 'g::1', '1.2.3.4:25', '::ffff:1.2.3', '١.٢.٣.٤', '2130706433'])(
    '%j is not an address',
    (ip) => {
      expect(words(ip)).toBeNull();
    },
  );

  it.each([
    ['127.0.0.2', true],
    ['10.1.2.3', true],
    ['100.64.0.1', true],
    ['169.254.9.9', true],
    ['172.31.255.255', true],
    ['172.32.0.1', false],
    ['192.168.1.1', true],
    ['198.51.100.7', true],
    ['203.0.113.9', true],
    ['224.0.0.1', true],
    ['255.255.255.255', true],
    ['8.8.8.8', false],
    ['::1', true],
    ['fe80::1', true],
    ['fd12:3456::1', true],
    ['ff02::1', true],
    ['2001:db8::1', true],
    ['3fff::1', true],
    ['2001:2::1', true],
    ['2001:0:4136:e378::1', false],
    ['2001:4860::1', false],
    ['2a00:1450::1', false],
  ])('%s special-use: %s', (ip, special) => {
    const w = new Uint32Array(4);
    const family = parseAddress(ip, w);
    expect(family).not.toBe(0);
    expect(isSpecial(family as 4 | 6, w)).toBe(special);
  });
});

describe('the bundled database', () => {
  let db: GeoDb;
  beforeAll(async () => {
    db = await loadGeo({ countryDb: '', asnDb: '' });
  });

  // Each checked against the rows of the pinned package version (asn-ipv4.csv line 5321
  // "8.8.8.0,8.8.8.255,15169,Google LLC", and so on).
  it.each([
    ['8.8.8.8', place('US', 15169, 'Google LLC')],
    ['::ffff:8.8.8.8', place('US', 15169, 'Google LLC')],
    ['1.1.1.1', place('AU', 13335, 'Cloudflare, Inc.')],
    ['9.9.9.9', place('US', 19281, 'Quad9')],
    ['193.0.6.139', place('NL', 3333, 'Reseaux IP Europeens Network Coordination Centre (RIPE NCC)')],
    ['2001:4860:4860::8888', place('US', 15169, 'Google LLC')],
    ['2606:4700:4700::1111', place('US', 13335, 'Cloudflare, Inc.')],
    ['2001:67c:2e8::2', place('NL', 3333, 'Reseaux IP Europeens Network Coordination Centre (RIPE NCC)')],
    // A geofeed /32 carved out of a whois block (2.58.196.0-2.58.197.255 DE): the narrower wins.
    ['2.58.197.15', place('BE', null, null)],
    ['2.58.197.14', place('DE', null, null)],
    ['2.58.197.16', place('DE', null, null)],
  ])('places %s', (ip, want) => {
    const got = db.lookup(ip);
    expect(got.country).toBe(want.country);
    if (want.asn !== null) expect(got).toEqual(want);
  });

  it('places no private or special-use address, even where its rows cover one', () => {
    // The rows are there (the data is registry data, not routing truth)...
    const { files } = bundledData('country');
    const v4 = readFileSync(files[0]!, 'latin1');
    expect(v4).toContain('\n3232235520,3232301055,AU\n'); // 192.168.0.0/16
    expect(v4).toContain('\n2886729728,2887778303,AU\n'); // 172.16.0.0/12
    expect(v4).toContain('\n3325256704,3325256959,AU\n'); // 198.51.100.0/24
    expect(readFileSync(files[1]!, 'latin1')).toContain('\n2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,JP\n');
    // ...and nothing comes of them.
    for (const ip of ['192.168.1.1', '172.16.0.1', '198.51.100.7', '2001:db8::1', '127.0.0.1', '10.1.2.3', '100.64.0.1', '169.254.1.1', '224.0.0.1', '::1', 'fe80::1%eth0', 'fd12:3456::1', '::ffff:10.0.0.1', '', 'junk']) {
      expect(db.lookup(ip), ip).toEqual(place(null));
    }
  });

  it('describes itself: packages, data date from the version, size', () => {
    const info = db.info();
    expect(info.countrySource).toBe('bundled @ip-location-db/geo-whois-asn-country 2.3.2026061719');
    expect(info.asnSource).toBe('bundled @ip-location-db/asn 2.3.2026061719');
    expect(info.builtAt).toEqual(new Date('2026-06-17T19:00:00Z'));
    expect(info.rows).toBeGreaterThan(1_000_000);
    expect(info.bytes).toBeGreaterThan(10 * 2 ** 20);
    expect(info.bytes).toBeLessThan(60 * 2 ** 20);
  });

  it('reads the data date without loading the data', async () => {
    const dates = await geoDataDates({ countryDb: '', asnDb: [] });
    expect(dates.country).toEqual({ source: 'bundled @ip-location-db/geo-whois-asn-country 2.3.2026061719', builtAt: new Date('2026-06-17T19:00:00Z') });
    expect(dates.asn.builtAt).toEqual(new Date('2026-06-17T19:00:00Z'));
    expect(versionDate('2.3.2026061719')).toEqual(new Date('2026-06-17T19:00:00Z'));
    expect(versionDate('1.0.0')).toBeNull();
  });
});

describe('CSV files of your own', () => {
  // What the login tests do: loopback slices placed in countries and networks.
  const COUNTRY = `first_ip,last_ip,country
# loopback, cut into countries
127.0.0.0,127.0.0.127,DE\r
127.0.0.128,127.0.0.255,fr

::1,::1,AT
2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,PT
::ffff:127.0.1.0,::ffff:127.0.1.255,ES
`;
  const ASN = `127.0.0.0,127.0.0.127,3320,Deutsche Telekom AG
127.0.0.128,127.0.0.191,AS16276,"OVH SAS"
127.0.0.192,127.0.0.255,64500,"Example ""Quoted"", Ltd"
127.0.1.0,127.0.1.255,0,not routed
::1,::1,3320,Deutsche Telekom AG`;

  it('places loopback and documentation addresses as the file says, in text form', async () => {
    const db = await loadGeo({ countryDb: file('country.csv', COUNTRY), asnDb: file('asn.csv', ASN) });
    expect(db.lookup('127.0.0.2')).toEqual(place('DE', 3320, 'Deutsche Telekom AG'));
    expect(db.lookup('::ffff:127.0.0.2')).toEqual(place('DE', 3320, 'Deutsche Telekom AG'));
    expect(db.lookup('127.0.0.130')).toEqual(place('FR', 16276, 'OVH SAS'));
    expect(db.lookup('127.0.0.200')).toEqual(place('FR', 64500, 'Example "Quoted", Ltd'));
    // AS0 (RFC 7607) is no network.
    expect(db.lookup('127.0.1.1')).toEqual(place('ES'));
    expect(db.lookup('::1')).toEqual(place('AT', 3320, 'Deutsche Telekom AG'));
    expect(db.lookup('2001:db8::25')).toEqual(place('PT'));
    expect(db.lookup('127.0.2.1')).toEqual(place(null));
    expect(db.lookup('8.8.8.8')).toEqual(place(null));
  });

  it('reads the -num form, IPv4 and IPv6 in one file or in two', async () => {
    // 127.0.0.0 = 2130706432; 2001:db8:: = 42540766411282592856903984951653826560.
    const num = file('num.csv', '2130706432,2130706559,DE\n2130706560,2130706687,FR\n42540766411282592856903984951653826560,42540766490510755371168322545197776895,PT\n');
    const v4 = file('c-ipv4.csv', '127.0.0.0,127.0.0.127,DE\n127.0.0.128,127.0.0.255,FR\n');
    const v6 = file('c-ipv6-num.csv', '42540766411282592856903984951653826560,42540766490510755371168322545197776895,PT\n');
    const asn = file('asn-num.csv', '2130706432,2130706687,3320,Deutsche Telekom AG\n');
    for (const countryDb of [num, [v4, v6]]) {
      const db = await loadGeo({ countryDb, asnDb: asn });
      expect(db.lookup('127.0.0.2')).toEqual(place('DE', 3320, 'Deutsche Telekom AG'));
      expect(db.lookup('127.0.0.200')).toEqual(place('FR', 3320, 'Deutsche Telekom AG'));
      expect(db.lookup('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff')).toEqual(place('PT'));
      expect(db.lookup('2001:db9::')).toEqual(place(null));
    }
  });

  it('takes a small number for IPv6 only in a file named for IPv6', async () => {
    const asn = file('asn-tiny.csv', '::1,::1,3320,X\n');
    const mixed = await loadGeo({ countryDb: file('mixed-num.csv', '1,1,AT\n'), asnDb: asn });
    expect([mixed.lookup('0.0.0.1').country, mixed.lookup('::1').country]).toEqual(['AT', null]);
    const v6 = await loadGeo({ countryDb: file('geo-ipv6-num.csv', '1,1,AT\n'), asnDb: asn });
    expect([v6.lookup('0.0.0.1').country, v6.lookup('::1').country]).toEqual([null, 'AT']);
  });

  it('takes rows in any order, and where they overlap the narrower range wins', async () => {
    const db = await loadGeo({
      countryDb: file('overlap.csv', '127.0.0.128,127.0.0.255,FR\n127.0.0.0,127.0.0.255,DE\n127.0.0.2,127.0.0.2,PT\n127.0.0.100,127.0.0.150,ES\n'),
      asnDb: file('asn2.csv', '127.0.0.0,127.255.255.255,3320,Deutsche Telekom AG\n127.0.0.0,127.255.255.255,16276,OVH SAS\n'),
    });
    const at = (ip: string) => db.lookup(ip).country;
    // ES (51 addresses) is narrower than FR (128) where they overlap.
    const want = { '127.0.0.1': 'DE', '127.0.0.2': 'PT', '127.0.0.3': 'DE', '127.0.0.99': 'DE', '127.0.0.100': 'ES', '127.0.0.128': 'ES', '127.0.0.150': 'ES', '127.0.0.151': 'FR', '127.0.0.255': 'FR', '127.0.1.0': null };
    expect(Object.fromEntries(Object.keys(want).map((ip) => [ip, at(ip)]))).toEqual(want);
    // Of two equal ranges, the later row.
    expect(db.lookup('127.1.2.3').asn).toBe(16276);
    // DE, PT, DE, ES, FR; and one ASN row.
    expect(db.info().rows).toBe(5 + 1);
  });

  it('agrees with a brute-force reading of random overlapping rows, IPv4 and IPv6', async () => {
    // Seeded, so that a failure can be replayed.
    let seed = 17;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const codes = ['DE', 'FR', 'AT', 'PT', 'ES'];
    const rows: [number, number, string][] = [];
    for (let i = 0; i < 400; i++) {
      const s = rnd(1024);
      rows.push([s, Math.min(1023, s + [0, 3, 30, 300][rnd(4)]! + rnd(8)), codes[rnd(5)]!]);
    }
    const v4 = (x: number) => `127.0.${x >> 8}.${x & 255}`;
    const v6 = (x: number) => `2001:db8::${x.toString(16)}`;
    const text = rows.map(([s, e, c]) => `${v4(s)},${v4(e)},${c}\n${v6(s)},${v6(e)},${c}`).join('\n');
    const db = await loadGeo({ countryDb: file('random.csv', text), asnDb: smallAsn() });
    for (let x = 0; x < 1024; x++) {
      // The narrowest row holding x; of equal ones, the later.
      let best: [number, number, string] | null = null;
      for (const r of rows) if (r[0] <= x && x <= r[1] && (best === null || r[1] - r[0] <= best[1] - best[0])) best = r;
      const want = best === null ? null : best[2];
      expect([db.lookup(v4(x)).country, db.lookup(v6(x)).country], `${x}`).toEqual([want, want]);
    }
  });

  it('dates a file by its mtime and names it as configured', async () => {
    const c = file('dated.csv', '127.0.0.0,127.0.0.255,DE\n');
    utimesSync(c, new Date('2026-01-02T03:04:05Z'), new Date('2026-01-02T03:04:05Z'));
    const db = await loadGeo({ countryDb: c, asnDb: '' });
    expect(db.info()).toMatchObject({ countrySource: c, asnSource: 'bundled @ip-location-db/asn 2.3.2026061719', countryBuiltAt: new Date('2026-01-02T03:04:05Z'), builtAt: new Date('2026-01-02T03:04:05Z') });
    expect((await geoDataDates({ countryDb: c, asnDb: '' })).country).toEqual({ source: c, builtAt: new Date('2026-01-02T03:04:05Z') });
    // The bundled ASN half still keeps special-use addresses out; this file places them.
    expect(db.lookup('127.0.0.9')).toEqual(place('DE'));
  });

  it.each([
    ['country', '127.0.0.0,127.0.0.255,DE\n127.0.0.1.5,127.0.1.255,FR\n', 'line 2: bad address "127.0.0.1.5"'],
    ['country', '127.0.0.0,127.0.0.255,DEU\n', 'line 1: bad country code "DEU": expected two letters (ISO 3166-1)'],
    ['country', '127.0.0.0,127.0.0.255,D1\n', 'line 1: bad country code "D1": expected two letters (ISO 3166-1)'],
    ['country', '\n\n127.0.0.0,127.0.0.255\n', 'line 3: expected first_ip,last_ip,country'],
    ['country', '127.0.0.9,127.0.0.1,DE\n', 'line 1: first_ip is after last_ip'],
    ['country', '127.0.0.0,::1,DE\n', 'line 1: first_ip and last_ip are not the same kind of address'],
    ['country', '2130706432,127.0.0.1,DE\n', 'line 1: first_ip and last_ip are not the same kind of address'],
    ['country', '1.0.0.0,1.0.0.255,AU\n2001:zz::,2001:zz::ff,AU\n', 'line 2: bad address "2001:zz::"'],
    ['country', '', 'is empty'],
    ['country', 'first_ip,last_ip,country\n# nothing yet\n', 'holds no ranges (expected lines of first_ip,last_ip,country)'],
    ['asn', '127.0.0.0,127.0.0.255,AS-X,Foo\n', 'line 1: bad ASN "AS-X"'],
    ['asn', '127.0.0.0,127.0.0.255,99999999999,Foo\n', 'line 1: bad ASN "99999999999"'],
    ['asn', '127.0.0.0,127.0.0.255\n', 'line 1: expected first_ip,last_ip,asn,organisation'],
  ])('a bad %s file is refused with its name and line: %j', async (kind, text, problem) => {
    const p = file(`bad-${kind}.csv`, text);
    const opts = kind === 'country' ? { countryDb: p, asnDb: smallAsn() } : { countryDb: smallCountry(), asnDb: p };
    const err = await loadGeo(opts).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GeoDbError);
    expect((err as Error).message).toBe(`${kind}_db = ${p}: ${problem}`);
  });

  it('reads long lines, up to half a megabyte', async () => {
    const org = 'x'.repeat(200_000);
    const db = await loadGeo({ countryDb: smallCountry(), asnDb: file('long.csv', `1.0.0.0,1.0.0.255,13335,${org}\n1.0.1.0,1.0.1.255,64500,Short\n`) });
    expect(db.lookup('1.0.0.1').org).toBe(org);
    expect(db.lookup('1.0.1.1').org).toBe('Short');
    const p = file('longer.csv', `1.0.0.0,1.0.0.255,13335,Short\n1.0.1.0,1.0.1.255,64500,${'x'.repeat(600_000)}\n`);
    await expect(loadGeo({ countryDb: smallCountry(), asnDb: p })).rejects.toThrow(`asn_db = ${p}: line 2: line longer than 524288 bytes`);
  });

  it('says what is wrong with a missing or compressed file', async () => {
    const missing = path.join(dir, 'nope.csv');
    await expect(loadGeo({ countryDb: missing, asnDb: smallAsn() })).rejects.toThrow(`country_db = ${missing}: cannot be read (ENOENT)`);
    const gz = file('asn.csv.gz', gzipSync('127.0.0.0,127.0.0.255,3320,X\n'));
    await expect(loadGeo({ countryDb: smallCountry(), asnDb: gz })).rejects.toThrow(`asn_db = ${gz}: is gzip-compressed: unpack it first (gunzip)`);
  });
});

describe('MaxMind DB files', () => {
  const epoch = Date.UTC(2026, 10, 3, 12) / 1000;
  const names = (en: string) => ({ en, de: en });
  const countryMmdb = (recordSize: 24 | 28 | 32 = 24) =>
    writeMmdb({
      ipVersion: 6,
      recordSize,
      databaseType: 'GeoLite2-Country',
      buildEpoch: epoch,
      networks: [
        ['127.0.0.0/25', { continent: { code: 'EU', names: names('Europe') }, country: { iso_code: 'DE', geoname_id: 2921044, names: names('Germany') }, registered_country: { iso_code: 'DE', names: names('Germany') } }],
        ['127.0.0.128/25', { country: { iso_code: 'FR', names: names('France'), is_in_european_union: true } }],
        ['2001:db8::/32', { country: { iso_code: 'PT', names: names('Portugal') } }],
        ['2001:db9::/32', { registered_country: { iso_code: 'ES', names: names('Spain') } }],
      ],
    });
  const asnMmdb = (recordSize: 24 | 28 | 32 = 24) =>
    writeMmdb({
      ipVersion: 6,
      recordSize,
      databaseType: 'GeoLite2-ASN',
      buildEpoch: epoch,
      networks: [
        ['127.0.0.0/24', { autonomous_system_number: 3320, autonomous_system_organization: 'Deutsche Telekom AG' }],
        ['2001:db8::/32', { autonomous_system_number: 4_200_000_001, autonomous_system_organization: 'Private Use' }],
      ],
    });

  it.each([24, 28, 32] as const)('reads GeoLite2-Country and GeoLite2-ASN files (%i-bit records)', async (bits) => {
    const c = file(`GeoLite2-Country-${bits}.mmdb`, countryMmdb(bits));
    const a = file(`GeoLite2-ASN-${bits}.mmdb`, asnMmdb(bits));
    const db = await loadGeo({ countryDb: c, asnDb: a });
    expect(db.lookup('127.0.0.2')).toEqual(place('DE', 3320, 'Deutsche Telekom AG'));
    expect(db.lookup('::ffff:127.0.0.2')).toEqual(place('DE', 3320, 'Deutsche Telekom AG'));
    expect(db.lookup('127.0.0.200')).toEqual(place('FR', 3320, 'Deutsche Telekom AG'));
    expect(db.lookup('2001:db8::1')).toEqual(place('PT', 4_200_000_001, 'Private Use'));
    // Only a registered country: where the network is registered is not where it is used.
    expect(db.lookup('2001:db9::1')).toEqual(place(null));
    expect(db.lookup('127.0.1.1')).toEqual(place(null));
    expect(db.lookup('8.8.8.8')).toEqual(place(null));
    const built = new Date(epoch * 1000);
    expect(db.info()).toMatchObject({ countrySource: c, asnSource: a, builtAt: built, countryBuiltAt: built, asnBuiltAt: built });
    expect(await geoDataDates({ countryDb: c, asnDb: a })).toEqual({ country: { source: c, builtAt: built }, asn: { source: a, builtAt: built } });
  });

  it('answers null for IPv6 from an IPv4-only file instead of walking its tree with the wrong bits', async () => {
    const c = file('v4.mmdb', writeMmdb({ ipVersion: 4, databaseType: 'GeoIP2-Country', buildEpoch: epoch, networks: [['127.0.0.0/8', { country: { iso_code: 'AT' } }], ['1.0.0.0/8', { country: { iso_code: 'US' } }]] }));
    const db = await loadGeo({ countryDb: c, asnDb: file('asn-none.csv', '127.0.0.0,127.0.0.255,3320,X\n') });
    expect(db.lookup('127.9.9.9').country).toBe('AT');
    expect(db.lookup('::ffff:127.9.9.9').country).toBe('AT');
    expect(db.lookup('1.2.3.4').country).toBe('US');
    expect(db.lookup('::1').country).toBeNull();
  });

  it('refuses a file that is not a MaxMind DB, or the wrong kind of one', async () => {
    const junk = file('junk.mmdb', 'this is no database\n');
    await expect(loadGeo({ countryDb: junk, asnDb: smallAsn() })).rejects.toThrow(new RegExp(`^country_db = ${junk}: is not a MaxMind DB file \\(`));
    const a = file('GeoLite2-ASN-2.mmdb', asnMmdb());
    await expect(loadGeo({ countryDb: a, asnDb: smallAsn() })).rejects.toThrow(`country_db = ${a}: is a GeoLite2-ASN database: country_db needs a Country or City database`);
    const c = file('GeoLite2-Country-2.mmdb', countryMmdb());
    await expect(loadGeo({ countryDb: smallCountry(), asnDb: c })).rejects.toThrow(`asn_db = ${c}: is a GeoLite2-Country database: asn_db needs an ASN database`);
    await expect(loadGeo({ countryDb: [c, smallCountry()], asnDb: smallAsn() })).rejects.toThrow('a .mmdb file must be the only file of its database');
  });
});
