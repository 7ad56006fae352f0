-- Users who submit mail with SMTP AUTH. Times are milliseconds since the Unix epoch.
CREATE TABLE users (
  id            INTEGER PRIMARY KEY,
  username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
  password_hash TEXT NOT NULL,
  status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  status_reason TEXT,
  -- Bumped on every change that must drop cached credentials (password, status, deletion).
  auth_epoch    INTEGER NOT NULL DEFAULT 0,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL
);

-- One row per message in the spool; the state says what may happen to it next.
CREATE TABLE messages (
  id              TEXT PRIMARY KEY,
  state           TEXT NOT NULL CHECK (state IN ('queued', 'held', 'waiting-quota')),
  mail_from       TEXT NOT NULL,
  principal       TEXT,
  client_ip       TEXT NOT NULL,
  size            INTEGER NOT NULL,
  received_at     INTEGER NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER
);
CREATE INDEX messages_state_next ON messages (state, next_attempt_at);

CREATE TABLE recipients (
  message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  position   INTEGER NOT NULL,
  address    TEXT NOT NULL,
  status     TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  last_error TEXT,
  PRIMARY KEY (message_id, position)
);

-- The message bytes, kept apart so listings never read them.
CREATE TABLE message_bodies (
  message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
  data       BLOB NOT NULL
);
