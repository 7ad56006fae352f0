import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { parseProxyHeader } from '../../src/protocol/proxy.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';
const REFUSED = '421 4.7.0 Connection refused, closing connection';

const V2_SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
function v2(cmd: number, fam: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 0x20 | cmd;
  head[1] = fam;
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIG, head, body]);
}
function v2ipv4(src: string, sport: number): Buffer {
  const b = Buffer.alloc(12);
  src.split('.').forEach((o, i) => (b[i] = Number(o)));
  [127, 0, 0, 1].forEach((o, i) => (b[4 + i] = o));
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(587, 10);
  return v2(1, 0x11, b);
}
const v2ipv6 = (() => {
  const b = Buffer.alloc(36);
  b.writeUInt16BE(0x2001, 0);
  b.writeUInt16BE(0x0db8, 2);
  b[15] = 9;
  b.writeUInt16BE(40000, 32);
  return v2(1, 0x21, b);
})();

describe('PROXY header parsing', () => {
  const cases: Array<[string, Buffer | string, ReturnType<typeof parseProxyHeader>]> = [
    ['reads a v1 TCP4 header', 'PROXY TCP4 203.0.113.9 192.0.2.1 40000 587\r\nEHLO', { kind: 'ok', version: 1, source: { address: '203.0.113.9', port: 40000 }, length: 44 }],
    ['reads a v1 TCP6 header', 'PROXY TCP6 2001:db8::9 2001:db8::1 40000 587\r\n', { kind: 'ok', version: 1, source: { address: '2001:db8::9', port: 40000 }, length: 46 }],
    ['takes v1 UNKNOWN as the proxy itself speaking', 'PROXY UNKNOWN\r\n', { kind: 'ok', version: 1, source: null, length: 15 }],
    ['waits for the rest of a v1 line', 'PROXY TCP4 203.0', { kind: 'incomplete' }],
    ['waits for the rest of the word PROXY', 'PRO', { kind: 'incomplete' }],
    ['refuses SMTP where a header belongs', 'EHLO client.example\r\n', { kind: 'invalid', why: 'no PROXY header' }],
    ['refuses a v1 host name in place of an address', 'PROXY TCP4 evil.example 192.0.2.1 1 587\r\n', { kind: 'invalid', why: 'bad v1 source address' }],
    ['refuses an IPv6 address in a TCP4 header', 'PROXY TCP4 2001:db8::9 192.0.2.1 1 587\r\n', { kind: 'invalid', why: 'bad v1 source address' }],
    ['refuses a v1 port out of range', 'PROXY TCP4 203.0.113.9 192.0.2.1 70000 587\r\n', { kind: 'invalid', why: 'bad v1 source port' }],
    ['refuses a v1 line longer than the spec allows', `PROXY TCP4 ${'1'.repeat(120)}`, { kind: 'invalid', why: 'v1 header too long' }],
    ['reads a v2 IPv4 header', v2ipv4('203.0.113.9', 40000), { kind: 'ok', version: 2, source: { address: '203.0.113.9', port: 40000 }, length: 28 }],
    ['reads a v2 IPv6 header', v2ipv6, { kind: 'ok', version: 2, source: { address: '2001:db8::9', port: 40000 }, length: 52 }],
    ['takes v2 LOCAL as the proxy itself speaking', v2(0, 0x00, Buffer.alloc(0)), { kind: 'ok', version: 2, source: null, length: 16 }],
    ['waits for the rest of a v2 header', v2ipv4('203.0.113.9', 1).subarray(0, 20), { kind: 'incomplete' }],
    ['refuses a v2 UDP header', v2(1, 0x12, Buffer.alloc(12)), { kind: 'invalid', why: 'unsupported v2 address family' }],
  ];
  it.each(cases)('%s', (_name, input, want) => {
    expect(parseProxyHeader(Buffer.from(input))).toEqual(want);
  });
});

/** Opens a socket, writes `first`, returns everything the server says until it closes. */
function exchange(port: number, first: string | Buffer, localAddress?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => s.write(first));
    s.setEncoding('latin1');
    s.on('data', (d: string) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

describe('PROXY protocol on the submission listeners', () => {
  let t: TestRelay;
  let alice: number;
  beforeEach(async () => {
    // The test is the load balancer, at 127.0.0.1; 127.0.0.2 is some other host.
    t = await startTestRelay({ submission: { proxy_protocol: true, trusted_proxies: ['127.0.0.1/32'] } });
    alice = await t.addUser('alice', PASS, { networks: ['127.0.0.1/32'] });
  });
  afterEach(() => t.stop());

  it('judges the network binding on the client behind the proxy, and suspends a foreign one', async () => {
    const c = await SmtpClient.connect(t.port, { proxyHeader: 'PROXY TCP4 203.0.113.9 127.0.0.1 40000 587\r\n' });
    expect(await c.login('alice', PASS)).toBe('535 5.7.8 Authentication credentials invalid');
    await c.quit();
    expect(await t.relay.store.users.get(alice)).toMatchObject({ status: 'suspended', statusReason: 'foreign-network from 203.0.113.9' });
    expect(t.logs.events('auth.fail').at(-1)).toMatchObject({ reason: 'AUTH_FOREIGN_NETWORK', ip: '203.0.113.9' });
  });

  it('lets a bound client through the proxy with a v2 header, on STARTTLS and implicit TLS alike', async () => {
    for (const [port, tls] of [
      [t.port, false],
      [t.tlsPort, true],
    ] as const) {
      const c = await SmtpClient.connect(port, { tls, proxyHeader: v2ipv4('127.0.0.1', 40000) });
      expect(await c.login('alice', PASS)).toMatch(/^235/);
      expect(await c.send('alice@example.com', ['bob@elsewhere.example'], MSG)).toMatch(/^250 2\.0\.0 Ok/);
      await c.quit();
    }
    expect((await t.relay.store.users.get(alice))!.status).toBe('active');
  });

  it('refuses a spoofed header from an address that is not a trusted proxy', async () => {
    const said = await exchange(t.port, 'PROXY TCP4 127.0.0.1 127.0.0.1 40000 587\r\nEHLO x\r\n', '127.0.0.2');
    expect(said).toBe(`${REFUSED}\r\n`);
    expect(t.logs.events('proxy.refused')).toMatchObject([{ peer: '127.0.0.2', reason: 'PROXY_REFUSED', why: 'untrusted peer' }]);
    expect((await t.relay.store.users.get(alice))!.status).toBe('active');
  });

  it('refuses a trusted proxy that sends no header', async () => {
    expect(await exchange(t.tlsPort, 'EHLO client.example\r\n')).toBe(`${REFUSED}\r\n`);
    expect(t.logs.events('proxy.refused')).toMatchObject([{ peer: '127.0.0.1', why: 'no PROXY header' }]);
  });
});

describe('PROXY protocol config', () => {
  it('refuses to start with proxy_protocol on and no trusted proxies', async () => {
    await expect(startTestRelay({ submission: { proxy_protocol: true } })).rejects.toThrow(/submission\.trusted_proxies/);
  });
});
