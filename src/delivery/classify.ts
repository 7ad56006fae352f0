/**
 * Remote replies and connection errors, classified by a data table (ZoneMTA's way) rather
 * than nested ifs: the first row whose pattern matches "CODE reply" wins. Adding a quirk of
 * some receiver is one row.
 *
 * Actions:
 *  - next-host: this MX host could not take the message at all (refused connection, 421
 *    greeting, timeout); RFC 5321 5.1 says try the next MX, the recipients are not judged.
 *  - defer: a temporary answer about this recipient or message (4xx): retry later.
 *  - fail: a permanent answer (5xx): report to the sender with a DSN.
 */
export type Action = 'next-host' | 'defer' | 'fail';

export interface Rule {
  pattern: RegExp;
  action: Action;
  category: string;
}

export const RULES: readonly Rule[] = [
  // Network-level failures, by Node/nodemailer error code: the host is unreachable or mute.
  { pattern: /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|EPIPE)\b/, action: 'next-host', category: 'network' },
  { pattern: /^(ETIMEDOUT|ESOCKET|ECONNECTION|EPROTOCOL|EDNS)\b/, action: 'next-host', category: 'network' },
  // 421 is "service not available, closing channel" (RFC 5321 4.2.2): a host-level refusal.
  { pattern: /^421\b/, action: 'next-host', category: 'throttled' },
  // TLS required by our policy and not achieved with this host: another MX may do better.
  { pattern: /^ETLS\b/, action: 'next-host', category: 'tls' },
  // A non-ASCII mailbox and a next hop without SMTPUTF8: nothing later will change that, and
  // sending the bytes anyway would hand the receiver an address it cannot read (RFC 6531 3.2).
  { pattern: /^ESMTPUTF8\b/, action: 'fail', category: 'smtputf8' },
  // Mailbox full is usually temporary even when sent as 552 (RFC 5321 4.5.3.1.10 history).
  { pattern: /^5\d\d[ -]4\.2\.2\b/, action: 'defer', category: 'mailbox-full' },
  { pattern: /^4\d\d\b/, action: 'defer', category: 'transient' },
  { pattern: /^5\d\d[ -]5\.1\.\d+\b/, action: 'fail', category: 'recipient' },
  { pattern: /^5\d\d[ -]5\.7\.\d+\b/, action: 'fail', category: 'policy' },
  { pattern: /^5\d\d\b/, action: 'fail', category: 'rejected' },
];

export interface Classified {
  action: Action;
  category: string;
  /** RFC 3463 status for the DSN and the listing: the reply's own when it has one. */
  status: string;
}

/** Classifies "CODE reply" or "ECODE message"; anything unknown is deferred, never failed. */
export function classify(line: string): Classified {
  const rule = RULES.find((r) => r.pattern.test(line));
  const action = rule?.action ?? 'defer';
  const enhanced = /^[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(line)?.[1];
  let status = enhanced;
  if (!status) {
    if (/^5\d\d/.test(line)) status = '5.0.0';
    else if (/^4\d\d/.test(line)) status = '4.0.0';
    // RFC 3463: 4.4.1 no answer from host, 4.4.2 bad connection, 4.7.5 cryptographic failure.
    else if (/^ETLS/.test(line)) status = '4.7.5';
    // RFC 6531 section 3.7.4.2 / RFC 3463: non-ASCII address not permitted.
    else if (/^ESMTPUTF8/.test(line)) status = '5.6.7';
    else if (/^(ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH)/.test(line)) status = '4.4.1';
    else status = '4.4.2';
  }
  return { action, category: rule?.category ?? 'unknown', status };
}
