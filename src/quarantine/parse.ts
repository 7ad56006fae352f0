import { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AddressObject } from 'mailparser';
import addressparser from 'nodemailer/lib/addressparser';
import type yauzl from 'yauzl';
import type { AttachmentFacts, MessageFacts } from '../policy/scoring.js';
import { fieldAddresses, headerFields } from '../policy/headers.js';
import { headerEnd } from '../spool/message.js';

// Bounds on work per message, so a crafted message cannot make scoring the slow part of DATA:
// beyond these counts the facts already say enough to hold it.
const MAX_ARCHIVE_ENTRIES = 10_000;
const MAX_LINKS = 5_000;
// Parsing runs on the event loop that also serves every other SMTP session. Fed in slices
// with a turn of the loop between them, a 25 MB message costs the others a few ms of latency
// at a time instead of one stall of a quarter second or more.
const SLICE = 256 * 1024;

function sliced(data: Buffer): Buffer | Readable {
  if (data.length <= SLICE) return data;
  return Readable.from(
    (async function* () {
      for (let o = 0; o < data.length; o += SLICE) {
        yield data.subarray(o, o + SLICE);
        await nextTurn();
      }
    })(),
    { objectMode: false },
  );
}

/**
 * Parses the final message (RFC 5322/MIME, with mailparser: the parser nodemailer's author
 * keeps for exactly this job) into the facts scoring needs. Attachments are decoded;
 * zip archives are listed by name from their central directory, never extracted.
 */
export async function parseFacts(data: Buffer): Promise<MessageFacts> {
  return plainFacts(data) ?? mimeFacts(data);
}

const OTHER_SENDERS = new Set(['sender', 'resent-from', 'resent-sender', 'reply-to']);

/**
 * The addresses of Sender, Resent-From, Resent-Sender and Reply-To, read from the header as
 * written (both parse paths share this, so they cannot differ on it). Addresses need no
 * decoding: RFC 2047 words may stand in names only.
 */
export function otherSenders(data: Buffer): MessageFacts['otherSenders'] {
  const parsed = headerFields(data.toString('utf8', 0, headerEnd(data)));
  if ('badLine' in parsed) return [];
  const out: MessageFacts['otherSenders'] = [];
  for (const f of parsed.fields) {
    if (!OTHER_SENDERS.has(f.name)) continue;
    for (const m of fieldAddresses(f.value)) out.push({ field: f.name as MessageFacts['otherSenders'][number]['field'], address: m.address });
  }
  return out;
}

/** The full MIME parse (mailparser): any message. */
export async function mimeFacts(data: Buffer): Promise<MessageFacts> {
  // mailparser (with its charset tables) is 30 MB resident: loaded when the first message
  // that needs it arrives, not by every process that might (plain text never does).
  const { simpleParser } = await import('mailparser');
  const mail = await simpleParser(sliced(data), {
    // Only the parts and the raw HTML are needed; converting between text and HTML is most
    // of mailparser's cost on a large HTML body and tells scoring nothing.
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipImageLinks: true,
    skipTextLinks: true,
  });
  const from = mailboxes(mail.from);
  const attachments: AttachmentFacts[] = [];
  for (const a of mail.attachments) {
    attachments.push({
      filename: a.filename ?? null,
      contentType: a.contentType ?? 'application/octet-stream',
      executableContent: isExecutable(a.content),
      archiveEntries: isZip(a.filename, a.contentType, a.content) ? await zipEntryNames(a.content) : null,
    });
  }
  const htmlLinks = typeof mail.html === 'string' ? await anchors(mail.html) : [];
  return { from, otherSenders: otherSenders(data), attachments, htmlLinks, textUrls: urlsIn(mail.text ?? '') };
}

function urlsIn(text: string): string[] {
  return [...text.matchAll(/\bhttps?:\/\/[^\s<>"'`)\]}]+/gi)]
    .slice(0, MAX_LINKS)
    // Sentence punctuation after a URL is prose, not part of the link.
    .map((m) => m[0].replace(/[.,;:!?]+$/, ''));
}

// A top-level Content-Type that mailparser would read as plain UTF-8 (or ASCII) text.
const PLAIN_TYPE = /^text\/plain[ \t]*(?:;[ \t]*charset[ \t]*=[ \t]*(?:"(?:us-ascii|ascii|utf-8|utf8)"|(?:us-ascii|ascii|utf-8|utf8))[ \t]*)?;?[ \t]*$/i;
const HEADER_LINE = /^([!-9;-~]+)[ \t]*:([^]*)$/;

/**
 * The facts of the commonest message, without a MIME parse: one part of plain text in UTF-8
 * or ASCII, 7bit or 8bit, no encoded words or IDNs in From. Such a message has no
 * attachments and no HTML, its text is its body, and its From is what addressparser makes of
 * the header: exactly what mailparser reports, at a twentieth of the cost (mailparser's
 * stream set-up alone is 0.2 ms a message, and submission spends it on every one). Anything
 * else, or anything unusual about the header (a second From, a Content-Disposition, a
 * parameter other than charset), returns null and gets the full parse. A test compares the
 * two on every message of the corpus.
 */
export function plainFacts(data: Buffer): MessageFacts | null {
  const end = headerEnd(data);
  const lines = data.toString('utf8', 0, end).split(/\r\n(?![ \t])/);
  let type: string | undefined;
  let encoding: string | undefined;
  let from: string | undefined;
  for (const line of lines) {
    if (line === '') continue;
    const m = HEADER_LINE.exec(line);
    if (!m) return null;
    const name = m[1]!.toLowerCase();
    // Unfolded as libmime unfolds for mailparser: a line break and its indent become one space.
    const value = m[2]!.replace(/\r\n[ \t]*/g, ' ').trim();
    if (name === 'content-type') {
      if (type !== undefined) return null;
      type = value;
    } else if (name === 'content-transfer-encoding') {
      if (encoding !== undefined) return null;
      encoding = value.toLowerCase();
    } else if (name === 'from') {
      if (from !== undefined) return null;
      from = value;
    } else if (name === 'content-disposition' || name === 'mime-version' && value !== '1.0') {
      return null;
    }
  }
  if (type !== undefined && !PLAIN_TYPE.test(type)) return null;
  if (encoding !== undefined && encoding !== '7bit' && encoding !== '8bit') return null;
  // Encoded words, IDNs and non-ASCII names are mailparser's to decode.
  if (from !== undefined && (/=\?|xn--/i.test(from) || /[^\x20-\x7e\t]/.test(from))) return null;
  return {
    from: from === undefined ? [] : flatMailboxes(addressparser(from)),
    otherSenders: otherSenders(data),
    attachments: [],
    htmlLinks: [],
    textUrls: urlsIn(data.toString('utf8', end)),
  };
}

/** As mailboxes() below: a group stands for its members; names trimmed, as mailparser does. */
function flatMailboxes(list: ReturnType<typeof addressparser>): MessageFacts['from'] {
  const out: MessageFacts['from'] = [];
  for (const v of list) {
    for (const m of v.group ?? [v]) out.push({ address: m.address ?? '', name: m.name.trim() });
  }
  return out;
}

function mailboxes(field: AddressObject | AddressObject[] | undefined): MessageFacts['from'] {
  const objs = Array.isArray(field) ? field : field ? [field] : [];
  const out: MessageFacts['from'] = [];
  for (const o of objs) {
    for (const v of o.value) {
      // A group ("Friends: a@x, b@y;") lists its members; scoring judges each one.
      for (const m of v.group ?? [v]) out.push({ address: m.address ?? '', name: m.name ?? '' });
    }
  }
  return out;
}

/** Windows PE ("MZ" ... "PE\0\0") or ELF: a program, whatever the part's name and type say. */
export function isExecutable(b: Buffer): boolean {
  if (b.length >= 4 && b[0] === 0x7f && b.toString('latin1', 1, 4) === 'ELF') return true;
  if (b.length < 0x40 || b[0] !== 0x4d || b[1] !== 0x5a) return false;
  const pe = b.readUInt32LE(0x3c);
  return pe + 4 <= b.length && b.toString('latin1', pe, pe + 4) === 'PE\0\0';
}

function isZip(name: string | undefined, type: string | undefined, b: Buffer): boolean {
  // By content first: a zip renamed to .pdf is still opened by Windows' Explorer as a folder.
  if (b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && (b[2] === 0x03 || b[2] === 0x05) && (b[3] === 0x04 || b[3] === 0x06)) return true;
  return /\.zip$/i.test(name ?? '') || /^application\/(x-)?zip(-compressed)?$/i.test(type ?? '');
}

/** Entry names of a zip, or null when it cannot be read as one (scoring then has only its name). */
export async function zipEntryNames(b: Buffer): Promise<string[] | null> {
  let zip: yauzl.ZipFile;
  const { default: yauzlLib } = await import('yauzl');
  try {
    // strictFileNames off: a name with "\" or "../" is itself a sign, and must still be listed.
    zip = await yauzlLib.fromBufferPromise(b, { lazyEntries: true, decodeStrings: true, validateEntrySizes: false, strictFileNames: false });
  } catch {
    return null;
  }
  const names: string[] = [];
  try {
    for await (const entry of zip.eachEntry()) {
      names.push(entry.fileName);
      if (names.length >= MAX_ARCHIVE_ENTRIES) break;
    }
  } catch {
    // A damaged central directory: what was listed before the damage still counts.
  } finally {
    zip.close();
  }
  return names;
}

/** Each <a href> (and image-map <area href>) with the text a reader sees for it. */
export async function anchors(html: string): Promise<MessageFacts['htmlLinks']> {
  const { Parser } = await import('htmlparser2');
  const out: MessageFacts['htmlLinks'] = [];
  let open: { href: string; text: string } | null = null;
  const parser = new Parser(
    {
      onopentag(name, attrs) {
        if (out.length >= MAX_LINKS) return;
        if (name === 'a' && attrs.href !== undefined) {
          if (open) out.push(open);
          open = { href: attrs.href, text: '' };
        } else if (name === 'area' && attrs.href !== undefined) {
          out.push({ href: attrs.href, text: attrs.alt ?? '' });
        }
      },
      ontext(text) {
        if (open && open.text.length < 2048) open.text += text;
      },
      onclosetag(name) {
        if (name === 'a' && open) {
          out.push(open);
          open = null;
        }
      },
    },
    { decodeEntities: true, lowerCaseTags: true },
  );
  parser.write(html);
  parser.end();
  if (open) out.push(open);
  return out.map((l) => ({ href: l.href, text: l.text.replace(/\s+/g, ' ').trim() }));
}
