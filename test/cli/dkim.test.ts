import { chownSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import { generateKeyPairSync } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { txtData } from '../../src/dns/names.js';
import { openStore } from '../../src/store/index.js';
import { cli } from '../helpers/cli.js';
import { startDnsServer, type DnsServer } from '../helpers/dnsd.js';
import { tempDir } from '../helpers/relay.js';

let dns: DnsServer;
let dir: string;
let config: string;
let key: { txt_name: string; txt_value: string };

/** The record the CLI tells the admin to publish, as the doctor writes it. */
const fix = () => `${key.txt_name}. IN TXT ${txtData(key.txt_value)}`;
const NEXT = 'Once the record is published, run this again (postern doctor --domain example.com shows what DNS answers), or add --force to switch anyway';
const other = () => `v=DKIM1; k=rsa; p=${generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

beforeAll(async () => {
  dns = await startDnsServer();
  dir = tempDir();
  config = path.join(dir, 'postern.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "data"\n[delivery]\ndns_servers = ["${dns.address}"]\n`);
  const made = await cli(config, ['dkim', 'keygen', 'example.com', '--selector', 'pst1', '--json']);
  expect(made).toMatchObject({ code: 0, err: '' });
  key = JSON.parse(made.out) as typeof key;
});
afterAll(async () => {
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('postern dkim activate', () => {
  it('refuses while DNS has no record, another key or a revoked one, saying what it found and what to publish; the key stays inactive', async () => {
    const via = `[delivery] dns_servers ${dns.address}`;
    dns.setRecords([]);
    expect(await cli(config, ['dkim', 'activate', 'example.com', 'pst1'])).toEqual({
      code: 1,
      out: '',
      err: `postern: not activated: pst1._domainkey.example.com has no DKIM record (asked ${via}): receivers could not verify a single signature. Publish:\n\n${fix()}\n\n${NEXT}\n`,
    });
    dns.setRecords([{ type: 'TXT', name: key.txt_name, data: 'v=spf1 -all' }]);
    expect((await cli(config, ['dkim', 'activate', 'example.com', 'pst1'])).err).toBe(
      `postern: not activated: pst1._domainkey.example.com has no DKIM record, only TXT "v=spf1 -all" (asked ${via}): receivers could not verify a single signature. Publish:\n\n${fix()}\n\n${NEXT}\n`,
    );
    const another = other();
    dns.setRecords([{ type: 'TXT', name: key.txt_name, data: another.match(/.{1,255}/g)! }]);
    expect(await cli(config, ['dkim', 'activate', 'example.com', 'pst1'])).toEqual({
      code: 1,
      out: '',
      err: `postern: not activated: pst1._domainkey.example.com publishes another key than the stored one, ${JSON.stringify(another)} (asked ${via}): every signature would fail. Publish:\n\n${fix()}\n\n${NEXT}\n`,
    });
    dns.setRecords([{ type: 'TXT', name: key.txt_name, data: 'v=DKIM1; p=' }]);
    expect((await cli(config, ['dkim', 'activate', 'example.com', 'pst1'])).err).toBe(
      `postern: not activated: pst1._domainkey.example.com publishes a revoked key, "v=DKIM1; p=" (asked ${via}): every signature would fail. Publish:\n\n${fix()}\n\n${NEXT}\n`,
    );
    expect(JSON.parse((await cli(config, ['dkim', 'list', '--json'])).out)).toEqual([
      { domain: 'example.com', selector: 'pst1', state: 'inactive', created: expect.any(String), activated: null, signing: false },
    ]);
  });

  it('refuses when the resolver does not answer, and names it', async () => {
    // A UDP port nobody listens on: the kernel answers "port unreachable" at once.
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const dead = `127.0.0.1:${sock.address().port}`;
    await new Promise<void>((r) => sock.close(() => r()));
    const deadConfig = path.join(dir, 'dead.toml');
    writeFileSync(deadConfig, `[server]\nhostname = "smtp.test.example"\ndata_dir = "data"\n[delivery]\ndns_servers = ["${dead}"]\n`);
    const r = await cli(deadConfig, ['dkim', 'activate', 'example.com', 'pst1']);
    expect(r).toMatchObject({ code: 1, out: '' });
    expect(r.err).toMatch(new RegExp(`^postern: not activated: could not look up the TXT record of pst1\\._domainkey\\.example\\.com through \\[delivery\\] dns_servers ${dead} \\(ECONNREFUSED\\): .*\\n\\n${NEXT.replace(/[()]/g, '\\$&')}\\n$`));
  });

  it('says what is wrong with the arguments: exit 2 for a missing selector, 1 for a selector the store does not have', async () => {
    const usage = await cli(config, ['dkim', 'activate', 'example.com']);
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/^postern: postern dkim activate needs a DOMAIN and a SELECTOR\n\nUsage: postern dkim COMMAND/);
    expect(await cli(config, ['dkim', 'activate', 'example.com', 'pst9'])).toEqual({
      code: 1,
      out: '',
      err: 'postern: no key for selector pst9 of example.com in the store (example.com has pst1; see: postern dkim list, or make one: postern dkim keygen example.com --selector pst9)\n',
    });
    expect((await cli(config, ['dkim', 'activate', 'example.org', 'pst1'])).err).toBe(
      'postern: no key for selector pst1 of example.org in the store (example.org has no keys; see: postern dkim list, or make one: postern dkim keygen example.org --selector pst1)\n',
    );
  });
});

describe('postern dkim list and the doctor, through a rotation', () => {
  it('shows each key as inactive, signing or retired; the doctor checks the signing key and the one staged after it', async () => {
    const doctorDkim = async () => {
      const r = await cli(config, ['doctor', '--json', '--domain', 'example.com']);
      return (JSON.parse(r.out) as { checks: Array<{ id: string; subject: string; status: string; reason: string; fix: string | null }> }).checks.filter((c) => c.id === 'domain.dkim');
    };
    dns.setRecords([]);
    // Only an inactive key: nothing signs, and the doctor says so beside the step still to take.
    expect(await doctorDkim()).toEqual([
      {
        id: 'domain.dkim',
        subject: 'example.com',
        status: 'WARN',
        reason: 'no active DKIM key for example.com: mail goes unsigned until one is activated (postern dkim activate example.com SELECTOR, once its record is published)',
        fix: null,
      },
      {
        id: 'domain.dkim',
        subject: 'pst1._domainkey.example.com',
        status: 'WARN',
        reason: 'the inactive key of selector pst1 in the store is not published yet: publish its record, then switch signing to it with postern dkim activate example.com pst1',
        fix: fix(),
      },
    ]);
    dns.setRecords([{ type: 'TXT', name: key.txt_name, data: key.txt_value.match(/.{1,255}/g)! }]);
    expect((await doctorDkim()).map((c) => [c.status, c.subject, c.reason])).toEqual([
      ['WARN', 'example.com', expect.stringMatching(/^no active DKIM key for example\.com/)],
      ['PASS', 'pst1._domainkey.example.com', 'publishes the public half of the inactive key of selector pst1 in the store: switch signing to it with postern dkim activate example.com pst1'],
    ]);
    expect(await cli(config, ['dkim', 'activate', 'example.com', 'pst1'])).toMatchObject({ code: 0, err: '' });
    const second = JSON.parse((await cli(config, ['dkim', 'keygen', 'example.com', '--selector', 'pst2', '--json'])).out) as typeof key;
    expect((await doctorDkim()).map((c) => [c.status, c.subject])).toEqual([
      ['PASS', 'pst1._domainkey.example.com'],
      ['WARN', 'pst2._domainkey.example.com'],
    ]);
    expect(await cli(config, ['dkim', 'activate', 'example.com', 'pst2', '--force'])).toMatchObject({ code: 0 });
    expect((await cli(config, ['dkim', 'keygen', 'example.com', '--selector', 'pst3'])).code).toBe(0);
    // The signing key's record is missing: a FAIL (mail is signed with it now); pst1, retired, is not checked.
    expect((await doctorDkim()).map((c) => [c.status, c.subject])).toEqual([
      ['FAIL', 'pst2._domainkey.example.com'],
      ['WARN', 'pst3._domainkey.example.com'],
    ]);

    const listed = await cli(config, ['dkim', 'list']);
    expect(listed.code).toBe(0);
    const rows = listed.out.trimEnd().split('\n');
    expect(rows[0]).toBe('DOMAIN       SELECTOR  STATE     CREATED               ACTIVATED');
    expect(rows.slice(1).map((r) => r.split(/ +/))).toEqual([
      ['example.com', 'pst3', 'inactive', expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/), '-'],
      ['example.com', 'pst2', 'signing', expect.any(String), expect.stringMatching(/^\d{4}-/)],
      ['example.com', 'pst1', 'retired', expect.any(String), expect.stringMatching(/^\d{4}-/)],
    ]);
    const json = JSON.parse((await cli(config, ['dkim', 'list', '--json'])).out) as Array<Record<string, unknown>>;
    expect(json.map((k) => [k.selector, k.state, k.activated === null, k.signing])).toEqual([
      ['pst3', 'inactive', true, false],
      ['pst2', 'signing', false, true],
      ['pst1', 'retired', false, false],
    ]);
    expect(Object.keys(json[0]!)).toEqual(['domain', 'selector', 'state', 'created', 'activated', 'signing']);
    expect(second.txt_name).toBe('pst2._domainkey.example.com');
  });
});

describe.runIf(process.getuid?.() === 0)('postern run as root', () => {
  it('warns on stderr when data_dir belongs to another user, naming the files root would create or already owns, and the sudo -u to use', async () => {
    const root = tempDir();
    try {
      const data = path.join(root, 'data');
      mkdirSync(data);
      chownSync(data, 65534, 65534);
      const owner = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[2] === '65534')?.split(':')[0] ?? '#65534';
      const file = path.join(root, 'postern.toml');
      writeFileSync(file, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${data}"\n`);
      const first = await cli(file, ['dkim', 'list']);
      expect(first).toEqual({
        code: 0,
        out: 'no DKIM keys (create one: postern dkim keygen DOMAIN --selector SELECTOR)\n',
        err: `postern: warning: running as root; data_dir ${data} belongs to ${owner}: this command creates postern.db, postern.db-wal, postern.db-shm there as root, which the relay, running as ${owner}, cannot open. Run it as ${owner} instead: sudo -u ${owner} postern --config ${file} dkim list\n`,
      });
      // The database it made is root's now: the next command says so, and how to give it back.
      expect(statSync(path.join(data, 'postern.db')).uid).toBe(0);
      const db = path.join(data, 'postern.db');
      expect((await cli(file, ['dkim', 'keygen', 'example.com', '--selector', 's1'])).err).toBe(
        `postern: warning: running as root; data_dir ${data} belongs to ${owner}, but ${db} does not: the relay, running as ${owner}, cannot open the database. Give it back (chown ${owner} ${db}) and run postern as ${owner}: sudo -u ${owner} postern --config ${file} dkim keygen example.com --selector s1\n`,
      );
      // Every command that opens the store says the same, naming itself.
      expect((await cli(file, ['user', 'list'])).err).toBe(
        `postern: warning: running as root; data_dir ${data} belongs to ${owner}, but ${db} does not: the relay, running as ${owner}, cannot open the database. Give it back (chown ${owner} ${db}) and run postern as ${owner}: sudo -u ${owner} postern --config ${file} user list\n`,
      );
      // Owned by the service user, with a relay holding it open (its -wal and -shm exist): nothing to warn about.
      chownSync(db, 65534, 65534);
      const relay = openStore(data);
      for (const f of ['postern.db-wal', 'postern.db-shm']) chownSync(path.join(data, f), 65534, 65534);
      try {
        expect((await cli(file, ['dkim', 'list'])).err).toBe('');
      } finally {
        relay.close();
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
