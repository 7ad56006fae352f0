import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { createResolver } from '../../src/dns/resolver.js';
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
  it('keygen writes data_dir/dkim/<domain>/<selector>.key and prints the TXT record; outgoing mail from that domain verifies with mailauth', async () => {
    sinks = await startSinks(['127.0.0.2']);
    h = await startHarness({ records: zone, port: sinks[0]!.port });
    const config = path.join(h.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${h.dir}"\n`);

    const out = await cli(config, ['dkim', 'keygen', 'Sender.Example', '--selector', 'pst1', '--json']);
    expect(out.code).toBe(0);
    const key = JSON.parse(out.out) as { key_file: string; txt_name: string; txt_value: string };
    expect(key.key_file).toBe(path.join(h.dir, 'dkim', 'sender.example', 'pst1.key'));
    expect(readFileSync(key.key_file, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(statSync(key.key_file).mode & 0o777).toBe(0o600);
    expect(key.txt_name).toBe('pst1._domainkey.sender.example');
    expect(key.txt_value).toMatch(/^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$/);
    // The human form is a zone-file line with 255-byte strings.
    const human = await cli(config, ['dkim', 'keygen', 'sender.example', '--selector', 'pst1']);
    expect(human).toMatchObject({ code: 1, err: expect.stringMatching(/already exists .* choose a new selector to rotate/) });

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
    expect(result.results[0]!.signingHeaders!.keys.toLowerCase().split(': ').join(':')).toBe('from: to: subject: date: message-id'.split(': ').join(':'));
    // The bytes after the signature are the message as submitted.
    const afterSig = text.replace(/^DKIM-Signature:.*\r\n(?:[ \t].*\r\n)*/, '');
    expect(afterSig).toMatch(/^From: Alice <alice@sender\.example>\r\nTo: <bob@dest\.example>\r\nSubject: Signed\r\n/);
  });
});
