import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { sqliteHandle } from '../../src/store/index.js';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.js';
import { bundledData } from '../../src/geo/index.js';
import { openStore } from '../../src/store/index.js';
import { startDnsServer, type DnsServer } from '../helpers/dnsd.js';
import { certificate, DOMAIN, drop, edit, goodZone, HELO, HOSTNAME, IP, newRsaKey, PTR, put, SELECTOR } from '../helpers/doctorZone.js';
import { tempDir } from '../helpers/relay.js';

const DAY = 86_400_000;
let dns: DnsServer;
let dir: string;
let configFile: string;
let zone: ReturnType<typeof goodZone>;

beforeAll(async () => {
  dns = await startDnsServer();
  dir = tempDir();
  const dkim = newRsaKey();
  const keyDir = path.join(dir, 'data', 'dkim', DOMAIN);
  mkdirSync(keyDir, { recursive: true });
  writeFileSync(path.join(keyDir, `${SELECTOR}.key`), dkim.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  // The CLI reads the real clock, so the certificate is valid around now.
  const tls = await certificate(HOSTNAME, Date.now() - DAY, Date.now() + 90 * DAY);
  writeFileSync(path.join(dir, 'cert.pem'), tls.cert);
  writeFileSync(path.join(dir, 'key.pem'), tls.key);
  configFile = path.join(dir, 'postern.toml');
  writeFileSync(
    configFile,
    `[server]
hostname = "${HOSTNAME}"
data_dir = "data"
[tls]
cert = "cert.pem"
key = "key.pem"
[identity]
helo = "${HELO}"
ptr = "${PTR}"
outbound_ip = "${IP}"
[delivery]
dns_servers = ["${dns.address}"]
`,
  );
  zone = goodZone(dkim.publicKey);
});
afterAll(async () => {
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

async function doctor(argv: string[], colour?: boolean) {
  let out = '';
  let err = '';
  const code = await runCli(['--config', configFile, 'doctor', ...argv], {
    stdout: (s) => (out += s),
    stderr: (s) => (err += s),
    stdin: async () => '',
    env: {},
    colour,
  });
  return { code, out, err };
}

describe('postern doctor', () => {
  it('exits 0 with stable JSON when every check passes', async () => {
    dns.setRecords(zone);
    const r = await doctor(['--json', '--domain', DOMAIN]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out);
    expect(Object.keys(doc)).toEqual(['ok', 'counts', 'checks']);
    expect(doc.ok).toBe(true);
    expect(doc.counts).toEqual({ FAIL: 0, WARN: 0, PASS: 30, INFO: 0, SKIP: 0 });
    expect(doc.checks[0]).toEqual({ id: 'identity.outbound_ip', subject: IP, status: 'PASS', reason: 'the public address mail leaves from', fix: null });
    expect(doc.checks.find((c: { id: string }) => c.id === 'domain.dkim')).toMatchObject({ status: 'PASS', subject: `${SELECTOR}._domainkey.${DOMAIN}` });
  });

  it('exits 1 and names the failing check with the record to publish', async () => {
    dns.setRecords(edit(zone, [drop('TXT', `_dmarc.${DOMAIN}`)]));
    const r = await doctor(['--json', '--domain', DOMAIN]);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.out);
    expect(doc.ok).toBe(false);
    expect(doc.checks.filter((c: { status: string }) => c.status === 'FAIL')).toEqual([
      {
        id: 'domain.dmarc',
        subject: DOMAIN,
        status: 'FAIL',
        reason: 'no DMARC record: large receivers require one, and without it they judge alignment by their own rules',
        fix: '_dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"',
      },
    ]);
  });

  it('checks the domains users and devices are bound to send as when no --domain is given', async () => {
    dns.setRecords(zone);
    const store = openStore(path.join(dir, 'data'));
    try {
      sqliteHandle(store)
        .prepare("INSERT INTO bindings (principal_kind, principal_id, kind, value, position, created_at) VALUES ('user', 1, 'sender', ?, 0, 0)")
        .run(`@${DOMAIN}`);
    } finally {
      store.close();
    }
    const doc = JSON.parse((await doctor(['--json'])).out);
    expect(doc.checks.filter((c: { id: string }) => c.id === 'domain.mx').map((c: { subject: string }) => c.subject)).toEqual([DOMAIN]);
  });

  it('prints a table with each fix under its row, coloured only on a terminal', async () => {
    dns.setRecords(edit(zone, [drop('TXT', `_dmarc.${DOMAIN}`)]));
    const plain = await doctor(['--domain', DOMAIN]);
    expect(plain.code).toBe(1);
    expect(plain.out).not.toContain('\x1b[');
    expect(plain.out).toMatch(/^STATUS {2}CHECK +SUBJECT +REASON\n/);
    expect(plain.out).toMatch(/\nFAIL {4}domain\.dmarc +example\.com +no DMARC record.*\n {8}_dmarc\.example\.com\. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example\.com"\n/);
    expect(plain.out).toMatch(/\n\n1 FAIL, 29 PASS: publish the records shown under each FAIL and WARN, then run postern doctor again\n$/);
    const tty = await doctor(['--domain', DOMAIN], true);
    expect(tty.out).toContain('\x1b[1;31mFAIL\x1b[0m    domain.dmarc');
    expect(tty.out).toContain('\x1b[32mPASS\x1b[0m    identity.outbound_ip');
  });

  it('checks a new key of the store as staged while inactive, and as the signing key once activated: failing while its record is missing', async () => {
    let out = '';
    const run = (argv: string[]) => runCli(['--config', configFile, ...argv], { stdout: (s) => (out += s), stderr: () => undefined, stdin: async () => '', env: {} });
    expect(await run(['dkim', 'keygen', DOMAIN, '--selector', 'pst2027', '--json'])).toBe(0);
    const key = JSON.parse(out) as { txt_name: string; txt_value: string };
    const dkimChecks = async () => (JSON.parse((await doctor(['--json', '--domain', DOMAIN])).out) as { checks: Array<{ id: string }> }).checks.filter((c) => c.id === 'domain.dkim');
    dns.setRecords(zone);
    expect(await dkimChecks()).toEqual([
      expect.objectContaining({ status: 'PASS', subject: `${SELECTOR}._domainkey.${DOMAIN}` }),
      expect.objectContaining({ status: 'WARN', subject: `pst2027._domainkey.${DOMAIN}`, reason: `the inactive key of selector pst2027 in the store is not published yet: publish its record, then switch signing to it with postern dkim activate ${DOMAIN} pst2027` }),
    ]);
    const published = [...zone, { type: 'TXT' as const, name: key.txt_name, data: key.txt_value }];
    dns.setRecords(published);
    expect(await run(['dkim', 'activate', DOMAIN, 'pst2027'])).toBe(0);
    expect(await dkimChecks()).toEqual([
      expect.objectContaining({ status: 'PASS', subject: `pst2027._domainkey.${DOMAIN}`, reason: 'publishes the public half of the key of selector pst2027 in the store' }),
    ]);
    dns.setRecords(zone);
    expect(await dkimChecks()).toEqual([
      expect.objectContaining({ status: 'FAIL', subject: `pst2027._domainkey.${DOMAIN}`, reason: 'no DKIM key published: receivers cannot verify what Postern signs with the key of selector pst2027 in the store' }),
    ]);
  });

  it('says once that the resolver is unreachable, skips the DNS checks and promises no records it does not show', async () => {
    const closed = await startDnsServer();
    await closed.close();
    const file = path.join(dir, 'no-dns.toml');
    writeFileSync(file, readFileSync(configFile, 'utf8').replace(dns.address, `127.0.0.1:${closed.port}`));
    let out = '';
    const code = await runCli(['--config', file, 'doctor', '--domain', DOMAIN], { stdout: (s) => (out += s), stderr: () => undefined, stdin: async () => '', env: {} });
    expect(code).toBe(1);
    const rows = out.split('\n').filter((l) => /^[A-Z]{4} /.test(l));
    expect(rows[0]!.split(/ {2,}/)).toEqual([
      'FAIL',
      'dns.resolver',
      `127.0.0.1:${closed.port}`,
      `resolver unreachable: 127.0.0.1:${closed.port} (ECONNREFUSED); the checks that ask DNS were skipped: fix [delivery] dns_servers (empty: the system's resolvers in /etc/resolv.conf), then run the doctor again`,
    ]);
    expect(rows.filter((l) => l.startsWith('FAIL'))).toHaveLength(1);
    expect(rows.filter((l) => l.startsWith('SKIP'))).toHaveLength(19);
    expect(out).not.toContain('publish the records');
    expect(out).toMatch(/\n\n1 FAIL, 7 PASS, 19 SKIP: make the resolver answer, then run postern doctor again\n$/);
  });

  it('says what to change, not what to publish, when no FAIL or WARN has a record', async () => {
    dns.setRecords(zone);
    const file = path.join(dir, 'no-ip.toml');
    // A store of its own, without the DKIM keys the other tests add: no record to publish anywhere.
    writeFileSync(file, readFileSync(configFile, 'utf8').replace(/^outbound_ip = .*$/m, '').replace('data_dir = "data"', 'data_dir = "data-no-ip"'));
    let out = '';
    const code = await runCli(['--config', file, 'doctor', '--domain', DOMAIN], { stdout: (s) => (out += s), stderr: () => undefined, stdin: async () => '', env: {} });
    expect(code).toBe(1);
    expect(out).toMatch(/\nFAIL {4}identity\.outbound_ip +\[identity\] outbound_ip +not set: /);
    expect(out).toMatch(/\nWARN {4}domain\.dkim +example\.com +no DKIM key /);
    expect(out).toMatch(/\n\n1 FAIL, 1 WARN, \d+ PASS: fix what each FAIL and WARN says, then run postern doctor again\n$/);
  });

  it('checks the age of the IP database once a binding names a country, and not before', async () => {
    dns.setRecords(zone);
    const geoRows = async () => (JSON.parse((await doctor(['--json', '--domain', DOMAIN])).out) as { checks: Array<{ id: string }> }).checks.filter((c) => c.id === 'geo.data');
    expect(await geoRows()).toEqual([]);
    const bind = async (add: boolean) => {
      const store = openStore(path.join(dir, 'data'));
      try {
        if (add) await store.bindings.add('user', 1, 'country', 'DE', Date.now());
        else await store.bindings.remove('user', 1, 'country', 'DE');
      } finally {
        store.close();
      }
    };
    await bind(true);
    try {
      // The CLI reads the real clock: the bundled data's age decides PASS or WARN.
      const at = bundledData('country').builtAt!;
      const age = Math.floor((Date.now() - at.getTime()) / DAY);
      const status = age > 90 ? 'WARN' : 'PASS';
      const rows = await geoRows();
      expect(rows).toEqual([
        expect.objectContaining({ subject: `${bundledData('country').package} ${bundledData('country').version}`, status, reason: expect.stringContaining(`country data bundled with Postern is of ${at.toISOString().slice(0, 10)}`), fix: null }),
        expect.objectContaining({ subject: `${bundledData('asn').package} ${bundledData('asn').version}`, status, reason: expect.stringMatching(/^ASN data bundled with Postern /), fix: null }),
      ]);
    } finally {
      await bind(false);
    }
  });

  it('prints the MX record to publish under a HELO name whose null MX refuses postmaster@ mail', async () => {
    dns.setRecords(edit(zone, [put({ type: 'MX', name: HELO, data: { preference: 0, exchange: '.' } })]));
    const r = await doctor(['--domain', DOMAIN]);
    expect(r.code).toBe(1);
    const rows = r.out.split('\n');
    const at = rows.findIndex((l) => l.startsWith('FAIL    helo.postmaster '));
    expect(rows[at]!.split(/ {2,}/).slice(0, 3)).toEqual(['FAIL', 'helo.postmaster', HELO]);
    expect(rows.slice(at + 1, at + 4)).toEqual([
      `        ; remove the null MX (${HELO}. IN MX 0 .): RFC 7505 allows no other MX beside it`,
      `        ; mx.example.net receives mail for example.net: have it accept postmaster@${HELO} and abuse@${HELO} too`,
      `        ${HELO}. IN MX 10 mx.example.net.`,
    ]);
  });

  it('refuses a greeting name with "_" before asking DNS, naming the key', async () => {
    const file = path.join(dir, 'underscore.toml');
    writeFileSync(file, readFileSync(configFile, 'utf8').replace(`hostname = "${HOSTNAME}"`, 'hostname = "smtp_out.example.net"'));
    let out = '';
    let err = '';
    const code = await runCli(['--config', file, 'doctor', '--domain', DOMAIN], { stdout: (s) => (out += s), stderr: (s) => (err += s), stdin: async () => '', env: {} });
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toBe(`postern: ${file}: server.hostname: must be a host name such as smtp.example.com\n`);
  });

  it('refuses a --domain that is not a domain name', async () => {
    const r = await doctor(['--domain', 'not a domain']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--domain "not a domain" is not a domain name/);
  });
});
