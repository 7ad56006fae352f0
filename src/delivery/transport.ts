import { isIP } from 'node:net';
import { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from 'node:tls';
import Bottleneck from 'bottleneck';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import { daneMismatch, type Tlsa } from './dane.js';

/** One MX host at one address. */
export interface Target {
  /** The address connected to (routing resolved it with the configured resolver). */
  address: string;
  port: number;
  /** The MX host name: SNI, certificate check under "verify", Remote-MTA in DSNs. */
  name: string;
}

/**
 * may: STARTTLS when offered, no certificate check (Postfix "may"); encrypt: TLS required,
 * no check; verify: TLS required and the certificate must match the MX name.
 */
export type TlsLevel = 'may' | 'encrypt' | 'verify';

export interface TlsOutcome {
  used: boolean;
  protocol: string | null;
  cipher: string | null;
  /** The certificate chained to a trusted root and matched the MX name. */
  verified: boolean;
  /** Why there is no TLS: "not-offered" (or refused), "handshake-failed". */
  note: string | null;
}

export interface SendRequest {
  target: Target;
  tls: TlsLevel;
  /** DANE (RFC 7672): TLS required and the certificate must match one of these TLSA records (tls is then "encrypt"). */
  dane?: Tlsa[];
  /** Envelope: what the RCPTs and MAIL FROM say, independent of the header fields. */
  from: string;
  to: string[];
  raw: Buffer;
}

export interface SendResult {
  accepted: string[];
  /** Refused recipients with the remote reply line, "550 5.1.1 ...". */
  rejected: { rcpt: string; reply: string }[];
  response: string;
  tls: TlsOutcome;
}

/**
 * A failure of the whole transaction. scope "host": nothing was decided about the message
 * (no connection, bad greeting, TLS policy unmet), the next MX may be tried; scope
 * "message": this host answered for every recipient (MAIL FROM or DATA refused, or all RCPTs).
 */
export class SendError extends Error {
  constructor(
    /** "CODE reply" for a remote answer, else "ECODE message": input to classify(). */
    readonly line: string,
    readonly scope: 'host' | 'message',
    readonly tls: TlsOutcome | null,
    /** Per-recipient replies when every RCPT was refused, each with its own code. */
    readonly rejected: { rcpt: string; reply: string }[] = [],
  ) {
    super(line);
  }
}

/** What delivery needs from the network; tests may hand in another. */
export interface Transport {
  send(req: SendRequest): Promise<SendResult>;
  close(): Promise<void>;
}

export interface SmtpTransportOptions {
  /** EHLO name: [identity] helo. */
  name: string;
  /** Source address: [identity] outbound_ip ("" = any). */
  localAddress: string;
  connectTimeoutMs: number;
  connectionsPerHost: number;
  /** CA certificates to verify MX certificates against (default: the system's). */
  ca?: string[];
  clock: Clock;
  log: Logger;
  /** An idle connection is kept this long for the next message to the same host. */
  idleMs?: number;
  maxMessagesPerConnection?: number;
}

interface NodemailerError extends Error {
  code?: string;
  originalCode?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  recipient?: string;
  rejectedErrors?: NodemailerError[];
}

interface Conn {
  smtp: SMTPConnection;
  tls: TlsOutcome;
  key: string;
  messages: number;
  dead: boolean;
  idleTimer: NodeJS.Timeout | null;
}

const NON_ASCII = /[^\x00-\x7f]/;

/** Any byte above 127 in the message. */
function has8Bit(raw: Buffer): boolean {
  for (let i = 0; i < raw.length; i++) if (raw[i]! > 127) return true;
  return false;
}

/** Remembered for this long after a failed handshake: "may" goes straight to plaintext. */
const TLS_BROKEN_MS = 60 * 60_000;

const errLine = (e: NodemailerError): string =>
  e.response && /^\d{3}/.test(e.response) ? e.response : `${e.originalCode ?? e.code ?? 'ECONNECTION'} ${e.message}`;

/**
 * Delivery over nodemailer's SMTP client (the SMTPConnection its SMTP transport is built on),
 * used directly for two things the pooled transport hides: which connection carried a
 * message, hence its TLS outcome for the log, and a plaintext retry of the same host after a
 * failed handshake. Connections are reused per host (idle ones wait idleMs for the next
 * message, RSET after a refused transaction) and a Bottleneck group bounds deliveries, hence
 * connections, per host: pacing is a queue here, never a wait inside a client's session.
 *
 * TLS handshake failure under "may": the host is retried at once in plaintext (and for the
 * next hour without trying STARTTLS), as Postfix does at its "may" level, because an
 * unauthenticated TLS session protects only against passive eavesdropping and a broken TLS
 * stack at a receiver must not stop mail. Under "encrypt" and "verify" the failure is
 * the host's: the next MX is tried, and with none left the recipients are deferred (4.7.5),
 * never sent in plaintext.
 */
export class SmtpTransport implements Transport {
  private readonly group: Bottleneck.Group;
  private readonly idle = new Map<string, Conn[]>();
  private readonly open = new Set<Conn>();
  private readonly tlsBroken = new Map<string, number>();
  private closed = false;

  constructor(private readonly opts: SmtpTransportOptions) {
    this.group = new Bottleneck.Group({ maxConcurrent: opts.connectionsPerHost });
  }

  send(req: SendRequest): Promise<SendResult> {
    if (this.closed) return Promise.reject(new SendError('ECONNECTION transport is closed', 'host', null));
    const host = `${req.target.address}:${req.target.port}`;
    return this.group.key(host).schedule(() => this.sendNow(req));
  }

  private async sendNow(req: SendRequest): Promise<SendResult> {
    // A connection authenticated by DANE is reused only for the same host and records.
    const dane = req.dane ? `|dane:${req.target.name}:${req.dane.map((r) => `${r.usage}${r.selector}${r.matchingType}${r.data.toString('hex')}`).join(',')}` : '';
    // And every connection only for the MX name it was opened (and its certificate checked) for.
    const key = `${req.target.address}:${req.target.port}|${req.target.name.toLowerCase()}|${req.tls}${dane}`;
    let conn = this.takeIdle(key);
    if (conn) {
      try {
        return await this.transact(conn, req);
      } catch (e) {
        // A reused connection the server closed while idle fails before any of the message
        // was sent: that says nothing about the message, so it goes out on a fresh one.
        if (!(e instanceof SendError) || e.scope !== 'host') throw e;
      }
    }
    conn = await this.connect(req, key);
    return this.transact(conn, req);
  }

  private takeIdle(key: string): Conn | undefined {
    const list = this.idle.get(key);
    while (list?.length) {
      const c = list.pop()!;
      if (c.idleTimer) clearTimeout(c.idleTimer);
      c.idleTimer = null;
      if (!c.dead) return c;
    }
    return undefined;
  }

  private async connect(req: SendRequest, key: string): Promise<Conn> {
    const hostKey = `${req.target.address}:${req.target.port}`;
    const brokenUntil = this.tlsBroken.get(hostKey) ?? 0;
    const plaintext = req.tls === 'may' && brokenUntil > this.opts.clock.now();
    try {
      return await this.dial(req, key, plaintext);
    } catch (e) {
      if (req.tls === 'may' && !plaintext && e instanceof SendError && e.line.startsWith('ETLS')) {
        this.tlsBroken.set(hostKey, this.opts.clock.now() + TLS_BROKEN_MS);
        this.opts.log.info({ event: 'delivery.tls.fallback', mx: req.target.name, address: req.target.address, error: e.line });
        const c = await this.dial(req, key, true);
        c.tls.note = 'handshake-failed';
        return c;
      }
      throw e;
    }
  }

  private dial(req: SendRequest, key: string, plaintext: boolean): Promise<Conn> {
    const { target } = req;
    const servername = isIP(target.name) ? undefined : target.name;
    const smtp = new SMTPConnection({
      host: target.address,
      port: target.port,
      secure: false,
      name: this.opts.name,
      localAddress: this.opts.localAddress || undefined,
      connectionTimeout: this.opts.connectTimeoutMs,
      greetingTimeout: this.opts.connectTimeoutMs,
      // RFC 5321 4.5.3.2: the client waits minutes for replies (10 for the end of DATA).
      socketTimeout: 10 * 60_000,
      servername,
      ignoreTLS: plaintext,
      opportunisticTLS: req.tls === 'may',
      requireTLS: req.tls !== 'may',
      tls: { rejectUnauthorized: req.tls === 'verify' && !req.dane, servername, ...(this.opts.ca ? { ca: this.opts.ca } : {}) },
      logger: false,
    });
    const conn: Conn = { smtp, tls: { used: false, protocol: null, cipher: null, verified: false, note: null }, key, messages: 0, dead: false, idleTimer: null };
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (e: NodemailerError) => {
        conn.dead = true;
        this.open.delete(conn);
        if (settled) return;
        settled = true;
        // A refused STARTTLS (502) or a certificate that does not verify is a TLS failure,
        // whatever reply code came with it: the policy, not the code, decides what follows.
        const tlsFailed = e.code === 'ETLS' || smtp.upgrading === true || /CERT|SSL|TLS|ERR_SSL/i.test(e.originalCode ?? '');
        smtp.close();
        reject(new SendError(tlsFailed ? `ETLS ${e.originalCode ?? ''} ${e.message}`.replace(/\s+/g, ' ') : errLine(e), 'host', null));
      };
      // SMTPConnection reports socket trouble as 'error' events: without a listener an idle
      // connection dropped by the server would crash the process.
      smtp.on('error', fail);
      smtp.once('end', () => fail(Object.assign(new Error('connection closed'), { code: 'ECONNECTION' })));
      this.open.add(conn);
      smtp.connect((err?: Error | null) => {
        if (err) return fail(err as NodemailerError);
        if (settled) return;
        const tls = describeTls(smtp, plaintext);
        if (req.dane) {
          // RFC 7672 3: the TLSA records, not the WebPKI, authenticate the server.
          const why = tls.used ? daneMismatch(req.dane, peerChain(smtp), target.name, peerLeaf(smtp)) : 'the server did not start TLS';
          if (why) return fail(Object.assign(new Error(`DANE: ${why}`), { code: 'ETLS' }));
          tls.verified = true;
        }
        settled = true;
        conn.tls = tls;
        resolve(conn);
      });
    });
  }

  private transact(conn: Conn, req: SendRequest): Promise<SendResult> {
    // Domains travel as A-labels (the spool stores them so); only a non-ASCII local part
    // needs the next hop's SMTPUTF8. nodemailer would send the raw bytes to a host without it.
    const offered = (conn.smtp as unknown as { _supportedExtensions?: string[] })._supportedExtensions ?? [];
    const unreadable = offered.includes('SMTPUTF8') ? [] : [req.from, ...req.to].filter((a) => NON_ASCII.test(a));
    if (unreadable.length) {
      const line = `ESMTPUTF8 ${req.target.name} does not offer SMTPUTF8, which a non-ASCII address needs`;
      const rejected = req.to.filter((a) => NON_ASCII.test(a)).map((rcpt) => ({ rcpt, reply: line }));
      if (unreadable.includes(req.from) || rejected.length === req.to.length) {
        setImmediate(() => this.release(conn));
        return Promise.reject(new SendError(line, 'message', conn.tls, unreadable.includes(req.from) ? [] : rejected));
      }
      return this.transact(conn, { ...req, to: req.to.filter((a) => !NON_ASCII.test(a)) }).then((r) => ({ ...r, rejected: [...r.rejected, ...rejected] }));
    }
    return new Promise((resolve, reject) => {
      // RFC 6152: 8-bit data is declared with BODY=8BITMIME where the next hop offers it
      // (nodemailer adds the parameter only then); 7-bit mail says nothing.
      conn.smtp.send({ from: req.from, to: req.to, use8BitMime: has8Bit(req.raw) }, req.raw, (err, info) => {
        conn.messages++;
        if (err) {
          const e = err as NodemailerError;
          if (e.code === 'EENVELOPE' || (e.code === 'EMESSAGE' && e.responseCode !== 421)) {
            // The host answered for this message; the session itself is fine: RSET and reuse.
            const rejected = (e.rejectedErrors ?? []).map((r) => ({ rcpt: r.recipient ?? '', reply: errLine(r) }));
            if (!conn.dead) conn.smtp.reset((resetErr) => (resetErr ? this.discard(conn) : this.release(conn)));
            return reject(new SendError(errLine(e), 'message', conn.tls, rejected));
          }
          this.discard(conn);
          // A reply (421, or a refused greeting) is this host's answer; a dropped connection
          // is no answer at all, so the message may go to the next host. A drop after the
          // final dot can duplicate the message, which RFC 5321 6.1 accepts over losing it.
          return reject(new SendError(errLine(e), e.responseCode && e.responseCode !== 421 ? 'message' : 'host', conn.tls));
        }
        const rejected = (info.rejectedErrors ?? []).map((r) => {
          const re = r as NodemailerError;
          return { rcpt: re.recipient ?? '', reply: errLine(re) };
        });
        setImmediate(() => this.release(conn));
        resolve({ accepted: info.accepted.map(String), rejected, response: info.response ?? '', tls: conn.tls });
      });
    });
  }

  private release(conn: Conn): void {
    if (conn.dead || this.closed || conn.messages >= (this.opts.maxMessagesPerConnection ?? 100)) return this.discard(conn);
    let list = this.idle.get(conn.key);
    if (!list) this.idle.set(conn.key, (list = []));
    list.push(conn);
    conn.idleTimer = setTimeout(() => {
      const l = this.idle.get(conn.key);
      const i = l?.indexOf(conn) ?? -1;
      if (i >= 0) l!.splice(i, 1);
      this.discard(conn);
    }, this.opts.idleMs ?? 30_000);
    conn.idleTimer.unref();
  }

  private discard(conn: Conn): void {
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.idleTimer = null;
    this.open.delete(conn);
    if (conn.dead) return;
    conn.dead = true;
    conn.smtp.quit();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const list of this.idle.values()) for (const c of list) this.discard(c);
    this.idle.clear();
    for (const c of this.open) this.discard(c);
  }
}

function describeTls(smtp: SMTPConnection, plaintext: boolean): TlsOutcome {
  if (!smtp.secure) return { used: false, protocol: null, cipher: null, verified: false, note: plaintext ? 'handshake-failed' : 'not-offered' };
  // SMTPConnection keeps the upgraded socket private; only protocol and cipher are read.
  const sock = (smtp as unknown as { _socket?: TLSSocket })._socket;
  return {
    used: true,
    protocol: sock?.getProtocol?.() ?? null,
    cipher: sock?.getCipher?.()?.name ?? null,
    verified: sock?.authorized === true,
    note: null,
  };
}

const tlsSocket = (smtp: SMTPConnection) => (smtp as unknown as { _socket?: TLSSocket })._socket;

/** The certificates the server presented, leaf first (each once). */
function peerChain(smtp: SMTPConnection): X509Certificate[] {
  const out: X509Certificate[] = [];
  const seen = new Set<string>();
  let c: DetailedPeerCertificate | undefined = tlsSocket(smtp)?.getPeerCertificate?.(true);
  while (c?.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(new X509Certificate(c.raw));
    c = c.issuerCertificate;
  }
  return out;
}

function peerLeaf(smtp: SMTPConnection): PeerCertificate | null {
  const c = tlsSocket(smtp)?.getPeerCertificate?.();
  return c && c.raw ? c : null;
}
