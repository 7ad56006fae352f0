/**
 * Rate-limit decisions (pure). A principal's mail is handed to delivery while its usage in
 * the sliding windows stays within its limits; beyond that it waits in the spool and is
 * released no faster than one message per (hour / messages_per_hour), so a burst drains at
 * the allowed rate instead of all at once when the window slides.
 */
import { HOUR, type Limits, type QuotaDecision, type Usage } from '../domain/limits.js';

export { DAY, HOUR, type Limits, type QuotaDecision, type Usage } from '../domain/limits.js';

/** May a message with `recipients` distinct recipients be handed to delivery now? */
export function decideQuota(limits: Limits, usage: Usage, recipients: number, now: number, paced: boolean): QuotaDecision {
  const fits =
    usage.messagesHour + 1 <= limits.messagesPerHour &&
    usage.recipientsHour + recipients <= limits.recipientsPerHour &&
    usage.recipientsDay + recipients <= limits.recipientsPerDay;
  const gap = HOUR / limits.messagesPerHour;
  const pacedOk = !paced || usage.lastAt === null || now - usage.lastAt >= gap;
  if (fits && pacedOk) return { admit: true };
  const windowFree = usage.oldestHourAt === null ? now : usage.oldestHourAt + HOUR;
  const paceFree = usage.lastAt === null ? now : usage.lastAt + gap;
  return { admit: false, retryAt: Math.max(fits ? now : windowFree, pacedOk ? now : paceFree) };
}

/**
 * Recipients count once per distinct mailbox: case-folded, and plus-addressed variants
 * (alice+x@ and alice+y@) are one mailbox, so a user cannot multiply quota with tags.
 */
export function distinctRecipients(rcpts: string[]): number {
  const seen = new Set<string>();
  for (const r of rcpts) {
    const at = r.lastIndexOf('@');
    const local = (at < 0 ? r : r.slice(0, at)).toLowerCase().replace(/\+.*$/, '');
    seen.add(`${local}@${at < 0 ? '' : r.slice(at + 1).toLowerCase()}`);
  }
  return seen.size;
}

/** Refuse new mail once this much waits for quota (default: one more window's worth). */
export function overCeiling(waitingMessages: number, ceiling: number): boolean {
  return waitingMessages >= ceiling;
}
