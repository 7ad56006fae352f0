import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { BIN, BUILT, ROOT } from '../helpers/child.js';
import { cli } from '../helpers/cli.js';
import { certificate } from '../helpers/doctorZone.js';
import { freePort } from '../helpers/net.js';
import { startTestRelay, tempDir } from '../helpers/relay.js';
import { makeTestCa } from '../helpers/testca.js';

/** Can a user other than the owner read this file and reach it through every directory above? */
function othersMayRun(file: string): boolean {
  if (!(statSync(file).mode & 0o004)) return false;
  for (let d = path.dirname(file); ; d = path.dirname(d)) {
    if (!(statSync(d).mode & 0o001)) return false;
    if (d === path.dirname(d)) return true;
  }
}

interface Pair {
  cert: string;
  key: string;
}

let dir: string;
let pairA: Pair;
let pairB: Pair;
/** A regular file: a data_dir under it can never be created, even by root (ENOTDIR). */
let aFile: string;
/** Holds a loopback port, as another process (or a running relay) would. */
let blocker: net.Server;
let busy: string;

beforeAll(async () => {
  dir = tempDir('postern-config-');
  const write = async (name: string): Promise<Pair> => {
    const made = await certificate('smtp.test.example', Date.now() - 86_400_000, Date.now() + 30 * 86_400_000);
    const pair = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
    writeFileSync(pair.cert, made.cert);
    writeFileSync(pair.key, made.key);
    return pair;
  };
  [pairA, pairB] = await Promise.all([write('a'), write('b')]);
  aFile = path.join(dir, 'a-file');
  writeFileSync(aFile, 'not a directory\n');
  blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  busy = `127.0.0.1:${(blocker.address() as net.AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => blocker.close(() => r())));

/** A config in a directory of its own: good (a matching pair, free ports) unless told otherwise. */
function conf(o: { dataDir?: string; listenTls?: string; cert?: string; key?: string; text?: string } = {}): { file: string; home: string } {
  const home = tempDir('postern-config-case-');
  const file = path.join(home, 'postern.toml');
  writeFileSync(
    file,
    o.text ??
      `[server]
hostname = "smtp.test.example"
data_dir = ${JSON.stringify(o.dataDir ?? 'data')}
shutdown_grace_seconds = 2
[submission]
listen = ["127.0.0.1:0"]
listen_tls = [${JSON.stringify(o.listenTls ?? '127.0.0.1:0')}]
[tls]
cert = ${JSON.stringify(o.cert ?? pairA.cert)}
key = ${JSON.stringify(o.key ?? pairA.key)}
[identity]
helo = "mta-out.test.example"
ptr = "mail.test.example"
[metrics]
listen = "127.0.0.1:0"
[delivery]
enabled = false
[log]
level = "fatal"
`,
  );
  return { file, home };
}

/** The five start-up errors of issue 16, each as config check and serve must both say it. */
const CASES: Array<[string, () => { file: string; line: string }]> = [
  [
    'a certificate file that does not exist',
    () => {
      const { file } = conf({ cert: '/etc/postern/missing.crt' });
      return { file, line: 'tls.cert = "/etc/postern/missing.crt": no such file; set tls.cert to a PEM file or leave both empty for a self-signed certificate' };
    },
  ],
  [
    'a key that does not match the certificate',
    () => {
      const { file } = conf({ key: pairB.key });
      return { file, line: `tls.key = "${pairB.key}": does not match the certificate in tls.cert ("${pairA.cert}"); set tls.key to that certificate's private key, or tls.cert to this key's certificate` };
    },
  ],
  [
    'a data_dir that cannot be created',
    () => {
      const { file } = conf({ dataDir: path.join(aFile, 'data') });
      return { file, line: `server.data_dir = "${aFile}/data": cannot be created: ${aFile} is a file, not a directory; set server.data_dir to a directory path (it is created if missing)` };
    },
  ],
  [
    'a listen address in use',
    () => {
      const { file } = conf({ listenTls: busy });
      const port = busy.split(':')[1];
      return { file, line: `submission.listen_tls[0] = "${busy}": in use by another process (is the relay already running?); stop it (ss -ltnp 'sport = :${port}' names it) or set submission.listen_tls to a free address` };
    },
  ],
  [
    'a TOML syntax error',
    () => {
      // A path left unquoted, as an admin writes it by habit.
      const { file } = conf({ text: '[server]\nhostname = "smtp.test.example"\n[tls]\ncert = /etc/postern/a.crt\nkey = "a.key"\n' });
      return { file, line: `${file}:4:8: not valid TOML: invalid value\n3:  [tls]\n4:  cert = /etc/postern/a.crt\n           ^\n5:  key = "a.key"` };
    },
  ],
];

describe('postern config check', () => {
  it.each(CASES)('names the key, its value and the next step for %s, and exits 1', async (_name, make) => {
    const { file, line } = make();
    expect(await cli(file, ['config', 'check'])).toEqual({ code: 1, out: `${line}\n`, err: `postern: 1 problem in ${file}\n` });
  });

  it.each(CASES)('serve refuses to start over %s with the same line', async (_name, make) => {
    const { file, line } = make();
    expect(await cli(file, ['serve'])).toEqual({ code: 1, out: '', err: `postern: ${line}\n` });
  });

  it.skipIf(!BUILT)('serve as a process prints the line and exits 1 (a key that does not match)', async () => {
    const { file, line } = CASES[1]![1]();
    const child = spawn(process.execPath, [BIN, '--config', file, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect({ code, out, err }).toEqual({ code: 1, out: '', err: `postern: ${line}\n` });
  });

  it('lists every problem at once, and serve names each one it meets before opening anything', async () => {
    const { file, home } = conf({ cert: '/etc/postern/missing.crt', key: pairB.key, dataDir: path.join(aFile, 'data'), listenTls: busy });
    const lines = [
      'tls.cert = "/etc/postern/missing.crt": no such file; set tls.cert to a PEM file or leave both empty for a self-signed certificate',
      `server.data_dir = "${aFile}/data": cannot be created: ${aFile} is a file, not a directory; set server.data_dir to a directory path (it is created if missing)`,
      `submission.listen_tls[0] = "${busy}": in use by another process (is the relay already running?); stop it (ss -ltnp 'sport = :${busy.split(':')[1]}' names it) or set submission.listen_tls to a free address`,
    ];
    expect(await cli(file, ['config', 'check'])).toEqual({ code: 1, out: lines.map((l) => `${l}\n`).join(''), err: `postern: 3 problems in ${file}\n` });

    const json = await cli(file, ['config', 'check', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.out)).toEqual({
      file,
      ok: false,
      problems: [
        { key: 'tls.cert', value: '/etc/postern/missing.crt', problem: 'no such file', fix: 'set tls.cert to a PEM file or leave both empty for a self-signed certificate', message: lines[0] },
        { key: 'server.data_dir', value: `${aFile}/data`, problem: `cannot be created: ${aFile} is a file, not a directory`, fix: 'set server.data_dir to a directory path (it is created if missing)', message: lines[1] },
        { key: 'submission.listen_tls[0]', value: busy, problem: 'in use by another process (is the relay already running?)', fix: expect.stringMatching(/^stop it /), message: lines[2] },
      ],
      notes: [],
    });

    // The files are checked before the store opens: no database is made beside a bad certificate.
    expect(await cli(file, ['serve'])).toEqual({ code: 1, out: '', err: `postern: ${lines[0]}\npostern: ${lines[1]}\n` });
    expect(existsSync(path.join(home, 'data'))).toBe(false);
  });

  it('lists schema problems key by key and still checks the sections that validate', async () => {
    const { file } = conf({
      text: `[server]
hostname = "smtp.test.example"
data_dir = ${JSON.stringify(path.join(aFile, 'data'))}
colour = "blue"
[store]
url = "mysql://postern:s3cr3t-pw@db.example.com/postern"
[submission]
listen = ["587"]
[identity]
helo = "mail.test.example"
ptr = "mail.test.example"
`,
    });
    const r = await cli(file, ['config', 'check']);
    expect(r.code).toBe(1);
    expect(r.out.split('\n').slice(0, -1)).toEqual([
      'server.colour = "blue": unknown key; remove it or correct its spelling (config/postern.example.toml lists every key)',
      'store.url = "mysql://postern:(redacted)@db.example.com/postern": must be "" (SQLite in server.data_dir) or a URL such as "postgres://postern@db.example.com:5432/postern"',
      'submission.listen[0] = "587": must be "address:port", e.g. "[::]:587"',
      expect.stringMatching(/^identity\.helo equals identity\.ptr \("mail\.test\.example"\): /),
    ]);
    expect(r.err).toBe(`postern: 4 problems in ${file}\n`);
  });

  it('passes a good config with one OK line and creates nothing', async () => {
    const { file, home } = conf();
    expect(await cli(file, ['config', 'check'])).toEqual({
      code: 0,
      out: `OK: ${file} (certificate ${pairA.cert}; data_dir ${home}/data; listening on 127.0.0.1:0, 127.0.0.1:0, 127.0.0.1:0)\n`,
      err: '',
    });
    expect(JSON.parse((await cli(file, ['config', 'check', '--json'])).out)).toEqual({ file, ok: true, problems: [], notes: [] });
    expect(existsSync(path.join(home, 'data'))).toBe(false);
  });

  it("finds a running relay's own addresses in use, and relay.started lists them with their addresses", async () => {
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const t = await startTestRelay({
      submission: { listen: [`127.0.0.1:${p1}`], listen_tls: [`127.0.0.1:${p2}`] },
      metrics: { listen: `127.0.0.1:${p3}` },
      tls: { cert: pairA.cert, key: pairA.key },
    });
    try {
      expect(t.logs.events('relay.started')).toMatchObject([{ listen: [`127.0.0.1:${p1}`], listen_tls: [`127.0.0.1:${p2}`], metrics_listen: `127.0.0.1:${p3}`, starttls: [p1], tls: [p2], metrics: p3 }]);
      const { file } = conf({ text: `[server]\nhostname = "smtp.test.example"\ndata_dir = ${JSON.stringify(t.dir)}\n[submission]\nlisten = ["127.0.0.1:${p1}"]\nlisten_tls = ["127.0.0.1:${p2}"]\n[metrics]\nlisten = "127.0.0.1:${p3}"\n[identity]\nhelo = "mta-out.test.example"\nptr = "mail.test.example"\n` });
      const r = await cli(file, ['config', 'check', '--json']);
      expect(r.code).toBe(1);
      expect((JSON.parse(r.out) as { problems: Array<{ key: string; problem: string }> }).problems).toEqual(
        ['submission.listen[0]', 'submission.listen_tls[0]', 'metrics.listen'].map((key) => expect.objectContaining({ key, problem: 'in use by another process (is the relay already running?)' })),
      );
    } finally {
      await t.stop();
    }
  });

  // Run as root, the suite cannot see a permission refused; a child as nobody can, where it
  // may reach node and the built CLI (a checkout under a private home directory it may not).
  it.skipIf(!BUILT || process.getuid?.() !== 0 || !othersMayRun(process.execPath) || !othersMayRun(path.join(ROOT, 'dist/src/cli/postern.js')))('as an unprivileged user: files it may not read and a data_dir it may not create are problems, a low port it may not bind a note', async () => {
    const { file, home } = conf();
    const text = readFileSync(file, 'utf8').replace('data_dir = "data"', 'data_dir = "root-only/data"').replace('listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:1"]');
    writeFileSync(file, text);
    mkdirSync(path.join(home, 'root-only'), { mode: 0o755 });
    chmodSync(home, 0o755);
    chmodSync(file, 0o644);
    const child = spawn(process.execPath, [BIN, '--config', file, 'config', 'check'], { stdio: ['ignore', 'pipe', 'pipe'], uid: 65534, gid: 65534 });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    // The user's name is whatever the system calls uid 65534 (nobody, nfsnobody).
    const as = (t: string) => t.replace(/user \S+ \(uid 65534\)/g, 'USER');
    expect({ code, out: as(out), err: as(err) }).toEqual({
      code: 1,
      out: [
        `tls.cert = "${pairA.cert}": not readable by USER; make it readable by the user the relay runs as (e.g. chgrp postern ${pairA.cert}; chmod 0640 ${pairA.cert})`,
        `tls.key = "${pairA.key}": not readable by USER; make it readable by the user the relay runs as (e.g. chgrp postern ${pairA.key}; chmod 0640 ${pairA.key})`,
        `server.data_dir = "${home}/root-only/data": does not exist and cannot be created: ${home}/root-only is not writable by USER; create it for the relay's user (install -d -o postern -m 0750 ${home}/root-only/data) or set server.data_dir to a directory that user can write`,
        '',
      ].join('\n'),
      err: `postern: note: submission.listen[0] = "127.0.0.1:1": not bound by this check (USER may not bind it) and nothing answers there; the relay needs root or CAP_NET_BIND_SERVICE\npostern: 3 problems in ${file}\n`,
    });
  });

  it('checks that the [geo] files are there and are files, naming each by its key, without loading them', async () => {
    const { file, home } = conf();
    mkdirSync(path.join(home, 'geo'));
    // Not CSV at all: the check reads no file, so only a load would find this out (geo.load_failed).
    writeFileSync(path.join(home, 'geo', 'country-ipv4.csv'), 'not,a,database\n');
    writeFileSync(file, `${readFileSync(file, 'utf8')}[geo]\ncountry_db = ["geo/country-ipv4.csv", "geo/country-ipv6.csv"]\nasn_db = "geo"\n`);
    const lines = [
      `geo.country_db[1] = "${home}/geo/country-ipv6.csv": no such file; set geo.country_db to an ip-location-db CSV file or a MaxMind .mmdb file, or to "" for the data bundled with Postern`,
      `geo.asn_db = "${home}/geo": is a directory, not a file; set geo.asn_db to an ip-location-db CSV file or a MaxMind .mmdb file, or to "" for the data bundled with Postern`,
    ];
    expect(await cli(file, ['config', 'check'])).toEqual({ code: 1, out: lines.map((l) => `${l}\n`).join(''), err: `postern: 2 problems in ${file}\n` });
    expect(await cli(file, ['serve'])).toEqual({ code: 1, out: '', err: lines.map((l) => `postern: ${l}\n`).join('') });

    writeFileSync(path.join(home, 'geo', 'country-ipv6.csv'), '');
    writeFileSync(file, readFileSync(file, 'utf8').replace('asn_db = "geo"', 'asn_db = "geo/GeoLite2-ASN.mmdb"'));
    writeFileSync(path.join(home, 'geo', 'GeoLite2-ASN.mmdb'), '');
    expect(await cli(file, ['config', 'check'])).toMatchObject({ code: 0, out: expect.stringMatching(/^OK: /), err: '' });
  });

  it('checks [delivery] tls_ca_file, relative to the config file, for a readable file of certificates', async () => {
    const { file, home } = conf();
    writeFileSync(file, readFileSync(file, 'utf8').replace(/^\[delivery\]$/m, '[delivery]\ntls_ca_file = "ca.pem"'));
    expect(readFileSync(file, 'utf8')).toContain('tls_ca_file = "ca.pem"');
    const fix = 'set delivery.tls_ca_file to a PEM file of CA certificates ("-----BEGIN CERTIFICATE-----"), readable by the relay, or "" for Node\'s CAs only';
    const missing = `delivery.tls_ca_file = "${home}/ca.pem": no such file; ${fix}`;
    expect(await cli(file, ['config', 'check'])).toEqual({ code: 1, out: `${missing}\n`, err: `postern: 1 problem in ${file}\n` });
    expect(await cli(file, ['serve'])).toEqual({ code: 1, out: '', err: `postern: ${missing}\n` });
    writeFileSync(path.join(home, 'ca.pem'), 'not a certificate\n');
    expect(await cli(file, ['config', 'check'])).toEqual({ code: 1, out: `delivery.tls_ca_file = "${home}/ca.pem": holds no certificate (no "-----BEGIN CERTIFICATE-----" block); ${fix}\n`, err: `postern: 1 problem in ${file}\n` });
    writeFileSync(path.join(home, 'ca.pem'), readFileSync(makeTestCa(tempDir('postern-ca-file-')).caFile));
    expect(await cli(file, ['config', 'check'])).toMatchObject({ code: 0, out: expect.stringMatching(/^OK: /), err: '' });
  });

  it('says when two keys take one port, rather than blaming another process', async () => {
    const port = await freePort();
    const { file } = conf({ text: `[server]\nhostname = "smtp.test.example"\ndata_dir = "data"\n[submission]\nlisten = ["127.0.0.1:${port}"]\nlisten_tls = ["0.0.0.0:${port}"]\n[metrics]\nenabled = false\n[identity]\nhelo = "mta-out.test.example"\nptr = "mail.test.example"\n` });
    expect(await cli(file, ['config', 'check'])).toMatchObject({
      code: 1,
      out: `submission.listen_tls[0] = "0.0.0.0:${port}": clashes with submission.listen[0] ("127.0.0.1:${port}") on port ${port}; give each port once (an address of [::] or 0.0.0.0 takes the port on every address)\n`,
    });
  });

  it('refuses an unknown subcommand as a usage error', async () => {
    const { file } = conf();
    expect(await cli(file, ['config', 'lint'])).toMatchObject({ code: 2, err: expect.stringMatching(/^postern: unknown config command: lint\n\nUsage: postern config check/) });
    expect(await cli(file, ['config', 'show', '--everything'])).toMatchObject({ code: 2, err: expect.stringMatching(/Unknown option '--everything'/) });
  });
});

describe('postern config show', () => {
  const SECRETS = ['s3cr3t-pw', 'k3y-pw', 'r3dis-pw'];
  let file: string;
  let home: string;
  beforeAll(() => {
    ({ file, home } = conf({
      text: `[server]
hostname = "smtp.example.com"
data_dir = "state"
[store]
url = "postgres://postern:s3cr3t-pw@db.example.com:5432/postern?sslmode=verify-full&sslpassword=k3y-pw"
[submission]
listen = ["[::]:2587"]
[limits]
redis = "redis://:r3dis-pw@cache.example.com:6379"
messages_per_hour = 100
[delivery]
tls_policy = { "bank.example" = "verify" }
[quarantine.weights]
link_shortener = 0
`,
    }));
  });

  it('prints only the keys that differ from the default, relative paths resolved, passwords redacted', async () => {
    expect(await cli(file, ['config', 'show'])).toEqual({
      code: 0,
      out: [
        'server.hostname = "smtp.example.com"',
        `server.data_dir = "${home}/state"`,
        'store.url = "postgres://postern:(redacted)@db.example.com:5432/postern?sslmode=verify-full&sslpassword=(redacted)"',
        'submission.listen = ["[::]:2587"]',
        'delivery.tls_policy."bank.example" = "verify"',
        'limits.messages_per_hour = 100',
        'limits.redis = "redis://:(redacted)@cache.example.com:6379"',
        'quarantine.weights.link_shortener = 0',
        '',
      ].join('\n'),
      err: '',
    });
  });

  it('prints every key with --all', async () => {
    const r = await cli(file, ['config', 'show', '--all']);
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split('\n');
    // One line per key of the schema (an empty table such as tls_policy is one key).
    const count = (v: unknown): number => (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length ? Object.values(v).reduce<number>((n, x) => n + count(x), 0) : 1);
    expect(lines).toHaveLength(count(parseConfig({}, '/')));
    expect(lines).toEqual(expect.arrayContaining(['auth.argon2_time_cost = 2', 'tls.cert = ""', 'submission.listen_tls = ["[::]:465"]', 'delivery.tls_policy."bank.example" = "verify"', 'log.level = "info"']));
    for (const s of SECRETS) expect(r.out).not.toContain(s);
  });

  it('gives the same keys as JSON, nested as in the file', async () => {
    const r = await cli(file, ['config', 'show', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({
      server: { hostname: 'smtp.example.com', data_dir: `${home}/state` },
      store: { url: 'postgres://postern:(redacted)@db.example.com:5432/postern?sslmode=verify-full&sslpassword=(redacted)' },
      submission: { listen: ['[::]:2587'] },
      delivery: { tls_policy: { 'bank.example': 'verify' } },
      limits: { messages_per_hour: 100, redis: 'redis://:(redacted)@cache.example.com:6379' },
      quarantine: { weights: { link_shortener: 0 } },
    });
    const all = await cli(file, ['config', 'show', '--all', '--json']);
    expect(JSON.parse(all.out)).toMatchObject({ auth: { argon2_time_cost: 2 }, store: { url: expect.stringContaining('(redacted)') }, delivery: { tls_policy: { 'bank.example': 'verify' } } });
    for (const s of SECRETS) expect(all.out).not.toContain(s);
  });
});
