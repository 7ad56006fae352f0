-- Quarantine (issue 5). A held message is a row of messages in state 'held' (house rule 5:
-- one spool, states not copies); these columns say why and since when.

-- Sum of the weights of the signals that fired, and the signals themselves as a JSON array
-- of {id, weight, detail?}. NULL for messages Postern wrote itself (notices, DSNs).
ALTER TABLE messages ADD COLUMN score REAL;
ALTER TABLE messages ADD COLUMN reasons TEXT;
-- When the message entered a non-queued state; retention is counted from here.
ALTER TABLE messages ADD COLUMN held_at INTEGER;
CREATE INDEX messages_held ON messages (state, held_at);

-- What became of each message an admin (or expiry) decided about. The message row itself is
-- gone once delivered or deleted, so without this a second "release" could only say "no such
-- message"; with it, it says who released it and when, and never queues it twice.
CREATE TABLE quarantine_decisions (
  message_id TEXT PRIMARY KEY,
  action     TEXT NOT NULL CHECK (action IN ('released', 'deleted', 'expired')),
  at         INTEGER NOT NULL,
  actor      TEXT NOT NULL,
  reason     TEXT
);

-- Recipient domains each principal ("user:alice") has sent to: the "first message to a new
-- domain" signal. Filled when a message is queued (directly, or on release).
CREATE TABLE principal_domains (
  principal TEXT NOT NULL,
  domain    TEXT NOT NULL,
  first_at  INTEGER NOT NULL,
  PRIMARY KEY (principal, domain)
) WITHOUT ROWID;
