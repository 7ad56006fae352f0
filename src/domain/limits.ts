/** Rate-limit values shared by policy (which decides) and store (which records). */
export interface Limits {
  messagesPerHour: number;
  recipientsPerHour: number;
  recipientsPerDay: number;
}

export interface Usage {
  messagesHour: number;
  recipientsHour: number;
  recipientsDay: number;
  /** Time of the latest release, for pacing; null if none in the last day. */
  lastAt: number | null;
  /** Oldest usage within the hour window, to say when room frees up. */
  oldestHourAt: number | null;
}

export type QuotaDecision = { admit: true } | { admit: false; retryAt: number };

export const HOUR = 3_600_000;
export const DAY = 86_400_000;
