-- The quota ledger kept one row per message, so every decision summed a day of rows: O(n)
-- per message for a busy sender. Usage now lives in one-minute buckets (at most 1,440 rows
-- per principal per day) plus the time of the last release, for pacing.
DROP TABLE quota_usage;
CREATE TABLE quota_buckets (
  principal  TEXT NOT NULL,
  minute     INTEGER NOT NULL,  -- floor(ms / 60000)
  messages   INTEGER NOT NULL,
  recipients INTEGER NOT NULL,
  PRIMARY KEY (principal, minute)
) WITHOUT ROWID;
CREATE TABLE quota_last (
  principal TEXT PRIMARY KEY,
  at        INTEGER NOT NULL
) WITHOUT ROWID;
