import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Structured JSON lines. Every decision logs one event with a stable name (see
 * docs in README "Log events"). Secrets never reach here: the redact list is a backstop for
 * a mistake, not the mechanism.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'postern' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['password', '*.password', 'passwordHash', '*.passwordHash', 'hash', '*.hash'], remove: true },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
