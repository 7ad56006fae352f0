/**
 * Retry schedule: initial, 2x, 4x, ... capped (5m, 10m, 20m, 40m, ... 4h by default), the
 * shape of Postfix's minimal/maximal_backoff_time. attempts is the number already made.
 */
export function retryDelayMs(attempts: number, initialMinutes: number, maxMinutes: number): number {
  const exp = Math.min(Math.max(attempts - 1, 0), 30);
  return Math.min(initialMinutes * 2 ** exp, maxMinutes) * 60_000;
}

/** A recipient still not final this long after arrival is given up (RFC 5321 4.5.4.1: 4-5 days). */
export function expired(receivedAt: number, now: number, maxQueueDays: number): boolean {
  return now - receivedAt >= maxQueueDays * 86_400_000;
}
