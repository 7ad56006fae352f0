import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Structured JSON lines. Every decision logs one event with a stable name (see
 * docs in README "Log events"). Secrets never reach here: the redact list is a backstop for
 * a mistake, not the mechanism.
 */
export function createLogger(level: string, destination?: DestinationStream, opts: { worker?: number } = {}): Logger {
  return pino(
    {
      level,
      // A worker's lines say which ([server] workers above 1); they share the primary's stdout.
      base: opts.worker === undefined ? { svc: 'postern' } : { svc: 'postern', worker: opts.worker },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['password', '*.password', 'passwordHash', '*.passwordHash', 'hash', '*.hash'], remove: true },
      formatters: { level: (label) => ({ level: label }) },
    },
    // Workers write each line with one write(2), so lines from several processes sharing
    // stdout (a pipe, journald's socket) never interleave mid-line.
    destination ?? pino.destination({ fd: 1, sync: opts.worker !== undefined }),
  );
}

/**
 * How every log event names the user or device it is about: `principal` is the plain name
 * and `principal_kind` says which ("user" | "device"), so `jq 'select(.principal=="alice")'`
 * finds all of them. Takes a principal, or the "user:alice" label listings and the spool use;
 * null (Postern's own notices) gives nulls.
 */
export function principalFields(p: { kind: string; name: string } | string | null | undefined): { principal: string | null; principal_kind: string | null } {
  if (p === null || p === undefined) return { principal: null, principal_kind: null };
  if (typeof p !== 'string') return { principal: p.name, principal_kind: p.kind };
  const colon = p.indexOf(':');
  return colon === -1 ? { principal: p, principal_kind: null } : { principal: p.slice(colon + 1), principal_kind: p.slice(0, colon) };
}
