import { randomFillSync } from 'node:crypto';

const CR = 0x0d;
const LF = 0x0a;

/**
 * Offset of the first CR not followed by LF or LF not preceded by CR, or -1.
 * Such bytes are how SMTP smuggling (`\n.\n`, `\r.\n`, `\n.\r\n`) makes a receiver that ends
 * DATA differently from us see a second message, so the whole message is refused.
 */
export function findBareNewline(buf: Buffer): number {
  let i = buf.indexOf(LF);
  while (i !== -1) {
    if (i === 0 || buf[i - 1] !== CR) return i;
    i = buf.indexOf(LF, i + 1);
  }
  i = buf.indexOf(CR);
  while (i !== -1) {
    if (buf[i + 1] !== LF) return i;
    i = buf.indexOf(CR, i + 1);
  }
  return -1;
}

/** Offset just past the CRLF that ends the header section (before the empty line). */
export function headerEnd(buf: Buffer): number {
  if (buf[0] === CR && buf[1] === LF) return 0;
  const i = buf.indexOf('\r\n\r\n');
  return i === -1 ? buf.length : i + 2;
}

export function hasHeader(header: string, name: string): boolean {
  return new RegExp(`^${name}[ \\t]*:`, 'im').test(header);
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => String(n).padStart(2, '0');

/** RFC 5322 date-time in UTC, e.g. "Sun, 22 Nov 2026 12:00:00 +0000". */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  return (
    `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
  );
}

export interface Provenance {
  queueId: string;
  hostname: string;
  /** What the client said in EHLO/HELO. */
  helo: string;
  clientIp: string;
  /** RFC 3848 protocol: ESMTPSA is ESMTP with TLS and AUTH. */
  protocol: string;
  tls: string | null;
  authenticatedAs: string | null;
  /** The envelope sender, in the form it is relayed in. */
  mailFrom: string;
  rcptTo: string[];
  now: number;
}

/**
 * Strip anything that could end a header line or smuggle another field, and anything outside
 * printable ASCII: the header is written as latin1, so a client's invalid UTF-8 HELO would
 * otherwise land in our Received field as raw 8-bit bytes (Postfix's printable() does the same).
 */
const clean = (s: string) => s.replace(/[^\x20-\x7e]|[()\\]/g, '?').slice(0, 255);

function receivedHeader(p: Provenance): string {
  let h = `Received: from ${clean(p.helo) || 'unknown'} ([${clean(p.clientIp)}])\r\n`;
  if (p.tls) h += `\t(${clean(p.tls)})\r\n`;
  h += `\tby ${p.hostname} (Postern) with ${p.protocol} id ${p.queueId}`;
  // Naming the recipient only when there is one, as Postfix does: a list would disclose Bcc.
  if (p.rcptTo.length === 1) h += `\r\n\tfor <${clean(p.rcptTo[0]!)}>`;
  return `${h};\r\n\t${rfc5322Date(p.now)}\r\n`;
}

/**
 * RFC 6409 section 8 fix-ups an MSA may make: add Date and Message-ID when the client left
 * them out, and trace the submission with a Received field. A message without From gets
 * `From: <envelope sender>`, as Postfix's cleanup does: RFC 5322 requires the field,
 * printers and scripts often leave it out, and the envelope sender has passed the sender
 * binding, so the added From is one the account may use. The rest of the message is
 * untouched. Added fields go at the end of the header section, as Postfix's cleanup does.
 */
export function prepareMessage(raw: Buffer, p: Provenance): Buffer {
  const end = headerEnd(raw);
  const header = raw.subarray(0, end).toString('latin1');
  let extra = '';
  if (!hasHeader(header, 'from') && p.mailFrom) extra += `From: <${p.mailFrom}>\r\n`;
  if (!hasHeader(header, 'date')) extra += `Date: ${rfc5322Date(p.now)}\r\n`;
  if (!hasHeader(header, 'message-id')) {
    extra += `Message-ID: <${p.queueId}.${random6().toString('hex')}@${p.hostname}>\r\n`;
  }
  const parts = [Buffer.from(receivedHeader(p), 'latin1'), raw.subarray(0, end)];
  // UTF-8: an SMTPUTF8 sender's From is UTF-8 (RFC 6532); everything else added is ASCII.
  if (extra) parts.push(Buffer.from(extra, 'utf8'));
  if (end === raw.length) parts.push(Buffer.from('\r\n'));
  parts.push(raw.subarray(end));
  return Buffer.concat(parts);
}

const B32 = '0123456789BCDFGHJKLMNPQRSTVWXYZ'; // no vowels: ids never spell words

// Random bytes for ids, drawn from a pool: one randomFillSync per 683 ids instead of one
// (a system call's worth of work) per id, twice a message.
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function random6(): Buffer {
  if (poolAt + 6 > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += 6;
  return pool.subarray(poolAt - 6, poolAt);
}

/** Queue ids sort by time of arrival and are unique without coordination (Postfix long ids). */
export function newQueueId(now: number): string {
  let t = Math.floor(now);
  let s = '';
  for (let i = 0; i < 9; i++) {
    s = B32[t % 31]! + s;
    t = Math.floor(t / 31);
  }
  for (const b of random6()) s += B32[b % 31]!;
  return s;
}

/** The arrival time newQueueId put in an id's first 9 characters; null for a foreign id. */
export function queueIdTime(id: string): number | null {
  if (id.length < 9) return null;
  let t = 0;
  for (let i = 0; i < 9; i++) {
    const d = B32.indexOf(id[i]!);
    if (d === -1) return null;
    t = t * 31 + d;
  }
  return t;
}
