import type { Readable } from 'node:stream';
import type {
  SMTPServerAddress,
  SMTPServerAuthentication,
  SMTPServerAuthenticationResponse,
  SMTPServerDataStream,
  SMTPServerSession,
} from 'smtp-server';
import { REASONS } from '../domain/reasons.js';
import type { Logger } from '../obs/log.js';
import { normalizeIp } from '../policy/client.js';
import type { Decision } from '../submission/decision.js';
import { Submission, type EnvelopeArg, type SubmissionService, type Transaction } from '../submission/service.js';
import { reply } from './replies.js';

type Cb = (err?: Error | null, message?: string) => void;

/** What a session carries once authenticated (smtp-server's untyped session.user). */
export interface SessionUser {
  principal: NonNullable<Submission['principal']>;
}

/** SMTPUTF8 on this MAIL FROM (smtp-server keeps the parameters it accepted in args). */
function smtputf8(a: SMTPServerAddress | false | undefined): boolean {
  return Boolean(a && typeof a.args === 'object' && a.args && (a.args as Record<string, unknown>).SMTPUTF8 === true);
}

/**
 * The transaction as accepted so far. SMTPUTF8 is read from this transaction's MAIL FROM:
 * smtp-server's envelope flag outlives a refused MAIL, so a retry without the parameter would
 * inherit it.
 */
function transaction(session: SMTPServerSession): Transaction {
  const m = session.envelope.mailFrom;
  return { mailFrom: m ? { address: m.address, smtputf8: smtputf8(m) } : null, rcptTo: session.envelope.rcptTo.map((a) => a.address) };
}

/**
 * The smtp-server callbacks: a thin adapter. Each one asks the submission service for the
 * command's decision and turns it into a reply (replies.ts); none of them decides anything.
 */
export function createHandlers(service: SubmissionService, log: Logger) {
  const open = new Map<string, Submission>();

  function submission(session: SMTPServerSession): Submission {
    let s = open.get(session.id);
    if (!s) {
      s = new Submission({
        id: session.id,
        ip: normalizeIp(session.remoteAddress),
        secure: Boolean(session.secure),
        localIp: normalizeIp(session.localAddress),
        localPort: session.localPort,
        port: session.remotePort,
      });
      open.set(session.id, s);
    }
    // STARTTLS makes the same session secure.
    s.client.secure = Boolean(session.secure);
    return s;
  }

  /** Sends a decision as the command's reply; a failure to decide becomes 451 4.3.0, never a crash. */
  function answer(session: SMTPServerSession, cb: Cb, decide: () => Promise<Decision>, accepted: (d: Decision) => void = () => cb(), errorEvent = 'policy.error'): void {
    let decision: Promise<Decision>;
    try {
      decision = decide();
    } catch (e) {
      decision = Promise.reject(e);
    }
    decision.then(
      (d) => {
        if (d.verdict !== 'refuse') return accepted(d);
        const r = reply(d.reason, d.detail);
        const wait = d.notBefore === undefined ? 0 : d.notBefore - performance.now();
        if (wait > 0) setTimeout(() => cb(r), wait).unref();
        else cb(r);
      },
      (e: unknown) => {
        log.error({ event: errorEvent, session: session.id, ip: normalizeIp(session.remoteAddress), err: (e as Error).message });
        cb(reply(REASONS.LOCAL_ERROR));
      },
    );
  }

  const arg = (a: SMTPServerAddress, session: SMTPServerSession, command: 'mail' | 'rcpt'): EnvelopeArg => ({
    address: a.address,
    smtputf8: smtputf8(command === 'mail' ? a : session.envelope.mailFrom),
  });

  return {
    onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void) {
      answer(session, cb, () => service.connect(submission(session), session.remoteAddress));
    },

    onClose(session: SMTPServerSession) {
      const s = open.get(session.id);
      open.delete(session.id);
      if (s) service.close(s, session.remoteAddress);
    },

    onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, res?: SMTPServerAuthenticationResponse) => void) {
      const credentials = { method: auth.method, username: auth.username ?? '', password: auth.password ?? '', authzid: auth.authzid };
      answer(
        session,
        (err) => cb(err),
        () => service.login(submission(session), credentials),
        (d) => cb(null, { user: { principal: (d as { principal: SessionUser['principal'] }).principal } satisfies SessionUser }),
        'auth.error',
      );
    },

    onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: Cb) {
      answer(session, cb, () => service.mail(submission(session), arg(address, session, 'mail')));
    },

    onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: Cb) {
      answer(session, cb, () => service.rcpt(submission(session), arg(address, session, 'rcpt'), transaction(session)));
    },

    onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: Cb) {
      const chunks: Buffer[] = [];
      let size = 0;
      const limit = service.maxMessageBytes;
      stream.on('data', (c: Buffer) => {
        size += c.length;
        // Past the limit we keep reading (the client is still sending) but stop storing.
        if (size <= limit) chunks.push(c);
      });
      (stream as Readable).on('end', () => {
        const tls = session.tlsOptions ? `using ${session.tlsOptions.version} with cipher ${session.tlsOptions.name}` : null;
        answer(
          session,
          cb,
          () =>
            service.data(submission(session), {
              raw: size > limit ? Buffer.alloc(0) : Buffer.concat(chunks, size),
              size,
              tooBig: Boolean(stream.sizeExceeded),
              helo: session.hostNameAppearsAs,
              tls,
              transaction: transaction(session),
            }),
          (d) => cb(null, `2.0.0 Ok: queued as ${(d as { queueId: string }).queueId}`),
        );
      });
    },
  };
}
