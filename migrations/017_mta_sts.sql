-- MTA-STS (RFC 8461) and the TLS of each delivery (issue 19).

-- A recipient domain's MTA-STS policy as last fetched, shared by every node: used until
-- expires_at (fetched_at + max_age), refreshed when the _mta-sts TXT id changes, and kept
-- when a refresh fails (RFC 8461 5.1). mx is a JSON array of the policy's mx patterns; policy
-- is its text (the lines TLS reports quote).
CREATE TABLE mta_sts_policies (
  domain     TEXT PRIMARY KEY,
  policy_id  TEXT NOT NULL,
  mode       TEXT NOT NULL CHECK (mode IN ('enforce', 'testing', 'none')),
  mx         TEXT NOT NULL,
  max_age    INTEGER NOT NULL,
  policy     TEXT NOT NULL,
  fetched_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);

-- The TLS of a recipient's last attempt, as JSON: {"version", "verified", "policy"} (policy:
-- none, opportunistic, mta-sts, dane, manual); NULL before any connection.
ALTER TABLE recipients ADD COLUMN last_tls TEXT;
