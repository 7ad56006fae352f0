-- Account binding and compromise response (issue 3).

ALTER TABLE users ADD COLUMN notify_address TEXT;
ALTER TABLE users ADD COLUMN suspended_at INTEGER;

-- Principals that cannot authenticate (printers, alarm panels): bound to exact client IPs.
CREATE TABLE devices (
  id            INTEGER PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
  status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  status_reason TEXT,
  suspended_at  INTEGER,
  require_tls   INTEGER NOT NULL DEFAULT 0,
  notify_address TEXT,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
);

-- What a principal may do. kind: 'network' (CIDR; for devices exact IPs as /32 or /128),
-- 'sender' (exact address or '@domain', stored in A-label lower case), 'recipient' (devices).
-- expires_at: a time-limited exception (user allow --for 7d); NULL = permanent.
CREATE TABLE bindings (
  principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'device')),
  principal_id   INTEGER NOT NULL,
  kind           TEXT NOT NULL CHECK (kind IN ('network', 'sender', 'recipient')),
  value          TEXT NOT NULL,
  position       INTEGER NOT NULL,
  expires_at     INTEGER,
  created_at     INTEGER NOT NULL,
  PRIMARY KEY (principal_kind, principal_id, kind, value)
);

CREATE TABLE incidents (
  id             INTEGER PRIMARY KEY,
  principal_kind TEXT NOT NULL,
  principal_id   INTEGER,
  principal_name TEXT NOT NULL,
  kind           TEXT NOT NULL,
  client_ip      TEXT,
  sender         TEXT,
  detail         TEXT,
  created_at     INTEGER NOT NULL,
  resolved_at    INTEGER,
  resolved_by    TEXT,
  notified       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX incidents_principal ON incidents (principal_kind, principal_name, created_at);

-- Every change made through the CLI: who, when, what, why.
CREATE TABLE audit (
  id         INTEGER PRIMARY KEY,
  at         INTEGER NOT NULL,
  actor      TEXT NOT NULL,
  action     TEXT NOT NULL,
  target     TEXT NOT NULL,
  detail     TEXT,
  reason     TEXT
);
CREATE INDEX audit_target ON audit (target, at);
