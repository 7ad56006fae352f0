import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { sqliteHandle } from '../../src/store/index.js';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.js';
import { openStore } from '../../src/store/index.js';
import { startDnsServer, type DnsServer } from '../helpers/dnsd.js';
import { certificate, DOMAIN, drop, edit, goodZone, HELO, HOSTNAME, IP, newRsaKey, PTR, SELECTOR } from '../helpers/doctorZone.js';
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
    expect(doc.counts).toEqual({ FAIL: 0, WARN: 0, PASS: 27, INFO: 0 });
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
    expect(plain.out).toMatch(/\n\n1 FAIL, 26 PASS: publish the records shown under each FAIL and WARN, then run postern doctor again\n$/);
    const tty = await doctor(['--domain', DOMAIN], true);
    expect(tty.out).toContain('\x1b[1;31mFAIL\x1b[0m    domain.dmarc');
    expect(tty.out).toContain('\x1b[32mPASS\x1b[0m    identity.outbound_ip');
  });

  it('checks the store\'s key once it is newer than the key file: failing until its record is published', async () => {
    let out = '';
    const made = await runCli(['--config', configFile, 'dkim', 'keygen', DOMAIN, '--selector', 'pst2027', '--json'], { stdout: (s) => (out += s), stderr: () => undefined, stdin: async () => '', env: {} });
    expect(made).toBe(0);
    const key = JSON.parse(out) as { txt_name: string; txt_value: string };
    dns.setRecords(zone);
    const before = JSON.parse((await doctor(['--json', '--domain', DOMAIN])).out) as { checks: Array<{ id: string }> };
    expect(before.checks.filter((c) => c.id === 'domain.dkim')).toEqual([
      expect.objectContaining({ status: 'FAIL', subject: `pst2027._domainkey.${DOMAIN}`, reason: 'no DKIM key published: receivers cannot verify what Postern signs with the key of selector pst2027 in the store' }),
    ]);
    dns.setRecords([...zone, { type: 'TXT', name: key.txt_name, data: key.txt_value }]);
    const after = JSON.parse((await doctor(['--json', '--domain', DOMAIN])).out) as { checks: Array<{ id: string }> };
    expect(after.checks.filter((c) => c.id === 'domain.dkim')).toEqual([
      expect.objectContaining({ status: 'PASS', subject: `pst2027._domainkey.${DOMAIN}`, reason: 'publishes the public half of the key of selector pst2027 in the store' }),
    ]);
  });

  it('refuses a --domain that is not a domain name', async () => {
    const r = await doctor(['--domain', 'not a domain']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--domain "not a domain" is not a domain name/);
  });
});
