import ipaddr from 'ipaddr.js';
import net from 'node:net';
import tls from 'node:tls';
import type { SMTPServer } from 'smtp-server';
import { REASONS } from '../domain/reasons.js';
import type { Logger } from '../obs/log.js';
import { networkAllowed } from '../policy/bindings.js';
import { normalizeIp } from '../policy/client.js';
import { replyLine } from './replies.js';

/**
 * PROXY protocol v1 (text) and v2 (binary), https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt.
 *
 * smtp-server's own `useProxy` reads v1 only, trusts exact addresses rather than networks, and
 * lets an untrusted peer's "PROXY ..." line through as an ordinary (unknown) SMTP command. So
 * Postern reads the header itself, in front of smtp-server, and hands the socket over with the
 * real client address through smtp-server's public connect(socket, { remoteAddress }).
 */

const V2_SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
/** v1: "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF is 107 bytes (spec 2.1). */
const V1_MAX = 107;
/** v2: 16 fixed bytes + at most 216 of addresses (AF_UNIX) + TLVs; a proxy sends far less. */
const V2_MAX = 16 + 1024;

export type ProxyHeader =
  | { kind: 'incomplete' }
  | { kind: 'invalid'; why: string }
  /** source null: LOCAL (v2) or UNKNOWN (v1), the proxy's own connection, e.g. a health check. */
  | { kind: 'ok'; version: 1 | 2; source: { address: string; port: number } | null; length: number };

/** Pure: reads a header from the first bytes of a connection. */
export function parseProxyHeader(buf: Buffer): ProxyHeader {
  if (buf.length === 0) return { kind: 'incomplete' };
  const sigLen = Math.min(buf.length, V2_SIG.length);
  if (buf.subarray(0, sigLen).equals(V2_SIG.subarray(0, sigLen))) {
    return buf.length < 16 ? { kind: 'incomplete' } : parseV2(buf);
  }
  const v1 = Buffer.from('PROXY ');
  const pLen = Math.min(buf.length, v1.length);
  if (!buf.subarray(0, pLen).equals(v1.subarray(0, pLen))) return { kind: 'invalid', why: 'no PROXY header' };
  const end = buf.indexOf('\r\n');
  if (end === -1) return buf.length >= V1_MAX ? { kind: 'invalid', why: 'v1 header too long' } : { kind: 'incomplete' };
  if (end + 2 > V1_MAX) return { kind: 'invalid', why: 'v1 header too long' };
  const parts = buf.subarray(0, end).toString('latin1').split(' ');
  if (parts[1] === 'UNKNOWN') return { kind: 'ok', version: 1, source: null, length: end + 2 };
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6')) return { kind: 'invalid', why: 'malformed v1 header' };
  const [, proto, src, , sport] = parts as [string, string, string, string, string, string];
  if (net.isIP(src) !== (proto === 'TCP4' ? 4 : 6)) return { kind: 'invalid', why: 'bad v1 source address' };
  if (!/^\d{1,5}$/.test(sport) || Number(sport) > 65_535) return { kind: 'invalid', why: 'bad v1 source port' };
  return { kind: 'ok', version: 1, source: { address: src, port: Number(sport) }, length: end + 2 };
}

function parseV2(buf: Buffer): ProxyHeader {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { kind: 'invalid', why: 'unsupported v2 version' };
  const cmd = verCmd & 0x0f;
  const fam = buf[13]!;
  const len = buf.readUInt16BE(14);
  if (16 + len > V2_MAX) return { kind: 'invalid', why: 'v2 header too long' };
  if (buf.length < 16 + len) return { kind: 'incomplete' };
  const length = 16 + len;
  if (cmd === 0) return { kind: 'ok', version: 2, source: null, length };
  if (cmd !== 1) return { kind: 'invalid', why: 'unsupported v2 command' };
  const body = buf.subarray(16, length);
  // Families: 0x11 TCP over IPv4, 0x21 TCP over IPv6. UDP and unix sockets make no SMTP client.
  if (fam === 0x11) {
    if (len < 12) return { kind: 'invalid', why: 'short v2 IPv4 addresses' };
    return { kind: 'ok', version: 2, source: { address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) }, length };
  }
  if (fam === 0x21) {
    if (len < 36) return { kind: 'invalid', why: 'short v2 IPv6 addresses' };
    // Compressed text (2001:db8::9), as a socket reports it, for logs and Received headers.
    const address = ipaddr.fromByteArray([...body.subarray(0, 16)]).toString();
    return { kind: 'ok', version: 2, source: { address, port: body.readUInt16BE(32) }, length };
  }
  if (fam === 0x00) return { kind: 'ok', version: 2, source: null, length };
  return { kind: 'invalid', why: 'unsupported v2 address family' };
}

export interface ProxyOptions {
  trusted: string[];
  /** Implicit TLS listener: the header comes first, in clear, then the TLS handshake. */
  implicitTls: boolean;
  /** How long a trusted proxy may take to send its header (and the client its handshake). */
  timeoutMs: number;
  log: Logger;
}

/**
 * Puts a PROXY protocol reader in front of an smtp-server instance. The reader's net.Server
 * replaces smtp-server's own, so listen(), close() and address() keep working unchanged.
 * Every peer must be a trusted proxy and must send a header: a listener that also took direct
 * clients would let any of them claim to be a proxy by the mere shape of its first line.
 */
export function installProxyProtocol(smtp: SMTPServer, opts: ProxyOptions): void {
  const front = net.createServer((socket) => accept(smtp, socket, opts));
  front.on('error', (err) => smtp.emit('error', err));
  smtp.server = front;
}

function accept(smtp: SMTPServer, socket: net.Socket, opts: ProxyOptions): void {
  const peer = normalizeIp(socket.remoteAddress ?? '');
  const refuse = (why: string) => {
    opts.log.warn({ event: 'proxy.refused', peer, reason: REASONS.PROXY_REFUSED.id, why });
    socket.on('error', () => {});
    socket.end(`${replyLine(REASONS.PROXY_REFUSED)}\r\n`);
    socket.destroySoon();
  };
  // Refused at once, without reading: an untrusted peer's header is never believed, and a
  // direct client belongs on a listener without proxy_protocol.
  if (!networkAllowed(peer, opts.trusted)) return refuse('untrusted peer');

  let buf = Buffer.alloc(0);
  const timer = setTimeout(() => {
    cleanup();
    refuse('no PROXY header in time');
  }, opts.timeoutMs);
  timer.unref();
  const cleanup = () => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', onGone);
    socket.off('close', onGone);
  };
  const onGone = () => {
    cleanup();
    socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    const h = parseProxyHeader(buf);
    if (h.kind === 'incomplete') return;
    cleanup();
    socket.pause();
    if (h.kind === 'invalid') return refuse(h.why);
    // Whatever came behind the header (SMTP, or the ClientHello on an implicit TLS listener)
    // belongs to the session; a TLSSocket wrapping this socket reads what is buffered in it.
    const rest = buf.subarray(h.length);
    if (rest.length) socket.unshift(rest);
    const remote = h.source ?? { address: peer, port: socket.remotePort ?? 0 };
    opts.log.debug({ event: 'proxy.accepted', peer, ip: remote.address, version: h.version });
    handOver(smtp, socket, remote, opts);
  };
  socket.on('data', onData);
  socket.on('error', onGone);
  socket.on('close', onGone);
}

function handOver(smtp: SMTPServer, socket: net.Socket, remote: { address: string; port: number }, opts: ProxyOptions): void {
  const conn = { remoteAddress: remote.address, remotePort: remote.port };
  if (!opts.implicitTls) {
    smtp.connect(socket, conn);
    return;
  }
  // The context is read per connection, so a certificate reloaded with updateSecureContext
  // (SIGHUP) reaches new clients here exactly as it does on smtp-server's own listeners.
  const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: smtp.secureContext.get('*'), server: smtp.server });
  const fail = (err?: Error) => {
    opts.log.info({ event: 'tls.handshake_failed', ip: remote.address, err: err?.message ?? 'closed' });
    secure.destroy();
  };
  secure.setTimeout(opts.timeoutMs, () => fail(new Error('TLS handshake timeout')));
  secure.once('error', fail);
  secure.once('secure', () => {
    secure.setTimeout(0);
    secure.off('error', fail);
    smtp.connect(secure, conn);
  });
}
