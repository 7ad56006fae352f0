-- Rate limits (issue 4). The ledger is the source of truth for quota: one row per message
-- handed to delivery, so usage survives a restart and windows slide exactly.
CREATE TABLE quota_usage (
  principal  TEXT NOT NULL,
  at         INTEGER NOT NULL,
  messages   INTEGER NOT NULL,
  recipients INTEGER NOT NULL
);
CREATE INDEX quota_usage_principal_at ON quota_usage (principal, at);

-- Per-principal overrides of [limits]; NULL = the configured default.
CREATE TABLE principal_limits (
  principal           TEXT PRIMARY KEY,
  messages_per_hour   INTEGER,
  recipients_per_hour INTEGER,
  recipients_per_day  INTEGER,
  updated_at          INTEGER NOT NULL
);
