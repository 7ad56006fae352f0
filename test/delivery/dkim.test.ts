import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { startTestRelay, tempDir } from '../helpers/relay.js';
import path from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { generateKeyPairSync } from 'node:crypto';
import { DkimSigner, dkimSign, dkimTxtRecord, relaxedBody, relaxedHeader } from '../../src/delivery/dkim.js';
import { ManualClock } from '../../src/domain/clock.js';
import { openDb } from '../../src/store/db.js';
import { migrate, readMigrations } from '../../src/store/migrate.js';
import { openStore } from '../../src/store/index.js';
import { createResolver } from '../../src/dns/resolver.js';
import { startDnsServer } from '../helpers/dnsd.js';
import { cli } from '../helpers/cli.js';
import type { Rr } from '../helpers/dnsd.js';
import { closeDeliveryFixtures, startHarness, type Harness } from '../helpers/delivery.js';
import { startSinks, type Sink } from '../helpers/sink.js';

let h: Harness | undefined;
let sinks: Sink[] = [];
// Everything a test starts is closed after it, whatever the test left assigned here.
afterEach(closeDeliveryFixtures);

const zone: Rr[] = [
  { type: 'A', name: 'mx.dest.example', data: '127.0.0.2' },
  { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } },
];

describe('DKIM', () => {
  it('keygen stores an inactive key and prints its record; nothing is signed until activate has seen the record in DNS, then outgoing mail verifies with mailauth', async () => {
    sinks = await startSinks(['127.0.0.2']);
    h = await startHarness({ records: zone, port: sinks[0]!.port });
    const config = path.join(h.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n[delivery]\ndns_servers = ["${h.dns.address}"]\n`);

    const out = await cli(config, ['dkim', 'keygen', 'Sender.Example', '--selector', 'pst1', '--json']);
    expect(out.code).toBe(0);
    const key = JSON.parse(out.out) as { domain: string; selector: string; state: string; stored: string; key_file: null; txt_name: string; txt_value: string };
    expect(key).toMatchObject({ domain: 'sender.example', selector: 'pst1', state: 'inactive', stored: 'store', key_file: null, txt_name: 'pst1._domainkey.sender.example' });
    expect(key.txt_value).toMatch(/^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$/);
    // In the store, where every node finds it; no key file is written.
    const stored = await h.store.dkim.list();
    expect(stored.map((k) => [k.domain, k.selector, k.activatedAt])).toEqual([['sender.example', 'pst1', null]]);
    expect(stored[0]!.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(dkimTxtRecord('sender.example', 'pst1', stored[0]!.privateKeyPem).value).toBe(key.txt_value);
    expect(existsSync(path.join(h.dir, 'dkim'))).toBe(false);
    // The human form is a zone-file line with 255-byte strings.
    const human = await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst1']);
    expect(human).toMatchObject({ code: 1, err: 'postern: a key for selector pst1 of sender.example already exists in the store: choose a new selector to rotate (see: postern dkim list)\n' });
    const bad = await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'a_b']);
    expect(bad).toMatchObject({ code: 1, err: 'postern: invalid selector "a_b": letters, digits and hyphens (postern dkim keygen DOMAIN --selector SELECTOR)\n' });
    expect(JSON.parse((await cli(config, ['dkim', 'list', '--json'])).out)).toEqual([{ domain: 'sender.example', selector: 'pst1', state: 'inactive', created: expect.any(String), activated: null, signing: false }]);

    // Inactive: the domain's mail goes out unsigned, as for a domain without a key.
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], headers: { From: 'Alice <alice@sender.example>', Subject: 'Before activation' } });
    await h.drain();
    expect(sinks[0]!.messages.find((m) => m.raw.includes('Subject: Before activation'))!.raw.toString('latin1')).not.toContain('DKIM-Signature');
    // Not published yet: activate refuses and leaves the key inactive.
    const refused = await cli(config, ['dkim', 'activate', 'sender.example', 'pst1']);
    expect(refused).toMatchObject({ code: 1, out: '' });
    expect(refused.err).toMatch(/^postern: not activated: pst1\._domainkey\.sender\.example has no DKIM record/);
    expect((await h.store.dkim.list())[0]!.activatedAt).toBeNull();

    h.dns.setRecords([...zone, { type: 'TXT', name: key.txt_name, data: key.txt_value }]);
    const activated = await cli(config, ['dkim', 'activate', 'sender.example', 'pst1', '--by', 'ops']);
    expect(activated).toEqual({
      code: 0,
      out: "selector pst1 of sender.example activated: it signs sender.example's mail from now on, on every node within a minute; sender.example was not signed before\n",
      err: '',
    });
    expect(JSON.parse((await cli(config, ['dkim', 'list', '--json'])).out)).toEqual([{ domain: 'sender.example', selector: 'pst1', state: 'signing', created: expect.any(String), activated: expect.any(String), signing: true }]);
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], headers: { From: 'Alice <alice@sender.example>', Subject: 'Signed' } });
    await h.submit({ from: 'carol@unsigned.example', to: ['bob@dest.example'], headers: { From: 'carol@unsigned.example' } });
    await h.drain();
    const signed = sinks[0]!.messages.find((m) => m.raw.includes('Subject: Signed'));
    const unsigned = sinks[0]!.messages.find((m) => m.from === 'carol@unsigned.example');
    const text = signed!.raw.toString('latin1');
    expect(text).toMatch(/^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=sender\.example;/);
    expect(unsigned!.raw.toString('latin1')).not.toContain('DKIM-Signature');

    const resolver = createResolver([h.dns.address]);
    const result = await dkimVerify(signed!.raw, { resolver: (name, type) => resolver.resolve(name, type as 'TXT') });
    expect(result.results).toHaveLength(1);
    expect(result.results[0]).toMatchObject({ signingDomain: 'sender.example', selector: 'pst1', status: { result: 'pass' } });
    // Every field over-signed: listed once more than present, absent ones once.
    const hTag = /\bh=([^;]+);/.exec(text.replace(/\r\n[ \t]/g, ''))![1]!.replace(/\s+/g, '');
    expect(hTag).toBe('from:from:sender:reply-to:subject:subject:date:date:to:to:cc:message-id:message-id:in-reply-to:references:mime-version:content-type:content-transfer-encoding');
    // The bytes after the signature are the message as submitted.
    const afterSig = text.replace(/^DKIM-Signature:.*\r\n(?:[ \t].*\r\n)*/, '');
    expect(afterSig).toMatch(/^From: Alice <alice@sender\.example>\r\nTo: <bob@dest\.example>\r\nSubject: Signed\r\n/);
  });

  it('over-signs, so a From added above the signed one breaks the signature, and signs no message with two From fields', async () => {
    sinks = await startSinks(['127.0.0.2']);
    h = await startHarness({ records: zone, port: sinks[0]!.port });
    const config = path.join(h.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n[delivery]\ndns_servers = ["${h.dns.address}"]\n`);
    const key = JSON.parse((await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst1', '--json'])).out) as { txt_name: string; txt_value: string };
    h.dns.setRecords([...zone, { type: 'TXT', name: key.txt_name, data: key.txt_value }]);
    expect((await cli(config, ['dkim', 'activate', 'sender.example', 'pst1'])).code).toBe(0);
    // Queued directly, as a copy accepted before the header check would have been.
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], headers: { From: '<alice@sender.example>', Subject: 'One From' } });
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], headers: { From: '<alice@sender.example>\r\nFrom: "CEO" <ceo@sender.example>', Subject: 'Two Froms' } });
    await h.drain();
    const resolver = createResolver([h.dns.address]);
    const verify = async (raw: Buffer) => (await dkimVerify(raw, { resolver: (name, type) => resolver.resolve(name, type as 'TXT') })).results[0]!.status.result;
    const one = sinks[0]!.messages.find((m) => m.raw.includes('Subject: One From'))!;
    expect(await verify(one.raw)).toBe('pass');
    const text = one.raw.toString('latin1');
    const at = text.indexOf('From: <alice@sender.example>');
    const forged = Buffer.from(`${text.slice(0, at)}From: "CEO" <ceo@sender.example>\r\n${text.slice(at)}`, 'latin1');
    expect(await verify(forged)).toBe('fail');
    const two = sinks[0]!.messages.find((m) => m.raw.includes('Subject: Two Froms'))!;
    expect(two.raw.toString('latin1')).not.toContain('DKIM-Signature');
  });
});

describe('DKIM rotation in stages', () => {
  it('a new key waits inactive while the old one signs; activate --force switches without its record; activating the old selector again rolls back', async () => {
    sinks = await startSinks(['127.0.0.2']);
    h = await startHarness({ records: zone, port: sinks[0]!.port });
    const harness = h;
    const config = path.join(h.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n[delivery]\ndns_servers = ["${h.dns.address}"]\n`);
    const k1 = JSON.parse((await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst1', '--json'])).out) as { txt_name: string; txt_value: string };
    const published = [...zone, { type: 'TXT' as const, name: k1.txt_name, data: k1.txt_value }];
    h.dns.setRecords(published);
    expect((await cli(config, ['dkim', 'activate', 'sender.example', 'pst1'])).code).toBe(0);
    /** The selector a message with this subject was signed with once delivered, or null. */
    const selectorOf = async (subject: string) => {
      await harness.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], headers: { From: '<alice@sender.example>', Subject: subject } });
      await harness.drain();
      const raw = sinks[0]!.messages.find((m) => m.raw.includes(`Subject: ${subject}\r\n`))!.raw;
      return / d=sender\.example; s=([a-z0-9-]+);/.exec(raw.toString('latin1'))?.[1] ?? null;
    };

    const made = await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst2']);
    expect(made.code).toBe(0);
    expect(made.out).toMatch(
      /^key stored for selector pst2 of sender\.example, inactive: mail from sender\.example is still signed with selector pst1\n1\. publish this DNS record:\n\npst2\._domainkey\.sender\.example\. IN TXT \( "v=DKIM1; k=rsa; p=[^"]+" "[^"]+" \)\n\n2\. check that DNS has it: postern doctor --domain sender\.example\n3\. switch signing to it: postern dkim activate sender\.example pst2\n$/,
    );
    expect(await selectorOf('one')).toBe('pst1');

    const forced = await cli(config, ['dkim', 'activate', 'sender.example', 'pst2', '--force', '--by', 'ops', '--reason', 'pst1 leaked']);
    expect(forced.code).toBe(0);
    expect(forced.err).toMatch(/^postern: warning: activating anyway \(--force\): pst2\._domainkey\.sender\.example has no DKIM record \(asked \[delivery\] dns_servers 127\.0\.0\.1:\d+\)/);
    expect(forced.out).toBe(
      "selector pst2 of sender.example activated: it signs sender.example's mail from now on, on every node within a minute; selector pst1 is retired (to roll back: postern dkim activate sender.example pst1); keep its record published for a few days, for mail in transit\n",
    );
    expect(await selectorOf('two')).toBe('pst2');

    expect((await cli(config, ['dkim', 'activate', 'sender.example', 'pst1'])).code).toBe(0);
    expect(await selectorOf('three')).toBe('pst1');
    const resolver = createResolver([h.dns.address]);
    const three = sinks[0]!.messages.find((m) => m.raw.includes('Subject: three\r\n'))!;
    expect((await dkimVerify(three.raw, { resolver: (name, type) => resolver.resolve(name, type as 'TXT') })).results[0]!.status.result).toBe('pass');
    expect(await cli(config, ['dkim', 'activate', 'sender.example', 'pst1'])).toEqual({ code: 0, out: 'selector pst1 already signs for sender.example: nothing changed\n', err: '' });
    expect((await h.store.audit.list({ target: 'dkim:sender.example' })).map((e) => [e.actor, e.action, e.detail, e.reason])).toEqual([
      [expect.any(String), 'dkim.activate', { selector: 'pst1', previous: 'pst2', forced: false }, null],
      ['ops', 'dkim.activate', { selector: 'pst2', previous: 'pst1', forced: true }, 'pst1 leaked'],
      [expect.any(String), 'dkim.activate', { selector: 'pst1', previous: null, forced: false }, null],
    ]);
  });
});

describe('DkimSigner', () => {
  it('picks up an activation made in the store at its next refresh, within cacheMs, and signs nothing for a domain whose keys are all inactive', async () => {
    const dir = tempDir();
    const store = openStore(dir);
    try {
      const clock = new ManualClock();
      const pem = () => generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      await store.dkim.add({ domain: 'sender.example', selector: 'old', privateKeyPem: pem(), createdAt: 0, activatedAt: 0 });
      await store.dkim.add({ domain: 'sender.example', selector: 'new', privateKeyPem: pem(), createdAt: 1, activatedAt: null });
      await store.dkim.add({ domain: 'staged.example', selector: 'only', privateKeyPem: pem(), createdAt: 1, activatedAt: null });
      const signer = new DkimSigner(store.dkim, clock, 60_000);
      const msg = (domain: string) => Buffer.from(`From: <alice@${domain}>\r\nSubject: x\r\n\r\nHello.\r\n`);
      const signs = async () => [(await signer.sign(msg('sender.example'))).selector, (await signer.sign(msg('staged.example'))).selector];
      expect(await signs()).toEqual(['old', null]);
      expect(await signer.sign(msg('staged.example'))).toEqual({ raw: msg('staged.example'), domain: null, selector: null });
      const by = { actor: 'admin', reason: null, now: clock.now(), forced: false };
      await store.dkim.activate('sender.example', 'new', by);
      await store.dkim.activate('staged.example', 'only', by);
      clock.advance(59_999);
      expect(await signs()).toEqual(['old', null]);
      clock.advance(1);
      expect(await signs()).toEqual(['new', 'only']);
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('DKIM keys from before staged rotation', () => {
  it('an upgraded database signs with the key that signed before: existing keys count as activated when made', async () => {
    const dir = tempDir();
    const db = openDb(dir);
    try {
      migrate(db, readMigrations().filter((m) => m.version <= 12));
      const put = db.prepare('INSERT INTO dkim_keys (domain, selector, private_key, created_at) VALUES (?, ?, ?, ?)');
      put.run('sender.example', 'older', 'pem-older', 1000);
      put.run('sender.example', 'b-newer', 'pem-b', 2000);
      put.run('sender.example', 'a-newer', 'pem-a', 2000);
    } finally {
      db.close();
    }
    const store = openStore(dir);
    try {
      expect(await store.dkim.signing('sender.example')).toEqual({ domain: 'sender.example', selector: 'a-newer', privateKeyPem: 'pem-a', createdAt: 2000, activatedAt: 2000 });
      expect((await store.dkim.list()).map((k) => k.activatedAt)).toEqual([2000, 2000, 1000]);
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('DKIM keys left in data_dir/dkim', () => {
  it('are imported into the store on start (the newest file signs), once; a broken file or one that differs from the stored key is reported and not imported', async () => {
    const dir = tempDir();
    const pem = () => generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const put = (domain: string, selector: string, body: string, mtimeSec: number) => {
      mkdirSync(path.join(dir, 'dkim', domain), { recursive: true });
      const file = path.join(dir, 'dkim', domain, `${selector}.key`);
      writeFileSync(file, body, { mode: 0o600 });
      utimesSync(file, mtimeSec, mtimeSec);
      return file;
    };
    const older = pem();
    const newer = pem();
    put('sender.example', 'old', older, 1_700_000_000);
    put('sender.example', 'new', newer, 1_700_000_100);
    const broken = put('sender.example', 'broken', 'not a key', 1_700_000_200);
    // A dangling link is reported too, and does not keep the relay from starting.
    const dangling = path.join(dir, 'dkim', 'sender.example', 'gone.key');
    symlinkSync(path.join(dir, 'nowhere'), dangling);
    let t = await startTestRelay({}, { dir });
    try {
      expect(t.logs.events('dkim.imported').map((e) => [e.domain, e.selector])).toEqual([
        ['sender.example', 'new'],
        ['sender.example', 'old'],
      ]);
      expect(t.logs.events('dkim.import_failed')).toEqual([
        expect.objectContaining({ path: broken, err: expect.any(String) }),
        expect.objectContaining({ path: dangling, err: expect.stringContaining('ENOENT') }),
      ]);
      // Put there on purpose, as before: active as of their modification time.
      expect(await t.relay.store.dkim.signing('sender.example')).toEqual({ domain: 'sender.example', selector: 'new', privateKeyPem: newer, createdAt: 1_700_000_100_000, activatedAt: 1_700_000_100_000 });
    } finally {
      await t.stop();
    }
    // Again on every start: nothing new to import; a changed file does not replace the stored key.
    const changed = put('sender.example', 'old', pem(), 1_700_000_300);
    t = await startTestRelay({}, { dir });
    try {
      expect(t.logs.events('dkim.imported')).toEqual([]);
      expect(t.logs.events('dkim.import_conflict')).toEqual([expect.objectContaining({ path: changed, domain: 'sender.example', selector: 'old' })]);
      expect((await t.relay.store.dkim.list()).map((k) => [k.selector, k.privateKeyPem])).toEqual([
        ['new', newer],
        ['old', older],
      ]);
      // No log line carries a private key.
      expect(t.logs.raw.filter((l) => l.includes('PRIVATE KEY'))).toEqual([]);
    } finally {
      await t.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('DKIM canonicalization', () => {
  it('signs what mailauth verifies: folded fields, trailing white space, empty and unterminated bodies, 8-bit bytes', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const record = dkimTxtRecord('sender.example', 'sel', pem);
    const dns = await startDnsServer([{ type: 'TXT', name: record.name, data: record.value }]);
    try {
      const resolver = createResolver([dns.address]);
      const head = 'From: Alice \t <alice@sender.example>\r\nSubject: a subject\r\n\t folded  over\r\nTo: bob@dest.example  \r\n\r\n';
      const bodies = ['Hello.\r\n', 'trailing  \t \r\nwhite\t\tspace\r\n\r\n\r\n', '', 'no final line break', '\r\n\r\n', 'caf\xe9 \xff\r\n'];
      for (const body of bodies) {
        const signed = dkimSign(Buffer.from(head + body, 'latin1'), { domain: 'sender.example', selector: 'sel', key: pem });
        const result = await dkimVerify(signed, { resolver: (name, type) => resolver.resolve(name, type as 'TXT') });
        expect(result.results[0]!.status.result, JSON.stringify(body)).toBe('pass');
        const tampered = Buffer.from(signed.toString('latin1').replace('a subject', 'another subject'), 'latin1');
        expect((await dkimVerify(tampered, { resolver: (name, type) => resolver.resolve(name, type as 'TXT') })).results[0]!.status.result).toBe('fail');
      }
    } finally {
      await dns.close();
    }
  });
});

describe('DKIM canonicalization, byte by byte', () => {
  it('strips only SP and HTAB at the ends of a header value, never the 0xA0 byte of a UTF-8 character', () => {
    const voila = Buffer.from(' voilà \t', 'utf8').toString('latin1');
    expect(relaxedHeader('subject', voila)).toBe(`subject:${Buffer.from('voilà', 'utf8').toString('latin1')}`);
    expect(relaxedHeader('subject', ' a \r\n\t  b\t')).toBe('subject:a b');
  });

  // Quadratic (an unanchored regex), the first case takes minutes and the test times out.
  it('cuts trailing empty lines in linear time (a body of 200,000 CRLFs and a letter)', () => {
    expect(relaxedBody('\r\n'.repeat(200_000) + 'x')).toBe(`${'\r\n'.repeat(200_000)}x\r\n`);
    expect(relaxedBody('\r\n'.repeat(200_000))).toBe('');
    expect(relaxedBody('a \t\r\n\r\n\r\n')).toBe('a\r\n');
  });
});
