import { randomBytes } from 'node:crypto';
import { newQueueId, rfc5322Date } from '../spool/message.js';
import type { NewMessage } from '../domain/types.js';

export interface SystemMessage {
  from: string;
  to: string[];
  subject: string;
  text: string;
}

/** RFC 2047 encoded-word for a header that is not plain ASCII. */
function headerText(s: string): string {
  return /^[\x20-\x7e]*$/.test(s) ? s : `=?UTF-8?B?${Buffer.from(s, 'utf8').toString('base64')}?=`;
}

/**
 * A plain-text notice from Postern itself, ready for the spool. Auto-Submitted (RFC 3834)
 * keeps vacation responders from answering it; the envelope sender is the notice's From so
 * a bounce reaches the postmaster rather than looping to a suspended user.
 */
export function systemMessage(m: SystemMessage, hostname: string, now: number): NewMessage {
  const id = newQueueId(now);
  const body = m.text.replace(/\r?\n/g, '\r\n').replace(/(\r\n)?$/, '\r\n');
  const head =
    `Date: ${rfc5322Date(now)}\r\n` +
    `From: Postern <${m.from}>\r\n` +
    `To: ${m.to.join(', ')}\r\n` +
    `Subject: ${headerText(m.subject)}\r\n` +
    `Message-ID: <${id}.${randomBytes(6).toString('hex')}@${hostname}>\r\n` +
    'Auto-Submitted: auto-generated\r\n' +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    'Content-Transfer-Encoding: 8bit\r\n\r\n';
  return {
    id,
    envelope: { mailFrom: m.from, rcptTo: m.to },
    principal: null,
    clientIp: '127.0.0.1',
    receivedAt: now,
    state: 'queued',
    data: Buffer.from(head + body, 'utf8'),
  };
}
