import net from 'node:net';

/**
 * A client for Dovecot's auth protocol v1.x, the client side as Postfix's
 * `smtpd_sasl_type = dovecot` speaks it: Postern asks Dovecot's `service auth` whether a
 * username and password are right, so users keep one password for IMAP and SMTP. The SMTP
 * layer collects the name and password of AUTH PLAIN and AUTH LOGIN alike, so both go to
 * Dovecot as PLAIN with an initial response: one round trip per login.
 */

export type DovecotEndpoint = { path: string } | { host: string; port: number };

/** "" is not accepted; "/abs/path" or "inet:HOST:PORT" ("inet:[::1]:12345" too). Throws Error with a message naming the value. */
export function parseDovecotSocket(spec: string): DovecotEndpoint {
  if (spec.startsWith('/')) return { path: spec };
  const m = /^inet:(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(spec);
  const port = Number(m?.[3]);
  if (m && (m[2] !== undefined || net.isIPv6(m[1]!)) && port >= 1 && port <= 65535) return { host: m[1] ?? m[2]!, port };
  throw new Error(
    `dovecot_socket ${JSON.stringify(spec)} is not a socket: give an absolute path to Dovecot's auth-client socket ("/run/dovecot/auth-client") or "inet:HOST:PORT" ("inet:127.0.0.1:12345", "inet:[::1]:12345")`,
  );
}

export interface DovecotAuthOptions {
  socket: string;
  service: string;
  /** Pool size, default 4. */
  connections?: number;
  /** Per request, default 5000. */
  timeoutMs?: number;
}

export interface DovecotAuthRequest {
  username: string;
  password: string;
  rip: string;
  lip: string;
  rport?: number;
  lport?: number;
  secured: boolean;
  session?: string;
}

export type DovecotAuthResult =
  /** user= from OK (Dovecot may canonicalise the name); the given name if absent. */
  | { kind: 'ok'; user: string }
  /** Wrong password or unknown user: Dovecot's reason= if any. */
  | { kind: 'fail'; reason: string | null }
  /** Dovecot down, timing out, temp_fail, protocol trouble: a short reason, never a credential. */
  | { kind: 'tempfail'; reason: string };

/** Far above any real reply (Dovecot's own limit is 16 KiB): a peer that sends more is not Dovecot. */
const MAX_LINE = 64 * 1024;
/**
 * Dovecot ignores the CPID on auth-client sockets but refuses one already in use on a socket
 * that allows master logins, and a pool holds several connections of one process. Real pids
 * stay below Linux's pid_max ceiling (2^22), so CPID = slot × 2^22 + pid is unique among the
 * connections of every process on this host.
 */
const PID_SPAN = 4_194_304;
const MAX_SLOT = Math.floor(0xffff_ffff / PID_SPAN) - 1;

/** Dovecot's tab-escaping (lib/strescape.c): parameters carry any byte without breaking the line. */
function tabEscape(s: string): string {
  return s.replace(/[\0\x01\t\r\n]/g, (c) => '\x01' + ({ '\0': '0', '\x01': '1', '\t': 't', '\r': 'r', '\n': 'n' } as Record<string, string>)[c]);
}
function tabUnescape(s: string): string {
  return s.replace(/\x01([\s\S]?)/g, (_, c: string) => ({ '0': '\0', '1': '\x01', t: '\t', r: '\r', n: '\n' } as Record<string, string>)[c] ?? c);
}

/** Dovecot matches rip/lip against its own networks (login_trusted_networks, allow_nets): give it plain IPv4. */
function plainIp(ip: string): string {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return v4 ? v4[1]! : ip;
}

interface Pending {
  resolve(r: DovecotAuthResult): void;
  timer: NodeJS.Timeout;
  username: string;
  /** The connection's input counter when the request went out (queued: when the handshake ended). */
  inputAtSend: number;
}

/** One persistent connection: its own request ids, its own pending map. */
class Connection {
  readonly pending = new Map<number, Pending>();
  /** Request lines waiting for the handshake (they hold credentials: never logged, dropped on close). */
  private queue: Array<{ id: number; line: string }> = [];
  private buf = '';
  private nextId = 1;
  private mechs: string[] = [];
  /** Chunks received so far: tells a slow request from a connection that went silent. */
  private inputs = 0;
  ready = false;
  dead = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly onDead: (c: Connection, reason: string) => void,
    private readonly onReady?: (mechs: string[]) => void,
  ) {
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(`VERSION\t1\t2\nCPID\t${cpid()}\n`));
    socket.on('data', (d: string) => this.input(d));
    socket.on('error', (e: NodeJS.ErrnoException) => this.destroy(`dovecot auth connection: ${e.code ?? e.message}`));
    socket.on('close', () => this.destroy('dovecot auth connection closed'));
  }

  send(line: string, username: string, resolve: (r: DovecotAuthResult) => void, timeoutMs: number, onTimeout: () => void): void {
    const id = this.nextId++;
    const timer = setTimeout(() => {
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      onTimeout();
      resolve({ kind: 'tempfail', reason: `dovecot auth timed out after ${timeoutMs} ms` });
      // A peer that never finished the handshake will not finish it later, and one that sent
      // nothing at all since this request is presumed gone (a firewall that dropped an idle
      // connection says nothing): the next request gets a fresh connection. Otherwise the
      // backend is slow for this request only, and CANCEL lets Dovecot drop it.
      if (!this.ready) this.destroy('dovecot auth handshake timed out');
      else if (this.inputs === p.inputAtSend) this.destroy('dovecot auth connection silent');
      else this.socket.write(`CANCEL\t${id}\n`);
    }, timeoutMs);
    this.pending.set(id, { resolve, timer, username, inputAtSend: this.inputs });
    if (this.ready) this.socket.write(`AUTH\t${id}\t${line}\n`);
    else this.queue.push({ id, line });
  }

  private input(d: string): void {
    this.inputs++;
    this.buf += d;
    let nl: number;
    while (!this.dead && (nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.line(line.split('\t'));
    }
    if (this.buf.length > MAX_LINE) this.destroy('dovecot auth reply line too long');
  }

  private line([cmd, ...args]: string[]): void {
    if (!this.ready) {
      if (cmd === 'VERSION' && args[0] !== '1') return this.destroy(`dovecot auth protocol version ${args[0] ?? '?'} is not 1`);
      if (cmd === 'MECH' && args[0]) this.mechs.push(args[0].toUpperCase());
      if (cmd !== 'DONE') return; // SPID, CUID, COOKIE: only for master logins, which Postern never does
      if (!this.mechs.includes('PLAIN')) return this.destroy('dovecot offers no PLAIN mechanism (auth_mechanisms)');
      this.ready = true;
      this.onReady?.(this.mechs);
      for (const { id, line } of this.queue) {
        const p = this.pending.get(id);
        if (!p) continue; // timed out already
        p.inputAtSend = this.inputs;
        this.socket.write(`AUTH\t${id}\t${line}\n`);
      }
      this.queue = [];
      return;
    }
    if (cmd !== 'OK' && cmd !== 'FAIL' && cmd !== 'CONT') return; // unknown lines are ignored, as the protocol asks
    const id = Number(args[0]);
    const p = this.pending.get(id);
    if (!p) return; // late answer to a request that timed out
    this.pending.delete(id);
    clearTimeout(p.timer);
    const kv = new Map<string, string>();
    for (const a of args.slice(1)) {
      const eq = a.indexOf('=');
      kv.set(eq < 0 ? a : a.slice(0, eq), eq < 0 ? '' : tabUnescape(a.slice(eq + 1)));
    }
    if (cmd === 'OK') {
      // Dovecot's own login processes refuse these OKs: "nologin" is an account disabled in
      // the passdb (nologin=y), and a proxy/director answer ("proxy", "proxy_maybe", "host")
      // may come without the password ever being checked (nopassword=y). Postern refuses them too.
      const refuse = ['nologin', 'proxy', 'proxy_maybe', 'host'].find((k) => kv.has(k));
      if (refuse) return p.resolve({ kind: 'fail', reason: `dovecot answered OK with ${refuse}${kv.get('reason') ? `: ${kv.get('reason')}` : ''}` });
      return p.resolve({ kind: 'ok', user: kv.get('user') || p.username });
    }
    if (cmd === 'CONT') {
      // PLAIN with an initial response needs no second step: a server that asks for one is
      // not behaving like Dovecot, and there is nothing right to answer.
      this.socket.write(`CANCEL\t${id}\n`);
      return p.resolve({ kind: 'tempfail', reason: 'dovecot auth asked to continue a PLAIN login' });
    }
    if (kv.has('temp') || kv.get('code') === 'temp_fail') return p.resolve({ kind: 'tempfail', reason: `dovecot auth temporary failure${kv.get('reason') ? `: ${kv.get('reason')}` : ''}` });
    p.resolve({ kind: 'fail', reason: kv.get('reason') ?? null });
  }

  /** Ends the connection; every request on it resolves tempfail with this reason. */
  destroy(reason: string): void {
    if (this.dead) return;
    this.dead = true;
    this.queue = [];
    this.buf = '';
    this.socket.destroy();
    this.onDead(this, reason);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.resolve({ kind: 'tempfail', reason });
    }
    this.pending.clear();
  }
}

let slot = 0;
function cpid(): number {
  slot = (slot % MAX_SLOT) + 1;
  return slot * PID_SPAN + (process.pid % PID_SPAN);
}

/**
 * A pool of up to `connections` persistent connections, opened on demand. Dovecot answers
 * requests on one connection in any order (ids match them), so a pool is for spreading load
 * and for surviving one connection's loss, not for ordering.
 */
export class DovecotAuthClient {
  readonly stats = { requests: 0, ok: 0, fail: 0, tempfail: 0, timeouts: 0 };
  private readonly endpoint: DovecotEndpoint;
  private readonly pool = new Set<Connection>();
  private readonly max: number;
  private readonly timeoutMs: number;
  private closed = false;

  constructor(private readonly opts: DovecotAuthOptions) {
    this.endpoint = parseDovecotSocket(opts.socket);
    this.max = Math.max(1, opts.connections ?? 4);
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  private connect(): net.Socket {
    return 'path' in this.endpoint ? net.connect({ path: this.endpoint.path }) : net.connect({ host: this.endpoint.host, port: this.endpoint.port });
  }

  private open(): Connection {
    const c = new Connection(this.connect(), (dead) => this.pool.delete(dead));
    this.pool.add(c);
    return c;
  }

  /** The connection with the fewest pending requests; a new one while the pool has room and none is idle. */
  private pick(): Connection {
    let best: Connection | undefined;
    for (const c of this.pool) if (!best || c.pending.size < best.pending.size) best = c;
    return best && (best.pending.size === 0 || this.pool.size >= this.max) ? best : this.open();
  }

  /** Never rejects: every outcome is a result, and a broken Dovecot is a tempfail, not a wrong password. */
  authenticate(req: DovecotAuthRequest): Promise<DovecotAuthResult> {
    this.stats.requests++;
    return new Promise<DovecotAuthResult>((resolve) => {
      const done = (r: DovecotAuthResult) => {
        this.stats[r.kind]++;
        resolve(r);
      };
      // A name with these bytes cannot be a valid login, and NUL would shift PLAIN's fields.
      if (req.username === '' || /[\0\t\r\n]/.test(req.username) || req.password.includes('\0')) return done({ kind: 'fail', reason: 'username or password with control characters' });
      if (this.closed) return done({ kind: 'tempfail', reason: 'dovecot auth client closed' });
      const resp = Buffer.from(`\0${req.username}\0${req.password}`, 'utf8').toString('base64');
      const fields = [
        'PLAIN',
        `service=${tabEscape(this.opts.service)}`,
        ...(req.secured ? ['secured'] : []),
        // Dovecot's own penalty holds a reply up to 15 s after failures from one address: past
        // our timeout, so a guessing burst would turn into tempfails for everyone behind that
        // address, uncounted by Postern's guessing brake, which already throttles by user and
        // address before Dovecot is asked (as chasquid does; IMAP keeps its penalty).
        'no-penalty',
        ...(req.lip ? [`lip=${tabEscape(plainIp(req.lip))}`] : []),
        ...(req.rip ? [`rip=${tabEscape(plainIp(req.rip))}`] : []),
        ...(req.lport ? [`lport=${req.lport}`] : []),
        ...(req.rport ? [`rport=${req.rport}`] : []),
        ...(req.session ? [`session=${tabEscape(req.session)}`] : []),
        `resp=${resp}`,
      ];
      this.pick().send(fields.join('\t'), req.username, done, this.timeoutMs, () => this.stats.timeouts++);
    });
  }

  /** Connect and handshake on a connection of its own (for `config check` and the doctor). */
  probe(): Promise<{ ok: true; mechanisms: string[] } | { ok: false; error: string }> {
    return new Promise((resolve) => {
      const c = new Connection(
        this.connect(),
        (_, error) => {
          clearTimeout(timer);
          resolve({ ok: false, error });
        },
        (mechanisms) => {
          resolve({ ok: true, mechanisms });
          c.destroy('probe done'); // resolved already: this second answer is ignored
        },
      );
      const timer = setTimeout(() => c.destroy(`dovecot auth handshake timed out after ${this.timeoutMs} ms`), this.timeoutMs);
    });
  }

  /** Pending requests resolve tempfail; later calls answer tempfail without connecting. */
  close(): Promise<void> {
    this.closed = true;
    for (const c of [...this.pool]) c.destroy('dovecot auth client closed');
    return Promise.resolve();
  }
}
