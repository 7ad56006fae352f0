import { randomBytes } from 'node:crypto';
import { rfc5322Date } from '../spool/message.js';

export interface FailedRecipient {
  address: string;
  /** RFC 3463 status, e.g. 5.1.1, or 4.4.7 for a message that expired in the queue. */
  status: string;
  /** The remote reply or our own reason, for Diagnostic-Code. */
  diagnostic: string;
  /** Host that answered, for Remote-MTA; null when none did. */
  remoteMta: string | null;
  /** The remote server spoke (Diagnostic-Code type "smtp") or we decided (type "x-postern"). */
  remote: boolean;
  lastAttemptAt: number;
}

export interface DsnInput {
  queueId: string;
  /** Envelope sender of the failed message: the DSN goes there. Never empty (RFC 3464 / 5321 6.1). */
  to: string;
  reportingMta: string;
  arrivalDate: number;
  recipients: FailedRecipient[];
  /** The original header section (text/rfc822-headers: headers only, RFC 3462 / 6522). */
  originalHeaders: Buffer;
  now: number;
}

/** Keeps a report field on one line: nothing from a remote reply may start a new field. */
const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 900);

/**
 * An RFC 3464 delivery status notification: multipart/report (RFC 6522) with a human part,
 * the machine-readable message/delivery-status, and the original headers (not the body: it
 * may be large, and the headers are what a sender needs to recognise the message).
 * The caller queues it with an empty envelope sender so no DSN is ever sent about it.
 */
export function buildDsn(d: DsnInput): Buffer {
  const boundary = `${d.queueId}/${randomBytes(8).toString('hex')}`;
  const expired = d.recipients.some((r) => r.status === '4.4.7');
  const human = [
    'This is the mail system at host ' + d.reportingMta + '.',
    '',
    "I'm sorry to have to inform you that your message could not",
    'be delivered to one or more recipients. It is attached below.',
    '',
    ...d.recipients.map((r) => `<${oneLine(r.address)}>: ${oneLine(r.diagnostic)}`),
    '',
  ].join('\r\n');
  const perMessage = [
    `Reporting-MTA: dns; ${d.reportingMta}`,
    `X-Postern-Queue-ID: ${d.queueId}`,
    `Arrival-Date: ${rfc5322Date(d.arrivalDate)}`,
  ].join('\r\n');
  const perRecipient = d.recipients.map((r) =>
    [
      `Final-Recipient: rfc822; ${oneLine(r.address)}`,
      // An expired message is still "failed" (RFC 3464 2.3.3: 'delayed' is for warnings).
      'Action: failed',
      `Status: ${r.status}`,
      ...(r.remoteMta ? [`Remote-MTA: dns; ${oneLine(r.remoteMta)}`] : []),
      `Diagnostic-Code: ${r.remote ? 'smtp' : 'x-postern'}; ${oneLine(r.diagnostic)}`,
      `Last-Attempt-Date: ${rfc5322Date(r.lastAttemptAt)}`,
    ].join('\r\n'),
  );
  let headers = d.originalHeaders.toString('latin1');
  if (!headers.endsWith('\r\n')) headers += '\r\n';
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${d.reportingMta}>`,
    `To: <${oneLine(d.to)}>`,
    `Subject: ${expired ? 'Undelivered Mail Returned to Sender (delivery time expired)' : 'Undelivered Mail Returned to Sender'}`,
    `Date: ${rfc5322Date(d.now)}`,
    `Message-ID: <${d.queueId}.dsn.${randomBytes(6).toString('hex')}@${d.reportingMta}>`,
    // RFC 3834: an automatic reply; vacation responders and list software must not answer it.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
  ].join('\r\n');
  const body = [
    `${head}\r\n`,
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Description: Notification',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    human,
    `--${boundary}`,
    'Content-Description: Delivery report',
    'Content-Type: message/delivery-status',
    '',
    perMessage,
    '',
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Description: Undelivered Message Headers',
    'Content-Type: text/rfc822-headers',
    '',
    headers,
    `--${boundary}--`,
    '',
  ].join('\r\n');
  return Buffer.from(body, 'latin1');
}
