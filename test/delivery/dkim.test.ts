import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { startTestRelay, tempDir } from '../helpers/relay.js';
import path from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign, dkimTxtRecord, relaxedBody, relaxedHeader } from '../../src/delivery/dkim.js';
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
  it('keygen stores the key in the store and prints the TXT record; outgoing mail from that domain verifies with mailauth', async () => {
    sinks = await startSinks(['127.0.0.2']);
    h = await startHarness({ records: zone, port: sinks[0]!.port });
    const config = path.join(h.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n`);

    const out = await cli(config, ['dkim', 'keygen', 'Sender.Example', '--selector', 'pst1', '--json']);
    expect(out.code).toBe(0);
    const key = JSON.parse(out.out) as { domain: string; selector: string; stored: string; key_file: null; txt_name: string; txt_value: string };
    expect(key).toMatchObject({ domain: 'sender.example', selector: 'pst1', stored: 'store', key_file: null, txt_name: 'pst1._domainkey.sender.example' });
    expect(key.txt_value).toMatch(/^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$/);
    // In the store, where every node finds it; no key file is written.
    const stored = await h.store.dkim.list();
    expect(stored.map((k) => [k.domain, k.selector])).toEqual([['sender.example', 'pst1']]);
    expect(stored[0]!.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(dkimTxtRecord('sender.example', 'pst1', stored[0]!.privateKeyPem).value).toBe(key.txt_value);
    expect(existsSync(path.join(h.dir, 'dkim'))).toBe(false);
    // The human form is a zone-file line with 255-byte strings.
    const human = await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst1']);
    expect(human).toMatchObject({ code: 1, err: 'postern: a key for selector pst1 of sender.example already exists in the store: choose a new selector to rotate (see: postern dkim list)\n' });
    const bad = await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'a_b']);
    expect(bad).toMatchObject({ code: 1, err: 'postern: invalid selector "a_b": letters, digits and hyphens (postern dkim keygen DOMAIN --selector SELECTOR)\n' });
    expect(JSON.parse((await cli(config, ['dkim', 'list', '--json'])).out)).toEqual([{ domain: 'sender.example', selector: 'pst1', created: expect.any(String), signing: true }]);

    h.dns.setRecords([...zone, { type: 'TXT', name: key.txt_name, data: key.txt_value }]);
    await h.submit({ from: 'alice@sender.example', to: ['bob@dest.example'], headers: { From: 'Alice <alice@sender.example>', Subject: 'Signed' } });
    await h.submit({ from: 'carol@unsigned.example', to: ['bob@dest.example'], headers: { From: 'carol@unsigned.example' } });
    await h.drain();
    const signed = sinks[0]!.messages.find((m) => m.from === 'alice@sender.example');
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
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n`);
    const key = JSON.parse((await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst1', '--json'])).out) as { txt_name: string; txt_value: string };
    h.dns.setRecords([...zone, { type: 'TXT', name: key.txt_name, data: key.txt_value }]);
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
      expect(await t.relay.store.dkim.newest('sender.example')).toEqual({ domain: 'sender.example', selector: 'new', privateKeyPem: newer, createdAt: 1_700_000_100_000 });
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
