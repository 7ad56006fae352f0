import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ManualClock } from '../../src/domain/clock.js';
import { dmarcProblem } from '../../src/dns/checks/domain.js';
import { genericReason } from '../../src/dns/checks/identity.js';
import { healthy, runDoctor, type CheckResult } from '../../src/dns/doctor.js';
import type { LocalCertificate, LocalDkimKey } from '../../src/dns/local.js';
import { doctorDns } from '../../src/dns/lookup.js';
import { createResolver } from '../../src/dns/resolver.js';
import { bundledData } from '../../src/geo/index.js';
import { reverseName, startDnsServer, type DnsServer } from '../helpers/dnsd.js';
import {
  add,
  certificate,
  dkimValue,
  DOMAIN,
  drop,
  edit,
  goodZone,
  HELO,
  HOSTNAME,
  IP,
  newRsaKey,
  PTR,
  put,
  SELECTOR,
  type Edit,
} from '../helpers/doctorZone.js';

const NOW = Date.UTC(2026, 10, 22, 12, 0, 0);
const DAY = 86_400_000;

let dns: DnsServer;
let dkim: { privateKey: KeyObject; publicKey: KeyObject };
let cert: LocalCertificate;

beforeAll(async () => {
  dns = await startDnsServer();
  // 2048 bits, as postern dkim keygen makes: its record is longer than one 255-byte string.
  dkim = newRsaKey(2048);
  cert = { state: 'loaded', path: '/etc/postern/cert.pem', pem: (await certificate(HOSTNAME, NOW - DAY, NOW + 90 * DAY)).cert, selfSigned: false };
});
afterAll(() => dns.close());

function config(identity: Partial<Config['identity']> = {}): Config {
  return parseConfig(
    {
      server: { hostname: HOSTNAME, data_dir: '/var/lib/postern' },
      identity: { helo: HELO, ptr: PTR, outbound_ip: IP, ...identity },
      delivery: { dns_servers: [dns.address] },
    },
    '/',
  );
}

interface Run {
  identity?: Partial<Config['identity']>;
  /** [server] hostname, set after the config is parsed: the doctor is given names the schema would refuse. */
  hostname?: string;
  zone?: Edit[];
  dkimKeys?: LocalDkimKey[];
  certificate?: LocalCertificate;
}

async function doctor(r: Run = {}): Promise<CheckResult[]> {
  dns.setRecords(edit(goodZone(dkim.publicKey), r.zone ?? []));
  const parsed = config(r.identity);
  const cfg = r.hostname === undefined ? parsed : { ...parsed, server: { ...parsed.server, hostname: r.hostname } };
  return runDoctor(
    {
      config: cfg,
      domains: [DOMAIN],
      dkimKeys: r.dkimKeys ?? [{ domain: DOMAIN, selector: SELECTOR, path: '/var/lib/postern/dkim/example.com/s1.key', key: { publicKey: dkim.publicKey } }],
      certificate: r.certificate ?? cert,
    },
    { dns: doctorDns(createResolver(cfg.delivery.dns_servers, { timeoutMs: 1000, tries: 1 })), clock: new ManualClock(NOW) },
  );
}

const faults = (results: CheckResult[]) => results.filter((r) => r.status === 'FAIL' || r.status === 'WARN');

describe('postern doctor on a correct zone', () => {
  it('passes every check, in a fixed order', async () => {
    const results = await doctor();
    expect(results.filter((r) => r.status !== 'PASS')).toEqual([]);
    expect(healthy(results)).toBe(true);
    expect(results.map((r) => r.id)).toEqual([
      'identity.outbound_ip',
      'ptr.exists',
      'ptr.forward',
      'ptr.matches_config',
      'ptr.generic',
      'helo.syntax',
      'helo.cname',
      'helo.forward',
      'helo.not_ptr',
      'helo.same_domain',
      'helo.spf.exists',
      'helo.spf.authorises',
      'helo.spf.all',
      'ptr.null_mx',
      'ptr.null_spf',
      'helo.postmaster',
      'postmaster.route',
      'helo.csa',
      'helo.rp',
      'domain.spf.exists',
      'domain.spf.authorises',
      'domain.spf.all',
      'domain.dmarc',
      'domain.dkim',
      'domain.mx',
      'hostname.syntax',
      'hostname.forward',
      'hostname.postmaster',
      'tls.names',
      'tls.expiry',
    ]);
  });
});

const REV = '25.113.0.203.in-addr.arpa';
const GENERIC = '203-0-113-25.dyn.example.net';
const includes = Array.from({ length: 10 }, (_, i) => `s${i + 1}.example.com`);

/** The good zone broken one way at a time: exactly one check complains, with exactly this fix. */
const BROKEN: { name: string; run: Run; id: string; status: 'FAIL' | 'WARN'; fix: string }[] = [
  {
    name: 'a missing PTR fails ptr.exists and suggests the PTR record',
    run: { zone: [drop('PTR', REV)] },
    id: 'ptr.exists',
    status: 'FAIL',
    fix: `${REV}. IN PTR mail.example.net.`,
  },
  {
    name: 'a PTR name that does not resolve back to the IP fails ptr.forward',
    run: { zone: [put({ type: 'A', name: PTR, data: '198.51.100.99' })] },
    id: 'ptr.forward',
    status: 'FAIL',
    fix: `mail.example.net. IN A ${IP}`,
  },
  {
    name: 'a generic PTR name warns in ptr.generic and suggests a name of its own',
    run: {
      identity: { ptr: GENERIC },
      zone: [
        put({ type: 'PTR', name: REV, data: GENERIC }),
        add({ type: 'A', name: GENERIC, data: IP }),
        add({ type: 'MX', name: GENERIC, data: { preference: 0, exchange: '.' } }),
        add({ type: 'TXT', name: GENERIC, data: 'v=spf1 -all' }),
      ],
    },
    id: 'ptr.generic',
    status: 'WARN',
    fix: `${REV}. IN PTR mail.example.net.`,
  },
  {
    name: 'a HELO name equal to the PTR name fails helo.not_ptr',
    run: {
      identity: { helo: PTR },
      zone: [put({ type: 'TXT', name: PTR, data: `v=spf1 ip4:${IP} -all` }), put({ type: 'MX', name: PTR, data: { preference: 10, exchange: 'mx.example.net' } })],
    },
    id: 'helo.not_ptr',
    status: 'FAIL',
    fix: `mta-out.example.net. IN A ${IP}`,
  },
  {
    name: 'a HELO name in another registered domain fails helo.same_domain',
    run: {
      identity: { helo: 'mta-out.example.org' },
      zone: [
        add({ type: 'A', name: 'mta-out.example.org', data: IP }),
        add({ type: 'TXT', name: 'mta-out.example.org', data: `v=spf1 ip4:${IP} -all` }),
        add({ type: 'MX', name: 'mta-out.example.org', data: { preference: 10, exchange: 'mx.example.net' } }),
        add({ type: 'MX', name: 'example.org', data: { preference: 10, exchange: 'mx.example.net' } }),
        add({ type: 'RP', name: 'mta-out.example.org', data: { mbox: 'postmaster.example.org', txt: '.' } }),
        add({ type: 'SRV', name: '_client._smtp.mta-out.example.org', data: { priority: 1, weight: 2, port: 0, target: 'mta-out.example.org' } }),
      ],
    },
    id: 'helo.same_domain',
    status: 'FAIL',
    fix: `mta-out.example.net. IN A ${IP}`,
  },
  {
    name: 'a HELO name with an underscore fails helo.syntax and suggests a valid name',
    run: { identity: { helo: 'mta_out.example.net' } },
    id: 'helo.syntax',
    status: 'FAIL',
    fix: `mta-out.example.net. IN A ${IP}`,
  },
  {
    name: 'a HELO name that is a CNAME fails helo.cname and suggests an address record',
    run: {
      zone: [
        drop('A', HELO),
        drop('MX', HELO),
        add({ type: 'CNAME', name: HELO, data: PTR }),
        put({ type: 'TXT', name: PTR, data: `v=spf1 ip4:${IP} -all` }),
        put({ type: 'MX', name: PTR, data: { preference: 10, exchange: 'mx.example.net' } }),
      ],
    },
    id: 'helo.cname',
    status: 'FAIL',
    fix: `mta-out.example.net. IN A ${IP}`,
  },
  {
    name: 'a HELO name without SPF fails helo.spf.exists',
    run: { zone: [drop('TXT', HELO)] },
    id: 'helo.spf.exists',
    status: 'FAIL',
    fix: `mta-out.example.net. IN TXT "v=spf1 ip4:${IP} -all"`,
  },
  {
    name: 'a HELO SPF record ending in ~all fails helo.spf.all',
    run: { zone: [put({ type: 'TXT', name: HELO, data: `v=spf1 ip4:${IP} ~all` })] },
    id: 'helo.spf.all',
    status: 'FAIL',
    fix: `mta-out.example.net. IN TXT "v=spf1 ip4:${IP} -all"`,
  },
  {
    name: 'an envelope domain without SPF fails domain.spf.exists',
    run: { zone: [drop('TXT', DOMAIN)] },
    id: 'domain.spf.exists',
    status: 'FAIL',
    fix: `example.com. IN TXT "v=spf1 ip4:${IP} -all"`,
  },
  {
    name: 'an envelope domain SPF ending in ~all warns in domain.spf.all',
    run: { zone: [put({ type: 'TXT', name: DOMAIN, data: 'v=spf1 include:_spf.example.net ~all' })] },
    id: 'domain.spf.all',
    status: 'WARN',
    fix: 'example.com. IN TXT "v=spf1 include:_spf.example.net -all"',
  },
  {
    name: 'an envelope domain SPF that does not cover the IP fails domain.spf.authorises',
    run: { zone: [put({ type: 'TXT', name: DOMAIN, data: 'v=spf1 ip4:198.51.100.0/24 -all' })] },
    id: 'domain.spf.authorises',
    status: 'FAIL',
    fix: `example.com. IN TXT "v=spf1 ip4:${IP} ip4:198.51.100.0/24 -all"`,
  },
  {
    name: 'an envelope domain SPF over the 10-lookup limit through includes fails domain.spf.authorises',
    run: {
      zone: [
        put({ type: 'TXT', name: DOMAIN, data: `v=spf1 ${includes.map((n) => `include:${n}`).join(' ')} include:_spf.example.net -all` }),
        ...includes.map((n, i) => add({ type: 'TXT', name: n, data: `v=spf1 ip4:192.0.2.${i + 1} -all` })),
      ],
    },
    id: 'domain.spf.authorises',
    status: 'FAIL',
    fix: `; flatten each include: into the ip4:/ip6: ranges it publishes\nexample.com. IN TXT "v=spf1 ip4:${IP} -all"`,
  },
  {
    name: 'an envelope domain SPF that lists the IP first but is over the limit for every other sender fails domain.spf.authorises',
    run: {
      zone: [
        put({ type: 'TXT', name: DOMAIN, data: `v=spf1 ip4:${IP} ${includes.map((n) => `include:${n}`).join(' ')} include:_spf.example.net -all` }),
        ...includes.map((n, i) => add({ type: 'TXT', name: n, data: `v=spf1 ip4:192.0.2.${i + 1} -all` })),
      ],
    },
    id: 'domain.spf.authorises',
    status: 'FAIL',
    fix: `; flatten each include: into the ip4:/ip6: ranges it publishes\nexample.com. IN TXT "v=spf1 ip4:${IP} -all"`,
  },
  {
    name: 'an envelope domain without DMARC fails domain.dmarc',
    run: { zone: [drop('TXT', `_dmarc.${DOMAIN}`)] },
    id: 'domain.dmarc',
    status: 'FAIL',
    fix: '_dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"',
  },
  {
    name: 'a published DKIM key that is not the local key fails domain.dkim and suggests the right record',
    run: { zone: [put({ type: 'TXT', name: `${SELECTOR}._domainkey.${DOMAIN}`, data: dkimValue(newRsaKey().publicKey) })] },
    id: 'domain.dkim',
    status: 'FAIL',
    fix: '', // filled in below: it depends on the key generated in beforeAll
  },
  {
    name: 'an MX target that is a CNAME fails domain.mx.cname and suggests an address record',
    run: {
      zone: [drop('A', 'mx1.example.com'), add({ type: 'CNAME', name: 'mx1.example.com', data: 'mx-real.example.com' }), add({ type: 'A', name: 'mx-real.example.com', data: '198.51.100.20' })],
    },
    id: 'domain.mx.cname',
    status: 'FAIL',
    fix: 'mx1.example.com. IN A 198.51.100.20',
  },
  {
    name: 'an MX target that is an IP literal fails domain.mx.literal and suggests a named host',
    run: { zone: [put({ type: 'MX', name: DOMAIN, data: { preference: 10, exchange: '198.51.100.20' } })] },
    id: 'domain.mx.literal',
    status: 'FAIL',
    fix: 'example.com. IN MX 10 mx.example.com.\nmx.example.com. IN A 198.51.100.20',
  },
  {
    name: 'a HELO domain with no MX and no address fails postmaster.route',
    run: { zone: [drop('MX', 'example.net')] },
    id: 'postmaster.route',
    status: 'FAIL',
    fix: '; an MX host that accepts mail for postmaster@example.net and abuse@example.net\nexample.net. IN MX 10 mx.example.net.',
  },
  {
    name: 'a HELO name with a null MX fails helo.postmaster and suggests an MX to the organisation\'s inbound host',
    run: { zone: [put({ type: 'MX', name: HELO, data: { preference: 0, exchange: '.' } })] },
    id: 'helo.postmaster',
    status: 'FAIL',
    fix: [
      '; remove the null MX (mta-out.example.net. IN MX 0 .): RFC 7505 allows no other MX beside it',
      '; mx.example.net receives mail for example.net: have it accept postmaster@mta-out.example.net and abuse@mta-out.example.net too',
      'mta-out.example.net. IN MX 10 mx.example.net.',
    ].join('\n'),
  },
  {
    name: 'a HELO name with only an address record fails helo.postmaster: Postern takes no inbound mail',
    run: { zone: [drop('MX', HELO)] },
    id: 'helo.postmaster',
    status: 'FAIL',
    fix: '; mx.example.net receives mail for example.net: have it accept postmaster@mta-out.example.net and abuse@mta-out.example.net too\nmta-out.example.net. IN MX 10 mx.example.net.',
  },
  {
    name: 'a HELO name whose MX host has no address fails helo.postmaster',
    run: { zone: [put({ type: 'MX', name: HELO, data: { preference: 10, exchange: 'mx-gone.example.net' } })] },
    id: 'helo.postmaster',
    status: 'FAIL',
    fix: '; mx.example.net receives mail for example.net: have it accept postmaster@mta-out.example.net and abuse@mta-out.example.net too\nmta-out.example.net. IN MX 10 mx.example.net.',
  },
  {
    name: 'a HELO name whose MX is this relay itself warns in helo.postmaster',
    run: { zone: [put({ type: 'MX', name: HELO, data: { preference: 10, exchange: HELO } })] },
    id: 'helo.postmaster',
    status: 'WARN',
    fix: '; mx.example.net receives mail for example.net: have it accept postmaster@mta-out.example.net and abuse@mta-out.example.net too\nmta-out.example.net. IN MX 10 mx.example.net.',
  },
  {
    name: 'a greeting name with a null MX fails hostname.postmaster and suggests an MX',
    run: { zone: [put({ type: 'MX', name: HOSTNAME, data: { preference: 0, exchange: '.' } })] },
    id: 'hostname.postmaster',
    status: 'FAIL',
    fix: [
      '; remove the null MX (smtp.example.net. IN MX 0 .): RFC 7505 allows no other MX beside it',
      '; mx.example.net receives mail for example.net: have it accept postmaster@smtp.example.net and abuse@smtp.example.net too',
      'smtp.example.net. IN MX 10 mx.example.net.',
    ].join('\n'),
  },
  {
    name: 'a greeting name with only an address record fails hostname.postmaster',
    run: { zone: [drop('MX', HOSTNAME)] },
    id: 'hostname.postmaster',
    status: 'FAIL',
    fix: '; mx.example.net receives mail for example.net: have it accept postmaster@smtp.example.net and abuse@smtp.example.net too\nsmtp.example.net. IN MX 10 mx.example.net.',
  },
  {
    name: 'a greeting name without an address fails hostname.forward and suggests one',
    run: { zone: [drop('A', HOSTNAME)] },
    id: 'hostname.forward',
    status: 'FAIL',
    fix: `; the address submission clients connect to (here the outbound address: change it if they connect to another)\nsmtp.example.net. IN A ${IP}`,
  },
];

describe('postern doctor on a zone broken one way', () => {
  it.each(BROKEN)('$name', async ({ run, id, status, fix }) => {
    const results = await doctor(run);
    const found = faults(results);
    expect(found.map((r) => r.id)).toEqual([id]);
    expect(found[0]!.status).toBe(status);
    const want = id === 'domain.dkim' ? dkimFix(dkim.publicKey) : fix;
    expect(found[0]!.fix).toBe(want);
    expect(healthy(results)).toBe(status !== 'FAIL');
  });
});

/** A TXT record longer than 255 bytes is written as several strings (RFC 1035 3.3.14). */
function dkimFix(key: KeyObject): string {
  const strings = dkimValue(key).match(/.{1,255}/g)!;
  return `s1._domainkey.example.com. IN TXT ${strings.map((s) => `"${s}"`).join(' ')}`;
}

describe('postern doctor, beyond DNS records', () => {
  it('says how to set a missing outbound IP and skips the checks that need it', async () => {
    const results = await doctor({ identity: { outbound_ip: '' } });
    expect(faults(results).map((r) => r.id)).toEqual(['identity.outbound_ip']);
    expect(faults(results)[0]!.reason).toMatch(/set outbound_ip = "ADDRESS" in \[identity\]/);
    expect(results.map((r) => r.id)).not.toContain('ptr.exists');
    expect(results.map((r) => r.id)).not.toContain('helo.spf.authorises');
  });

  it('checks an IPv6 outbound address through ip6.arpa, AAAA records and ip6: SPF', async () => {
    const v6 = '2001:db8::25';
    const results = await doctor({
      identity: { outbound_ip: v6 },
      zone: [
        drop('PTR', REV),
        add({ type: 'PTR', name: reverseName(v6), data: PTR }),
        add({ type: 'AAAA', name: PTR, data: v6 }),
        add({ type: 'AAAA', name: HELO, data: v6 }),
        put({ type: 'TXT', name: HELO, data: `v=spf1 ip6:${v6} -all` }),
        put({ type: 'TXT', name: '_spf.example.net', data: 'v=spf1 ip6:2001:db8::/64 -all' }),
      ],
    });
    expect(faults(results)).toEqual([]);
    expect(results.find((r) => r.id === 'ptr.forward')!.reason).toBe('resolves back to 2001:db8::25 (forward-confirmed)');
  });

  it('reports missing CSA and RP records as INFO with the records to add', async () => {
    const results = await doctor({ zone: [drop('RP', HELO), drop('SRV', `_client._smtp.${HELO}`)] });
    expect(faults(results)).toEqual([]);
    const infos = results.filter((r) => r.status === 'INFO');
    expect(infos.map((r) => [r.id, r.fix])).toEqual([
      ['helo.csa', `_client._smtp.${HELO}. IN SRV 1 2 0 ${HELO}.`],
      ['helo.rp', `${HELO}. IN RP postmaster.example.net. .`],
    ]);
  });

  it('warns about a PTR name without null MX or null SPF: it sends and announces nothing, unlike the HELO and greeting names', async () => {
    const results = await doctor({ zone: [drop('MX', PTR), drop('TXT', PTR)] });
    expect(faults(results).map((r) => [r.status, r.id, r.fix])).toEqual([
      ['WARN', 'ptr.null_mx', `${PTR}. IN MX 0 .`],
      ['WARN', 'ptr.null_spf', `${PTR}. IN TXT "v=spf1 -all"`],
    ]);
    expect(results.filter((r) => r.id.endsWith('.postmaster')).map((r) => [r.status, r.subject, r.reason])).toEqual([
      ['PASS', HELO, `mail to postmaster@${HELO} and abuse@${HELO} goes to MX mx.example.net`],
      ['PASS', HOSTNAME, `mail to postmaster@${HOSTNAME} and abuse@${HOSTNAME} goes to MX mx.example.net`],
    ]);
  });

  it('says why a HELO name with a null MX or only an address cannot take postmaster@ mail', async () => {
    const row = async (zone: Edit[]) => (await doctor({ zone })).find((r) => r.id === 'helo.postmaster')!;
    expect(await row([put({ type: 'MX', name: HELO, data: { preference: 0, exchange: '.' } })])).toMatchObject({
      status: 'FAIL',
      subject: HELO,
      reason: `null MX (RFC 7505): mail to postmaster@${HELO} and abuse@${HELO} is refused, yet receivers write there about this relay's mail (RFC 5321 4.5.1, RFC 2142); publish an MX to a host that accepts it`,
    });
    expect((await row([drop('MX', HELO)])).reason).toBe(
      `no MX, only an address: mail to postmaster@${HELO} and abuse@${HELO} goes to port 25 of ${IP} (the implicit MX, RFC 5321 5.1), and Postern takes no inbound mail; receivers write there about this relay's mail (RFC 5321 4.5.1, RFC 2142): publish an MX to a host that accepts it`,
    );
    const self = await row([put({ type: 'MX', name: HELO, data: { preference: 10, exchange: HELO } })]);
    expect(self.reason).toBe(`MX ${HELO} is this relay's outbound address ${IP}, where Postern takes no inbound mail: unless another MTA accepts mail on port 25 there, mail to postmaster@${HELO} and abuse@${HELO} is refused`);
  });

  it('suggests an envelope domain\'s MX host when the HELO name\'s own domain has none, else a placeholder to replace', async () => {
    const fixOf = async (zone: Edit[]) => (await doctor({ zone })).find((r) => r.id === 'helo.postmaster')!.fix;
    const accept = `postmaster@${HELO} and abuse@${HELO}`;
    expect(await fixOf([drop('MX', HELO), drop('MX', 'example.net')])).toBe(`; mx1.example.com receives mail for example.com: have it accept ${accept} too\n${HELO}. IN MX 10 mx1.example.com.`);
    expect(await fixOf([drop('MX', HELO), drop('MX', 'example.net'), drop('MX', DOMAIN)])).toBe(
      `; replace MX-HOST with your organisation's inbound mail host, and have it accept ${accept}\n${HELO}. IN MX 10 MX-HOST.`,
    );
  });

  it('judges the greeting name\'s syntax before asking DNS about it', async () => {
    // The config refuses "_" in [server] hostname (test/config/load.test.ts); the doctor judges a config made otherwise the same way.
    const underscore = await doctor({ hostname: 'smtp_out.example.net' });
    expect(underscore.filter((r) => r.id.startsWith('hostname.'))).toEqual([
      {
        id: 'hostname.syntax',
        subject: 'smtp_out.example.net',
        status: 'FAIL',
        reason:
          '[server] hostname contains "_", which host names may not (RFC 1123): it is the 220 greeting name, which submission clients connect to and check the certificate against; set hostname = "smtp-out.example.net" and publish its address',
        fix: `; the address submission clients connect to (here the outbound address: change it if they connect to another)\nsmtp-out.example.net. IN A ${IP}`,
      },
    ]);
    // localhost, the default when [server] is left out.
    const local = await doctor({ hostname: 'localhost' });
    expect(local.filter((r) => r.id.startsWith('hostname.')).map((r) => [r.status, r.id, r.reason])).toEqual([
      [
        'FAIL',
        'hostname.syntax',
        '[server] hostname is not fully qualified (needs a domain, e.g. mta-out.example.com): it is the 220 greeting name, which submission clients connect to and check the certificate against; set hostname = "smtp.example.net" and publish its address',
      ],
    ]);
  });

  it('checks the greeting name once when it is the HELO name', async () => {
    const results = await doctor({ hostname: HELO });
    expect(results.filter((r) => r.id.endsWith('.postmaster')).map((r) => [r.id, r.subject])).toEqual([['helo.postmaster', HELO]]);
    expect(results.find((r) => r.id === 'hostname.forward')).toMatchObject({ status: 'PASS', subject: HELO });
  });

  it('fails a certificate that does not name the submission hostname', async () => {
    const other = { ...cert, pem: (await certificate('other.example.org', NOW - DAY, NOW + 90 * DAY)).cert } as LocalCertificate;
    const found = faults(await doctor({ certificate: other }));
    expect(found.map((r) => [r.status, r.id])).toEqual([['FAIL', 'tls.names']]);
    expect(found[0]!.reason).toMatch(/DNS:other\.example\.org, not \[server\] hostname smtp\.example\.net/);
  });

  it('warns about a certificate expiring within 14 days and fails an expired one', async () => {
    const soon = { ...cert, pem: (await certificate(HOSTNAME, NOW - 80 * DAY, NOW + 10 * DAY)).cert } as LocalCertificate;
    expect(faults(await doctor({ certificate: soon })).map((r) => [r.status, r.id, r.reason])).toEqual([['WARN', 'tls.expiry', 'expires on 2026-12-02, in 10 days: renew it']]);
    const gone = { ...cert, pem: (await certificate(HOSTNAME, NOW - 90 * DAY, NOW - DAY)).cert } as LocalCertificate;
    expect(faults(await doctor({ certificate: gone })).map((r) => [r.status, r.id])).toEqual([['FAIL', 'tls.expiry']]);
  });

  it('warns when the envelope domain has no local DKIM key', async () => {
    const found = faults(await doctor({ dkimKeys: [] }));
    expect(found.map((r) => [r.status, r.id])).toEqual([['WARN', 'domain.dkim']]);
    expect(found[0]!.reason).toMatch(/postern dkim keygen example\.com --selector SELECTOR/);
  });

  it('accepts a published Ed25519 DKIM key that matches the local one', async () => {
    const ed = generateKeyPairSync('ed25519');
    const raw = Buffer.from(ed.publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('base64');
    const results = await doctor({
      dkimKeys: [{ domain: DOMAIN, selector: 'ed', path: 'ed.key', key: { publicKey: ed.publicKey } }],
      zone: [add({ type: 'TXT', name: `ed._domainkey.${DOMAIN}`, data: `v=DKIM1; k=ed25519; p=${raw}` })],
    });
    expect(results.find((r) => r.id === 'domain.dkim')).toMatchObject({ status: 'PASS', subject: 'ed._domainkey.example.com' });
  });

  it('falls back to the organisational domain for DMARC, as receivers do', async () => {
    dns.setRecords(goodZone(dkim.publicKey));
    const results = await runDoctor(
      { config: config(), domains: ['news.example.com'], dkimKeys: [], certificate: cert },
      { dns: doctorDns(createResolver([dns.address], { timeoutMs: 1000, tries: 1 })), clock: new ManualClock(NOW) },
    );
    expect(results.find((r) => r.id === 'domain.dmarc')).toMatchObject({ status: 'PASS', subject: '_dmarc.example.com' });
  });

  it('reports a lookup that fails while the resolver answers as "could not check": FAIL for a required record, INFO for an optional one', async () => {
    const results = await doctor({ zone: [add({ type: 'SERVFAIL', name: REV }), add({ type: 'SERVFAIL', name: `_client._smtp.${HELO}` }), add({ type: 'SERVFAIL', name: HELO, data: 'RP' })] });
    expect(results.find((r) => r.id === 'ptr.exists')).toEqual({ id: 'ptr.exists', subject: IP, status: 'FAIL', reason: expect.stringMatching(/^could not check \(ESERVFAIL\): /) });
    expect(results.filter((r) => r.id === 'helo.csa' || r.id === 'helo.rp')).toEqual([
      { id: 'helo.csa', subject: HELO, status: 'INFO', reason: expect.stringMatching(/^could not check \(ESERVFAIL\): /) },
      { id: 'helo.rp', subject: HELO, status: 'INFO', reason: expect.stringMatching(/^could not check \(ESERVFAIL\): /) },
    ]);
    // The PTR name came from the config, so the checks that compare with it still ran.
    expect(results.filter((r) => r.status === 'FAIL').map((r) => r.id)).toEqual(['ptr.exists']);
  });
});

describe('postern doctor without a resolver', () => {
  /** A run against these servers, with a short timeout: an unreachable resolver costs at most one. */
  const unreached = (server: string, cfg: Partial<Config['identity']> = {}) =>
    runDoctor(
      { config: config(cfg), domains: [DOMAIN, 'example.org'], dkimKeys: [], certificate: cert },
      { dns: doctorDns(createResolver([server], { timeoutMs: 200, tries: 1 }), { timeoutMs: 200 }), clock: new ManualClock(NOW) },
    );
  // What needs no DNS still runs; everything else is skipped, not failed.
  const NO_DNS = ['identity.outbound_ip', 'helo.syntax', 'helo.not_ptr', 'helo.same_domain', 'hostname.syntax', 'tls.names', 'tls.expiry'];

  it('says once that the resolver refuses, and skips every check that asks DNS', async () => {
    // A port nobody listens on: the kernel answers ICMP port unreachable (ECONNREFUSED).
    const closed = await startDnsServer();
    const port = closed.port;
    await closed.close();
    const results = await unreached(`127.0.0.1:${port}`);
    expect(results[0]).toEqual({
      id: 'dns.resolver',
      subject: `127.0.0.1:${port}`,
      status: 'FAIL',
      reason: `resolver unreachable: 127.0.0.1:${port} (ECONNREFUSED); the checks that ask DNS were skipped: fix [delivery] dns_servers (empty: the system's resolvers in /etc/resolv.conf), then run the doctor again`,
    });
    expect(results.filter((r) => r.status === 'FAIL')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'PASS').map((r) => r.id)).toEqual(NO_DNS);
    const skipped = results.filter((r) => r.status === 'SKIP');
    expect(skipped.map((r) => r.id)).toEqual([
      'ptr.exists',
      'ptr.forward',
      'ptr.matches_config',
      'ptr.generic',
      'helo.cname',
      'helo.forward',
      'helo.spf.exists',
      'ptr.null_mx',
      'ptr.null_spf',
      'helo.postmaster',
      'postmaster.route',
      'helo.csa',
      'helo.rp',
      ...['domain.spf.exists', 'domain.dmarc', 'domain.dkim', 'domain.mx'],
      ...['domain.spf.exists', 'domain.dmarc', 'domain.dkim', 'domain.mx'],
      'hostname.forward',
      'hostname.postmaster',
    ]);
    expect(skipped.every((r) => r.reason === 'skipped: the resolver does not answer (see dns.resolver)' && r.fix === undefined)).toBe(true);
    expect(skipped.filter((r) => r.id === 'domain.mx').map((r) => r.subject)).toEqual([DOMAIN, 'example.org']);
    expect(results).toHaveLength(1 + NO_DNS.length + skipped.length);
  });

  it('says once that the resolver does not answer in time', async () => {
    // A socket that takes every question and answers none.
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    try {
      const server = `127.0.0.1:${silent.address().port}`;
      const results = await unreached(server);
      expect(results[0]).toMatchObject({ id: 'dns.resolver', status: 'FAIL', reason: expect.stringMatching(new RegExp(`^resolver unreachable: ${server} \\(ETIMEOUT\\); `)) });
      expect(results.filter((r) => r.status === 'FAIL')).toHaveLength(1);
    } finally {
      silent.close();
    }
  });

  it('skips what would compare with the PTR name DNS gives when [identity] ptr is not set', async () => {
    const closed = await startDnsServer();
    await closed.close();
    const results = await unreached(`127.0.0.1:${closed.port}`, { ptr: '' });
    expect(results.filter((r) => r.id.startsWith('helo.not_ptr') || r.id === 'helo.same_domain').map((r) => r.status)).toEqual(['SKIP', 'SKIP']);
    expect(results.filter((r) => r.status === 'FAIL').map((r) => r.id)).toEqual(['dns.resolver']);
  });
});

describe('generic PTR names', () => {
  it.each([
    ['203-0-113-25.example.net', 'embeds the address'],
    ['25.113.0.203.static.example.net', 'embeds the address'],
    ['host-113-25.example.net', 'embeds the address'],
    ['cb007119.example.net', 'embeds the address'],
    ['adsl-7.example.net', 'contains "adsl"'],
    ['pool-a.example.net', 'contains "pool"'],
    ['client.example.net', 'contains "client"'],
    ['static-ip-7.example.net', 'contains "static-ip"'],
    ['mail.example.net', null],
    ['mail.cablelabs.example', null],
    ['mx25.example.net', null],
  ])('judges %s as %s', (name, want) => {
    expect(genericReason(name, IP)).toBe(want);
  });
});

describe('DMARC records', () => {
  it.each([
    ['v=DMARC1; p=reject; rua=mailto:d@example.com', null],
    ['v=DMARC1; p=none', null],
    ['v=DMARC1', 'has no p= policy (RFC 7489 6.3 requires it)'],
    ['p=reject; v=DMARC1', 'does not begin with "v=DMARC1;"'],
    ['v=DMARC1; p=block', 'p=block is not valid'],
    ['v=DMARC1; p=reject; pct=150', 'pct=150 is not valid'],
    ['v=DMARC1; p=reject; rua=d@example.com', 'rua=d@example.com is not valid'],
    ['v=DMARC1 p=reject', 'does not begin with "v=DMARC1;"'],
  ])('judges "%s"', (record, want) => {
    expect(dmarcProblem(record)).toBe(want);
  });
});

describe('the IP database behind country and ASN bindings (geo.data)', () => {
  const geoDir = mkdtempSync(path.join(tmpdir(), 'postern-doctor-geo-'));
  afterAll(() => rmSync(geoDir, { recursive: true, force: true }));
  const bundledAt = bundledData('country').builtAt!.getTime();
  const bundled = (kind: 'country' | 'asn') => `${bundledData(kind).package} ${bundledData(kind).version}`;
  const day = (t: number) => new Date(t).toISOString().slice(0, 10);

  async function geoRows(o: { geo?: Partial<Config['geo']>; geoBindings?: boolean; now: number }): Promise<CheckResult[]> {
    dns.setRecords(goodZone(dkim.publicKey));
    const cfg = parseConfig({ server: { hostname: HOSTNAME }, identity: { helo: HELO, ptr: PTR, outbound_ip: IP }, delivery: { dns_servers: [dns.address] }, geo: o.geo ?? {} }, geoDir);
    const results = await runDoctor(
      { config: cfg, domains: [DOMAIN], dkimKeys: [], certificate: cert, geoBindings: o.geoBindings },
      { dns: doctorDns(createResolver(cfg.delivery.dns_servers, { timeoutMs: 1000, tries: 1 })), clock: new ManualClock(o.now) },
    );
    return results.filter((r) => r.id === 'geo.data');
  }

  it('is not checked while no binding names a country or an ASN and [geo] names no file', async () => {
    expect(await geoRows({ now: NOW })).toEqual([]);
    expect(await geoRows({ now: NOW, geoBindings: false })).toEqual([]);
  });

  it('passes the bundled data while it is at most 90 days old, and then says to point [geo] at current files', async () => {
    expect(await geoRows({ geoBindings: true, now: bundledAt + 90 * DAY })).toEqual([
      { id: 'geo.data', subject: bundled('country'), status: 'PASS', reason: `country data bundled with Postern is of ${day(bundledAt)} (90 days old)` },
      { id: 'geo.data', subject: bundled('asn'), status: 'PASS', reason: `ASN data bundled with Postern is of ${day(bundledAt)} (90 days old)` },
    ]);
    const rows = await geoRows({ geoBindings: true, now: bundledAt + 91 * DAY });
    expect(rows.map((r) => [r.status, r.subject])).toEqual([
      ['WARN', bundled('country')],
      ['WARN', bundled('asn')],
    ]);
    expect(rows[0]!.reason).toBe(
      `country data bundled with Postern is of ${day(bundledAt)}, 91 days old (over 90): addresses have moved since; set geo.country_db to a current file: GeoLite2-Country.mmdb kept current by geoipupdate (MaxMind GeoLite2, free account), or the country CSV files of https://github.com/sapics/ip-location-db/releases (npm updates of the bundled data have stopped), then systemctl reload postern`,
    );
    expect(rows[1]!.reason).toMatch(/^ASN data bundled with Postern is of .*: addresses have moved since; set geo\.asn_db to a current file: GeoLite2-ASN\.mmdb kept current by geoipupdate/);
  });

  it('dates a file of its own by its modification time, and fails one that is not there', async () => {
    const fresh = path.join(geoDir, 'country.csv');
    writeFileSync(fresh, '1.0.0.0,1.0.0.255,AU\n');
    utimesSync(fresh, new Date(NOW - 10 * DAY), new Date(NOW - 10 * DAY));
    const old = path.join(geoDir, 'asn.csv');
    writeFileSync(old, '1.0.0.0,1.0.0.255,13335,Cloudflare\n');
    utimesSync(old, new Date(NOW - 200 * DAY), new Date(NOW - 200 * DAY));
    // A [geo] path set is reason enough to check, bindings or not; relative paths are the config file's.
    expect(await geoRows({ geo: { country_db: 'country.csv', asn_db: old }, now: NOW })).toEqual([
      { id: 'geo.data', subject: fresh, status: 'PASS', reason: `country data in geo.country_db is of ${day(NOW - 10 * DAY)} (10 days old)` },
      {
        id: 'geo.data',
        subject: old,
        status: 'WARN',
        reason: `ASN data in geo.asn_db is of ${day(NOW - 200 * DAY)}, 200 days old (over 90): addresses have moved since; replace ${old} with a current file (geoipupdate for MaxMind; https://github.com/sapics/ip-location-db/releases for CSV), then systemctl reload postern`,
      },
    ]);
    const gone = path.join(geoDir, 'gone.mmdb');
    const rows = await geoRows({ geo: { country_db: gone }, now: NOW });
    expect(rows[0]).toEqual({ id: 'geo.data', subject: gone, status: 'FAIL', reason: 'the country data cannot be read: run postern config check as the service user, then fix geo.country_db' });
    expect(rows[1]).toMatchObject({ subject: bundled('asn'), status: 'WARN' });
  });
});
