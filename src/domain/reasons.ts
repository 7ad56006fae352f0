/**
 * The reason catalogue (house rule 1): every reply Postern composes comes from here, so the
 * log line's reason id and the client's reply can never drift apart. Texts never reveal
 * configuration or whether a username exists.
 */
export interface Reason {
  id: string;
  code: number;
  /** RFC 3463 enhanced status code. */
  enhanced: string;
  text: string;
}

function r(id: string, code: number, enhanced: string, text: string): Reason {
  return { id, code, enhanced, text };
}

export const REASONS = {
  TLS_REQUIRED: r('TLS_REQUIRED', 530, '5.7.0', 'Must issue a STARTTLS command first'),
  AUTH_REQUIRED: r('AUTH_REQUIRED', 530, '5.7.0', 'Authentication required'),
  // The same text for an unknown user and a wrong password (RFC 4954 section 6: 535 5.7.8).
  AUTH_INVALID: r('AUTH_INVALID', 535, '5.7.8', 'Authentication credentials invalid'),
  AUTH_SUSPENDED: r(
    'AUTH_SUSPENDED',
    535,
    '5.7.8',
    'Authentication credentials invalid: this account is suspended, please contact your helpdesk',
  ),
  // A correct password from outside the user's networks, or a user with none: the same
  // reply as a wrong password, so a thief learns nothing; only the log tells them apart.
  AUTH_FOREIGN_NETWORK: r('AUTH_FOREIGN_NETWORK', 535, '5.7.8', 'Authentication credentials invalid'),
  AUTH_NO_NETWORKS: r('AUTH_NO_NETWORKS', 535, '5.7.8', 'Authentication credentials invalid'),
  // RFC 4616 section 2: a PLAIN authorization identity other than the authentication identity
  // must fail unless that identity may act for the other; no Postern user may act for another.
  AUTH_AUTHZID: r('AUTH_AUTHZID', 535, '5.7.8', 'Authentication credentials invalid'),
  ACCOUNT_SUSPENDED: r('ACCOUNT_SUSPENDED', 550, '5.7.1', 'This account is suspended, please contact your helpdesk'),
  SENDER_NOT_BOUND: r('SENDER_NOT_BOUND', 553, '5.7.1', 'Sender address not allowed for this account'),
  SENDER_NULL: r('SENDER_NULL', 553, '5.7.1', 'The null sender <> cannot be used for submission, use your own address'),
  NO_SENDERS: r('NO_SENDERS', 553, '5.7.1', 'This account has no sender addresses and cannot send mail, please contact your helpdesk'),
  // RFC 3463 5.1.7 / 5.1.3: bad sender / destination mailbox syntax. An address that UTS46 or
  // NFKC would change (full-width letters, soft hyphens, a Kelvin sign) is refused, never
  // mapped: checked in one form and relayed in another, it names two mailboxes.
  SENDER_NOT_NORMAL: r('SENDER_NOT_NORMAL', 553, '5.1.7', 'Sender address is not in normal form: write it without full-width, invisible or compatibility characters'),
  RECIPIENT_NOT_NORMAL: r('RECIPIENT_NOT_NORMAL', 553, '5.1.3', 'Recipient address is not in normal form: write it without full-width, invisible or compatibility characters'),
  // RFC 6531 section 3.4 and RFC 3463 5.6.7: a non-ASCII mailbox needs SMTPUTF8 on MAIL FROM.
  NEEDS_SMTPUTF8: r('NEEDS_SMTPUTF8', 553, '5.6.7', 'A non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM'),
  RECIPIENT_NOT_BOUND: r('RECIPIENT_NOT_BOUND', 550, '5.7.1', 'Recipient address not allowed for this device'),
  AUTH_TEMPFAIL: r('AUTH_TEMPFAIL', 454, '4.7.0', 'Temporary authentication failure, try again later'),
  TOO_MANY_RECIPIENTS: r('TOO_MANY_RECIPIENTS', 452, '4.5.3', 'Too many recipients for one message'),
  MESSAGE_TOO_BIG: r('MESSAGE_TOO_BIG', 552, '5.3.4', 'Message size exceeds fixed maximum message size'),
  // RFC 5321 section 2.3.8: lines end in CRLF. Bare CR or LF is how SMTP smuggling splits
  // one submission into two messages at a receiver that ends DATA differently.
  BARE_NEWLINE: r(
    'BARE_NEWLINE',
    550,
    '5.6.0',
    'Message refused: bare CR or LF in message data, lines must end with CRLF',
  ),
  // RFC 3463 4.7.1: a temporary policy refusal; the client keeps the mail and retries.
  RATE_LIMITED: r('RATE_LIMITED', 451, '4.7.1', 'Too much mail from this account is waiting to be sent, please try again later'),
  AUTH_THROTTLED: r('AUTH_THROTTLED', 454, '4.7.0', 'Too many failed logins from this address, please try again later'),
  // Failures for one username from everywhere: counted alike for names that do not exist, so
  // the reply says nothing about which do; never given inside the user's own networks.
  AUTH_USER_THROTTLED: r('AUTH_USER_THROTTLED', 454, '4.7.0', 'Too many failed logins for this account, please try again later'),
  // RFC 5322 3.6: one From, at most one of Sender, Reply-To, To, Subject, ...; sender fields
  // that every reader reads the same way. The detail says which rule, so the user can fix it.
  HEADER_INVALID: r('HEADER_INVALID', 550, '5.6.0', 'Message refused: malformed header'),
  // RFC 2045 section 2.8 and RFC 6152: even 8-bit data never holds NUL (only BINARYMIME,
  // which Postern does not offer, would); C filters downstream treat it as end of string.
  NUL_IN_DATA: r('NUL_IN_DATA', 550, '5.6.0', 'Message refused: NUL character in message data'),
  // smtp-server ends these sessions itself with 421 4.4.2 ("bad connection"); the cause is the
  // client's input, so they carry 4.7.0 like Postfix's "421 4.7.0 Error: too many errors".
  LINE_TOO_LONG: r('LINE_TOO_LONG', 421, '4.7.0', 'Line too long, closing connection'),
  TOO_MANY_ERRORS: r('TOO_MANY_ERRORS', 421, '4.7.0', 'Too many errors, closing connection'),
  NOT_SMTP: r('NOT_SMTP', 421, '4.7.0', 'HTTP requests not allowed, closing connection'),
  TOO_MANY_CONNECTIONS: r('TOO_MANY_CONNECTIONS', 421, '4.7.0', 'Too many connections from this address, please try again later'),
  // [server] max_clients, over every listener (and every worker) of the node.
  TOO_MANY_CLIENTS: r('TOO_MANY_CLIENTS', 421, '4.3.2', 'Too many connected clients, please try again later'),
  LOCAL_ERROR: r('LOCAL_ERROR', 451, '4.3.0', 'Temporary local problem, please try again later'),
  // RFC 3463 4.3.1 mail system full: said at MAIL FROM, before the client sends the data
  // (Postfix: "452 4.3.1 Insufficient system storage").
  SPOOL_FULL: r('SPOOL_FULL', 452, '4.3.1', 'Insufficient system storage, please try again later'),
  SHUTTING_DOWN: r('SHUTTING_DOWN', 421, '4.3.2', 'Service shutting down, please try again later'),
  // The session's login no longer stands (new password, reset, app password revoked): the
  // client must connect and log in again, with what it has now.
  CREDENTIALS_CHANGED: r('CREDENTIALS_CHANGED', 421, '4.7.0', 'The credentials of this account changed, please log in again'),
  // PROXY protocol: a header from an untrusted peer, none from a trusted proxy, or a
  // malformed one. The text says nothing of which, so a prober learns nothing about the setup.
  PROXY_REFUSED: r('PROXY_REFUSED', 421, '4.7.0', 'Connection refused, closing connection'),
} as const satisfies Record<string, Reason>;

export type ReasonId = keyof typeof REASONS;
