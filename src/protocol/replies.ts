import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { REASONS, type Reason } from '../domain/reasons.js';

/**
 * The only place a decision becomes an SMTP reply (house rule 1, Postfix's
 * smtpd_check_reject). The enhanced code travels at the head of the text; the patch below
 * makes smtp-server send it instead of its own per-code guess.
 */
export class SmtpReply extends Error {
  readonly responseCode: number;
  constructor(
    readonly reason: Reason,
    detail?: string,
  ) {
    super(`${reason.enhanced} ${detail ? `${reason.text}: ${detail}` : reason.text}`);
    this.responseCode = reason.code;
  }
}

export function reply(reason: Reason, detail?: string): SmtpReply {
  return new SmtpReply(reason, detail);
}

/** The reply line as the client sees it, for logs and tests. */
export function replyLine(reason: Reason, detail?: string): string {
  return `${reason.code} ${reply(reason, detail).message}`;
}

const ENHANCED_AT_START = /^[245]\.\d{1,3}\.\d{1,3} /;
let patched = false;

/**
 * smtp-server's own session-ending replies, keyed by the exact text it sends, and the
 * catalogue reason that replaces them. Keyed by text because smtp-server passes no context
 * for them; test/protocol/hostile.test.ts fails if an upgrade changes a text.
 */
const OWN_REPLIES = new Map<string, Reason>([
  ['Error: Command line too long', REASONS.LINE_TOO_LONG],
  ['Error: too many unrecognized commands', REASONS.TOO_MANY_ERRORS],
  ['HTTP requests not allowed', REASONS.NOT_SMTP],
]);

/**
 * Corrections to smtp-server (3.21), made at its single write site.
 *
 * It picks an enhanced status code from the reply code alone (553 -> 5.1.3),
 * so "553 5.7.1 sender not allowed" cannot be expressed through its callbacks, and it
 * answers AUTH before STARTTLS with a non-standard 538. We wrap its single write site:
 * a text that already starts with an enhanced code is sent as is, and 538 becomes the
 * RFC 3207 reply `530 5.7.0 Must issue a STARTTLS command first`.
 *
 * Its own replies that end a session for the client's misbehaviour (a line over 16 KB, ten
 * unknown commands, an HTTP request) say 4.4.2, a network fault; OWN_REPLIES re-codes them.
 *
 * It also lists AUTH in the EHLO reply before TLS. Offering AUTH in clear invites clients to
 * send passwords in clear (RFC 4954 section 4 lets a server withhold it), so the EHLO
 * capability list loses its AUTH line until the connection is secure.
 */
export function patchSmtpServerReplies(): void {
  if (patched) return;
  patched = true;
  const proto = SMTPConnection.prototype as unknown as {
    send(code: number, data?: string | string[], context?: string | false): void;
  };
  const send = proto.send;
  proto.send = function (this: { secure?: boolean }, code: number, data?: string | string[], context?: string | false) {
    if (code === 250 && Array.isArray(data) && !this.secure) {
      return send.call(this, code, data.filter((line) => !/^AUTH\b/i.test(line)), context);
    }
    if (code === 538) return send.call(this, 530, '5.7.0 Must issue a STARTTLS command first', false);
    const own = typeof data === 'string' ? OWN_REPLIES.get(data) : undefined;
    if (own) return send.call(this, own.code, `${own.enhanced} ${own.text}`, false);
    if (typeof data === 'string' && ENHANCED_AT_START.test(data)) return send.call(this, code, data, false);
    return send.call(this, code, data, context);
  };
}
