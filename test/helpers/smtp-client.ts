import net from 'node:net';
import tls from 'node:tls';

/** The latest session (TLS 1.3 ticket) each socket received: tickets may come with the handshake's last flight. */
const sessions = new WeakMap<tls.TLSSocket, Buffer>();
const keepSessions = (s: tls.TLSSocket) => s.on('session', (session: Buffer) => sessions.set(s, session));

/**
 * A deliberately raw SMTP client: it writes exactly the bytes a test gives it and returns
 * exactly the reply lines the server sent, so tests can assert codes and texts precisely
 * (and send the malformed input no well-behaved library would).
 */
export class SmtpClient {
  private buf = '';
  private waiters: Array<() => void> = [];
  private closed = false;
  readonly greeting: Promise<string>;
  /** The latest TLS session the server gave this client (a ticket), to resume with on another connection. */
  get session(): Buffer | undefined {
    return this.sock instanceof tls.TLSSocket ? sessions.get(this.sock) : undefined;
  }

  private constructor(private sock: net.Socket | tls.TLSSocket) {
    this.attach(sock);
    this.greeting = this.read();
  }

  static async connect(port: number, opts: { host?: string; tls?: boolean; localAddress?: string; servername?: string; proxyHeader?: string | Buffer; session?: Buffer; maxVersion?: tls.SecureVersion } = {}): Promise<SmtpClient> {
    const host = opts.host ?? '127.0.0.1';
    // TLS goes over a plain socket we open ourselves, so localAddress (a second loopback
    // address as a "foreign" client) works the same for both kinds of listener.
    const plain = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host, port, localAddress: opts.localAddress }, () => resolve(s));
      s.once('error', reject);
    });
    // The test plays a load balancer: the PROXY header goes first, in clear, before any TLS.
    if (opts.proxyHeader !== undefined) plain.write(opts.proxyHeader);
    const sock = opts.tls
      ? await new Promise<tls.TLSSocket>((resolve, reject) => {
          const s = tls.connect({ socket: plain, rejectUnauthorized: false, session: opts.session, maxVersion: opts.maxVersion, ...(opts.servername ? { servername: opts.servername } : {}) }, () => resolve(s));
          keepSessions(s);
          s.once('error', reject);
        })
      : plain;
    const c = new SmtpClient(sock);
    await c.greeting;
    return c;
  }

  private attach(sock: net.Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf += d;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => undefined);
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** One complete reply (all its lines, joined by \n); '' if the server closed first. */
  async read(): Promise<string> {
    for (;;) {
      const m = /(?:^|\r\n)(\d{3}) [^\r\n]*\r\n/.exec(this.buf);
      if (m) {
        const end = m.index + m[0].length;
        const reply = this.buf.slice(0, end).replace(/^\r\n/, '');
        this.buf = this.buf.slice(end);
        return reply.replace(/\r\n$/, '').split('\r\n').join('\n');
      }
      if (this.closed) return '';
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** The last line of the next reply (the one that carries the final code). */
  async last(): Promise<string> {
    const r = await this.read();
    return r.split('\n').pop() ?? '';
  }

  write(raw: string | Buffer): void {
    this.sock.write(raw);
  }

  /** Sends one command line and returns the last line of its reply. */
  async cmd(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.last();
  }

  async starttls(session?: Buffer): Promise<string> {
    const r = await this.cmd('STARTTLS');
    if (r.startsWith('220')) await this.upgrade(session);
    return r;
  }

  /** The TLS handshake after a 220 to STARTTLS (the fuzzer sends its own STARTTLS spellings). */
  async upgrade(session?: Buffer): Promise<void> {
    const plain = this.sock;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    this.sock = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: plain, rejectUnauthorized: false, session }, () => resolve(s));
      keepSessions(s);
      s.once('error', reject);
    });
    this.attach(this.sock);
  }

  get tlsSocket(): tls.TLSSocket | undefined {
    return this.sock instanceof tls.TLSSocket ? this.sock : undefined;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  async authPlain(user: string, pass: string): Promise<string> {
    return this.cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`);
  }

  /** EHLO, STARTTLS, EHLO, AUTH PLAIN: the usual submission preamble. Returns the AUTH reply. */
  async login(user: string, pass: string, session?: Buffer): Promise<string> {
    await this.cmd('EHLO client.example');
    if (!this.tlsSocket) {
      await this.starttls(session);
      await this.cmd('EHLO client.example');
    }
    return this.authPlain(user, pass);
  }

  /** MAIL, RCPTs, DATA with the given body (CRLF already in it); returns the reply after the dot. */
  async send(from: string, to: string[], body: string | Buffer): Promise<string> {
    const mail = await this.cmd(`MAIL FROM:<${from}>`);
    if (!mail.startsWith('250')) return mail;
    for (const rcpt of to) {
      const r = await this.cmd(`RCPT TO:<${rcpt}>`);
      if (!r.startsWith('250')) return r;
    }
    const d = await this.cmd('DATA');
    if (!d.startsWith('354')) return d;
    this.write(body);
    // The terminating dot goes on a line of its own; a body that ends in CRLF has ended its line.
    const end = Buffer.isBuffer(body) ? body.subarray(-2).toString('latin1') : body.slice(-2);
    this.write(end === '\r\n' ? '.\r\n' : '\r\n.\r\n');
    return this.last();
  }

  async quit(): Promise<void> {
    if (!this.closed) {
      this.write('QUIT\r\n');
      await this.read();
    }
    this.sock.destroy();
  }

  destroy(): void {
    this.sock.destroy();
  }
}
