import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import selfsigned from 'selfsigned';
import { reloadFromFile } from '../src/cli/serve.js';
import { ConfigError } from '../src/config/load.js';
import { fingerprint } from '../src/reload.js';
import { writeConfig } from './helpers/cli.js';
import { startTestRelay, tempDir, testConfig, type TestRelay } from './helpers/relay.js';
import { SmtpClient } from './helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';

interface Pair {
  cert: string;
  key: string;
}

async function makePair(dir: string, name: string): Promise<Pair> {
  const now = new Date();
  const p = await selfsigned.generate([{ name: 'commonName', value: 'smtp.test.example' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: now,
    notAfterDate: new Date(now.getTime() + 86_400_000),
  });
  const pair = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  writeFileSync(pair.cert, p.cert);
  writeFileSync(pair.key, p.private);
  return pair;
}

/** Installs a pair where the config points, as certbot's deploy hook would. */
function install(pair: Pair, live: Pair): void {
  copyFileSync(pair.cert, live.cert);
  copyFileSync(pair.key, live.key);
}

let certDir: string;
let oldPair: Pair;
let newPair: Pair;
beforeAll(async () => {
  certDir = tempDir('postern-certs-');
  oldPair = await makePair(certDir, 'old');
  newPair = await makePair(certDir, 'new');
});

let t: TestRelay | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

const served = (c: SmtpClient) => c.tlsSocket!.getPeerCertificate().fingerprint256;

async function relayWithLiveCert(): Promise<{ t: TestRelay; live: Pair; reread: () => ReturnType<typeof testConfig> }> {
  const live = { cert: path.join(certDir, `live-${Math.random()}.crt`), key: path.join(certDir, `live-${Math.random()}.key`) };
  install(oldPair, live);
  const relay = await startTestRelay({ tls: live });
  return { t: relay, live, reread: () => testConfig(relay.dir, { tls: live }) };
}

describe('SIGHUP reload', () => {
  it('serves a renewed certificate to new clients while an open session carries on', async () => {
    const r = await relayWithLiveCert();
    t = r.t;
    await t.addUser('alice', PASS);
    const open = await SmtpClient.connect(t.tlsPort, { tls: true });
    expect(served(open)).toBe(fingerprint(readFileSync(oldPair.cert)));

    install(newPair, r.live);
    const out = await reloadFromFile(t.relay, r.reread);
    const want = fingerprint(readFileSync(newPair.cert));
    expect(out).toEqual({ ok: true, fingerprint: want, restartNeeded: [] });
    expect(t.logs.events('config.reloaded').at(-1)).toMatchObject({ cert_sha256: want });

    const implicit = await SmtpClient.connect(t.tlsPort, { tls: true });
    expect(served(implicit)).toBe(want);
    await implicit.quit();
    const starttls = await SmtpClient.connect(t.port);
    await starttls.cmd('EHLO client.example');
    await starttls.starttls();
    expect(served(starttls)).toBe(want);
    await starttls.quit();

    // The session opened before the reload keeps its handshake and goes on to send.
    expect(served(open)).not.toBe(want);
    expect(await open.login('alice', PASS)).toMatch(/^235/);
    expect(await open.send('alice@example.com', ['bob@elsewhere.example'], MSG)).toMatch(/^250 2\.0\.0 Ok/);
    await open.quit();
  });

  it('refuses a config that does not validate and keeps the running one', async () => {
    const r = await relayWithLiveCert();
    t = r.t;
    const before = fingerprint(readFileSync(oldPair.cert));
    install(newPair, r.live);
    const out = await reloadFromFile(t.relay, () => {
      throw new ConfigError('postern.toml: limits.messages_per_hour: Too small: expected number to be >=1');
    });
    expect(out).toEqual({ ok: false, error: 'postern.toml: limits.messages_per_hour: Too small: expected number to be >=1' });
    expect(t.logs.events('config.reload_refused')).toMatchObject([{ reason: 'config', level: 'error' }]);
    const c = await SmtpClient.connect(t.tlsPort, { tls: true });
    expect(served(c)).toBe(before);
    await c.quit();
  });

  it('refuses a key that does not match its certificate and keeps serving the old pair', async () => {
    const r = await relayWithLiveCert();
    t = r.t;
    const before = fingerprint(readFileSync(oldPair.cert));
    copyFileSync(newPair.cert, r.live.cert); // the key is still the old one
    const out = await reloadFromFile(t.relay, r.reread);
    expect(out).toMatchObject({ ok: false, error: expect.stringMatching(/^TLS certificate or key unusable/) });
    expect(t.logs.events('config.reload_refused')).toMatchObject([{ reason: 'tls' }]);
    for (const port of [t.tlsPort, t.port]) {
      const c = await SmtpClient.connect(port, { tls: port === t.tlsPort });
      if (port === t.port) {
        await c.cmd('EHLO client.example');
        await c.starttls();
      }
      expect(served(c)).toBe(before);
      await c.quit();
    }
  });

  it('names the changed keys that need a restart rather than half-applying them', async () => {
    const r = await relayWithLiveCert();
    t = r.t;
    const out = await reloadFromFile(t.relay, () => testConfig(t!.dir, { tls: r.live, limits: { messages_per_hour: 5 }, log: { level: 'warn' } }));
    expect(out).toMatchObject({ ok: true, restartNeeded: ['limits.messages_per_hour'] });
    expect(t.logs.events('config.restart_needed')).toMatchObject([{ keys: ['limits.messages_per_hour'] }]);
  });
});

describe('SIGHUP and the IP database', () => {
  it('reads the [geo] files again, new paths included, without a restart; a broken file keeps the old data', async () => {
    const dir = tempDir('postern-geo-reload-');
    const file = (name: string, text: string) => {
      writeFileSync(path.join(dir, name), text);
      return path.join(dir, name);
    };
    const country = file('country.csv', '1.0.0.0,1.0.0.255,AU\n');
    const asn = file('asn.csv', '1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."\n');
    t = await startTestRelay({ geo: { country_db: country, asn_db: asn } });
    const relay = t.relay;
    const reread = (geo: { country_db: string | string[]; asn_db: string }) => () => testConfig(t!.dir, { geo });

    // Not loaded yet: a reload leaves it so, and the next need reads the files as they are then.
    file('country.csv', '1.0.0.0,1.0.0.255,NZ\n');
    expect(await reloadFromFile(relay, reread({ country_db: country, asn_db: asn }))).toMatchObject({ ok: true, restartNeeded: [] });
    expect(relay.geo.loaded()).toBeNull();
    await relay.geo.get();
    expect(relay.geo.describe('1.0.0.9')).toBe('1.0.0.9, NZ, AS13335 Cloudflare, Inc.');

    // Loaded: a file replaced in place, and a new list of paths, are read at the reload.
    file('country.csv', '1.0.0.0,1.0.0.255,FR\n');
    const v6 = file('country-v6.csv', '2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n');
    expect(await reloadFromFile(relay, reread({ country_db: [country, v6], asn_db: asn }))).toMatchObject({ ok: true, restartNeeded: [] });
    expect(relay.geo.describe('1.0.0.9')).toBe('1.0.0.9, FR, AS13335 Cloudflare, Inc.');
    expect(relay.geo.describe('2001:200::1')).toBe('2001:200::1, JP');
    expect(t.logs.events('geo.reloaded')).toMatchObject([{ country_source: `${country}, ${v6}`, asn_source: asn }]);

    const broken = file('broken.csv', '1.0.0.0,1.0.0.255\n');
    expect(await reloadFromFile(relay, reread({ country_db: broken, asn_db: asn }))).toMatchObject({ ok: true, restartNeeded: [] });
    expect(t.logs.events('geo.load_failed')).toMatchObject([{ key: 'geo.country_db', file: broken, kept: true }]);
    expect(relay.geo.describe('1.0.0.9')).toBe('1.0.0.9, FR, AS13335 Cloudflare, Inc.');
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('SIGHUP to a running "postern serve"', () => {
  // Runs the compiled CLI (npm test builds first); a stale build would test old code.
  const built = (() => {
    try {
      return readFileSync(path.resolve('dist/src/cli/serve.js'), 'utf8').includes('SIGHUP');
    } catch {
      return false;
    }
  })();

  it.skipIf(!built)(`swaps the certificate in the child process and keeps serving${built ? '' : ' (skipped: run npm run build first)'}`, async () => {
    const dir = tempDir('postern-serve-');
    const live = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
    install(oldPair, live);
    const file = writeConfig(dir, `[tls]\ncert = "live.crt"\nkey = "live.key"\n`);
    const child = spawn(process.execPath, ['bin/postern.js', '--config', file, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: Array<Record<string, unknown>> = [];
    const waiters: Array<() => void> = [];
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      pending += d;
      let i;
      while ((i = pending.indexOf('\n')) !== -1) {
        lines.push(JSON.parse(pending.slice(0, i)) as Record<string, unknown>);
        pending = pending.slice(i + 1);
      }
      waiters.splice(0).forEach((w) => w());
    });
    const event = async (name: string) => {
      for (;;) {
        const hit = lines.find((l) => l.event === name);
        if (hit) return hit;
        if (child.exitCode !== null) throw new Error(`postern serve exited ${child.exitCode} before ${name}`);
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    try {
      const started = await event('relay.started');
      const tlsPort = (started.tls as number[])[0]!;
      const open = await SmtpClient.connect(tlsPort, { tls: true });
      expect(served(open)).toBe(fingerprint(readFileSync(oldPair.cert)));
      install(newPair, live);
      child.kill('SIGHUP');
      expect(await event('config.reloaded')).toMatchObject({ cert_sha256: fingerprint(readFileSync(newPair.cert)) });
      const fresh = await SmtpClient.connect(tlsPort, { tls: true });
      expect(served(fresh)).toBe(fingerprint(readFileSync(newPair.cert)));
      await fresh.quit();
      expect(await open.cmd('NOOP')).toMatch(/^250/);
      await open.quit();
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
