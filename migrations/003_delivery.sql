-- Outbound delivery (issue 6). Per-recipient progress lives on the recipient row so that a
-- restart (even after kill -9) resumes from the database alone: nothing about an attempt is
-- kept only in memory.

ALTER TABLE recipients ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recipients ADD COLUMN last_attempt_at INTEGER;
-- "dns; mx.example.net" style name of the host that gave the last answer (RFC 3464 Remote-MTA).
ALTER TABLE recipients ADD COLUMN remote_mta TEXT;
-- RFC 3463 status of the last outcome, e.g. 5.1.1 or 4.4.7 (expired).
ALTER TABLE recipients ADD COLUMN status_code TEXT;
-- A failed recipient is reported once: 0 until its DSN is in the spool (or no DSN is due).
ALTER TABLE recipients ADD COLUMN dsn_done INTEGER NOT NULL DEFAULT 0;

-- Final remote verdicts per principal, the raw material of the rejection rate
-- (reputation feedback: a compromised account shows up as a burst of remote 5xx).
CREATE TABLE delivery_outcomes (
  principal TEXT NOT NULL,
  at        INTEGER NOT NULL,
  rejected  INTEGER NOT NULL CHECK (rejected IN (0, 1))
);
CREATE INDEX delivery_outcomes_principal ON delivery_outcomes (principal, at);
