import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import selfsigned from 'selfsigned';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';

/** What a sink received in one transaction. */
export interface SinkMessage {
  from: string;
  to: string[];
  raw: Buffer;
  /** The name the client gave in EHLO/HELO. */
  helo: string;
  secure: boolean;
  remoteAddress: string;
}

/** A reply a test wants the sink to give: "451 4.7.1 try later". */
export type Reply = string | undefined;

export interface SinkBehaviour {
  /** Reply to RCPT TO for this address (undefined = 250). */
  rcpt?: (address: string) => Reply;
  /** Reply at the end of DATA (undefined = 250). */
  data?: (msg: SinkMessage) => Reply;
}

/** An SMTP server on a loopback address standing in for an MX host. */
export interface Sink extends EventEmitter {
  host: string;
  port: number;
  messages: SinkMessage[];
  /** Every EHLO/HELO name seen, one per session. */
  helos: string[];
  /** Every command line received in clear, as sent (smtp-server's parsed addresses are U-labels). */
  lines: string[];
  connections: number;
  behaviour: SinkBehaviour;
  close(): Promise<void>;
}

function smtpError(reply: string): Error {
  const m = /^(\d{3})[ -](.*)$/s.exec(reply)!;
  return Object.assign(new Error(m[2]), { responseCode: Number(m[1]) });
}

let tlsMaterial: Promise<{ key: string; cert: string }> | undefined;
/** One self-signed certificate for all sinks in a test file (it is not checked under "may"). */
export function sinkCert() {
  tlsMaterial ??= selfsigned
    .generate([{ name: 'commonName', value: 'mx.test.example' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' } as never)
    .then((p: { private: string; cert: string }) => ({ key: p.private, cert: p.cert }));
  return tlsMaterial;
}

export async function startSink(host: string, port: number, opts: { tls?: boolean | 'broken'; behaviour?: SinkBehaviour; smtputf8?: boolean; cert?: { key: string; cert: string } } = {}): Promise<Sink> {
  // cert: a certificate of the test's own (one a test CA issued for the MX name), else the shared self-signed one.
  const material = opts.tls ? (opts.cert ?? (await sinkCert())) : undefined;
  const ee = new EventEmitter() as Sink;
  ee.host = host;
  ee.messages = [];
  ee.helos = [];
  ee.lines = [];
  ee.connections = 0;
  ee.behaviour = opts.behaviour ?? {};
  const server = new SMTPServer({
    secure: false,
    disabledCommands: opts.tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
    ...(material ? { key: material.key, cert: material.cert } : {}),
    // 'broken': offers STARTTLS but only speaks TLS 1.0, which clients refuse: the handshake fails.
    ...(opts.tls === 'broken' ? { minVersion: 'TLSv1', maxVersion: 'TLSv1' } : {}),
    authOptional: true,
    hideSMTPUTF8: opts.smtputf8 === false,
    disableReverseLookup: true,
    logger: false,
    onConnect(_s, cb) {
      ee.connections++;
      cb();
    },
    onMailFrom(_addr, session, cb) {
      ee.helos.push(session.hostNameAppearsAs);
      cb();
    },
    onRcptTo(addr, _s, cb) {
      const r = ee.behaviour.rcpt?.(addr.address);
      cb(r ? smtpError(r) : undefined);
    },
    onData(stream, session: SMTPServerSession, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const msg: SinkMessage = {
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks),
          helo: session.hostNameAppearsAs,
          secure: session.secure,
          remoteAddress: session.remoteAddress,
        };
        const r = ee.behaviour.data?.(msg);
        if (r) return cb(smtpError(r));
        ee.messages.push(msg);
        ee.emit('message', msg);
        cb();
      });
    },
  });
  server.on('error', () => {});
  server.server.prependListener('connection', (sock: import('node:net').Socket) => {
    let buf = '';
    let inData = false;
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      for (let i = buf.indexOf('\r\n'); i !== -1; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) inData = line !== '.';
        else {
          ee.lines.push(line);
          inData = /^DATA$/i.test(line);
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  ee.port = (server.server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  ee.close = () =>
    (closing ??= new Promise<void>((r) => server.close(() => r())).then(() => {
      openSinks.delete(ee);
    }));
  openSinks.add(ee);
  return ee;
}

const openSinks = new Set<Sink>();

/** Closes every sink still open (afterEach); closing one twice is harmless. */
export async function closeAllSinks(): Promise<void> {
  await Promise.all([...openSinks].map((s) => s.close()));
}

/** Sinks on several loopback addresses sharing one port ([delivery] port is global). */
export async function startSinks(hosts: string[], opts: { tls?: (boolean | 'broken')[]; certs?: ({ key: string; cert: string } | undefined)[] } = {}): Promise<Sink[]> {
  for (let tries = 0; ; tries++) {
    const sinks: Sink[] = [];
    try {
      let port = 0;
      for (const [i, h] of hosts.entries()) {
        const s = await startSink(h, port, { tls: opts.tls?.[i] ?? false, cert: opts.certs?.[i] });
        sinks.push(s);
        port = s.port;
      }
      return sinks;
    } catch (e) {
      await Promise.all(sinks.map((s) => s.close()));
      if (tries > 5) throw e;
    }
  }
}
