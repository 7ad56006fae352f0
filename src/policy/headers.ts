import addressparser from 'nodemailer/lib/addressparser';

/**
 * The header section read strictly (RFC 5322), for the fields that say who a message is from.
 * Pure: no I/O. Every reader downstream (mail clients, DKIM signers and verifiers, DMARC)
 * must see the same fields we judged, so a header that two readers could read two ways is
 * refused rather than interpreted.
 */

export interface HeaderField {
  /** Lower case, without the colon. */
  name: string;
  /** As written after the colon, folds included. */
  value: string;
}

// RFC 5322 2.2: printable ASCII but colon; obsolete syntax (4.5) allows white space before it.
const FIELD = /^([!-9;-~]+)[ \t]*:/;

/** The fields of a header section (text up to the empty line), or the 1-based line that is not one. */
export function headerFields(header: string): { fields: HeaderField[] } | { badLine: number } {
  const fields: HeaderField[] = [];
  const lines = header.split('\r\n');
  if (lines.at(-1) === '') lines.pop();
  for (const [i, line] of lines.entries()) {
    if (line === '') break;
    if (line[0] === ' ' || line[0] === '\t') {
      // A fold: it continues the field above. One that is only white space ends the header
      // for some parsers and not for others (RFC 5322 4.5.3 forbids generating it).
      const last = fields.at(-1);
      if (!last || !/[^ \t]/.test(line)) return { badLine: i + 1 };
      last.value += `\r\n${line}`;
      continue;
    }
    const m = FIELD.exec(line);
    if (!m) return { badLine: i + 1 };
    fields.push({ name: m[1]!.toLowerCase(), value: line.slice(m[0].length) });
  }
  return { fields };
}

/** RFC 5322 3.6: fields a message may carry at most once (From exactly once). */
const AT_MOST_ONCE = ['from', 'sender', 'reply-to', 'to', 'cc', 'bcc', 'subject', 'date', 'message-id', 'in-reply-to', 'references'];

/** Fields naming who sent the message: their address lists are checked for one reading only. */
export const SENDER_FIELDS = ['from', 'sender', 'reply-to', 'resent-from', 'resent-sender'];

const DISPLAY: Record<string, string> = { 'reply-to': 'Reply-To', 'message-id': 'Message-ID', 'in-reply-to': 'In-Reply-To', 'resent-from': 'Resent-From', 'resent-sender': 'Resent-Sender', cc: 'Cc', bcc: 'Bcc' };
export const displayName = (name: string) => DISPLAY[name] ?? name.charAt(0).toUpperCase() + name.slice(1);

/**
 * Why an address list cannot be read one way only, or null. Refused: two angle-addrs in one
 * mailbox (`<alice@example.com> <ceo@bank.example>` is one mailbox to some readers, the
 * other to others), text after the angle-addr, several words without an angle-addr
 * (`alice@example.com ceo@bank.example`), unbalanced quotes, comments or brackets, and where
 * `groups` is false any group syntax: RFC 5322 makes From a mailbox-list and Sender one
 * mailbox, and `"CEO" <ceo@bank.example>: alice@example.com;` is a group to one parser and
 * the CEO's address to another.
 */
export function addressListProblem(value: string, groups: boolean): string | null {
  let quoted = false;
  let comment = 0;
  let angle = false;
  let angles = 0;
  let closed = false;
  let words = 0;
  let inWord = false;
  const endMailbox = (): string | null => {
    if (!angles && words > 1) return 'several words without <> around the address';
    angles = 0;
    words = 0;
    closed = false;
    return null;
  };
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (quoted || comment) {
      if (c === '\\') i++;
      else if (quoted && c === '"') quoted = false;
      else if (comment && c === '(') comment++;
      else if (comment && c === ')') comment--;
      continue;
    }
    if (c === '(') {
      comment = 1;
      inWord = false;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
      inWord = false;
      continue;
    }
    if (angle) {
      if (c === '"') quoted = true;
      else if (c === '<') return 'an address inside an address';
      else if (c === '>') {
        angle = false;
        closed = true;
      }
      continue;
    }
    if (c === ':' || c === ';') {
      if (!groups) return 'group syntax, which this field does not allow';
      // A group's display name ends (":") or the group does (";"); either ends a mailbox.
      if (c === ':' && (closed || angles)) return 'an address before a group name';
      const why = endMailbox();
      if (why) return why;
      continue;
    }
    if (c === ',') {
      const why = endMailbox();
      if (why) return why;
      continue;
    }
    if (c === '<') {
      if (++angles > 1) return 'two addresses in one mailbox';
      angle = true;
      inWord = false;
      continue;
    }
    if (closed) return 'text after an address';
    if (c === '>') return 'an unopened >';
    if (!inWord) words++;
    inWord = true;
    if (c === '"') quoted = true;
  }
  if (quoted) return 'an unclosed quote';
  if (comment) return 'an unclosed comment';
  if (angle) return 'an unclosed <';
  return endMailbox();
}

/**
 * What is wrong with a submitted header, as the reply's detail, or null. At most one of each
 * field RFC 5322 3.6 allows once (From among them: none at all is mended by the spool, which
 * adds the envelope sender), and sender fields that read one way.
 * Why refuse rather than hold: the sender's client can fix it at once, an admin reviewing
 * a held copy could only bounce it, and large receivers refuse such mail anyway; a second
 * From is also how a DKIM signature over one From lends its domain to the other.
 */
export function headerProblem(header: string): string | null {
  const parsed = headerFields(header);
  if ('badLine' in parsed) return `header line ${parsed.badLine} is not a header field`;
  const counts = new Map<string, number>();
  for (const f of parsed.fields) counts.set(f.name, (counts.get(f.name) ?? 0) + 1);
  for (const name of AT_MOST_ONCE) {
    const n = counts.get(name) ?? 0;
    if (n > 1) return `${n} ${displayName(name)} fields, RFC 5322 allows one`;
  }
  for (const f of parsed.fields) {
    if (!SENDER_FIELDS.includes(f.name)) continue;
    const why = addressListProblem(f.value, f.name === 'reply-to');
    if (why) return `${displayName(f.name)} field has ${why}`;
    if (f.name === 'from' && !fieldAddresses(f.value).some((m) => m.address.includes('@'))) return 'From field has no address';
  }
  return null;
}

/** The mailboxes of an address field (groups flattened), with names as written. */
export function fieldAddresses(value: string): Array<{ address: string; name: string }> {
  return addressparser(value.replace(/\r\n(?=[ \t])/g, ''), { flatten: true }).map((m) => ({ address: m.address ?? '', name: (m.name ?? '').trim() }));
}
