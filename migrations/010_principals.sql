-- One numeric identity per user or device, never reused (AUTOINCREMENT): quota usage, domain
-- history, delivery outcomes, limit overrides, spool rows and incidents refer to it instead of
-- the "user:alice" string. A user deleted and added again under the same name is a new
-- principal and starts with none of the old one's state. Deleted principals stay (deleted_at)
-- so that mail and incidents they left still name who submitted them.
CREATE TABLE principals (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  kind       TEXT NOT NULL CHECK (kind IN ('user', 'device')),
  name       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  deleted_at INTEGER
);
CREATE UNIQUE INDEX principals_live ON principals (kind, name COLLATE NOCASE) WHERE deleted_at IS NULL;

INSERT INTO principals (kind, name, created_at) SELECT 'user', username, created_at FROM users ORDER BY id;
INSERT INTO principals (kind, name, created_at) SELECT 'device', name, created_at FROM devices ORDER BY id;
-- Principals that only old rows still name (deleted before this migration): kept as deleted.
INSERT INTO principals (kind, name, created_at, deleted_at)
  SELECT DISTINCT substr(p, 1, instr(p, ':') - 1), substr(p, instr(p, ':') + 1), 0, 0
  FROM (SELECT principal AS p FROM messages UNION SELECT principal FROM delivery_outcomes
        UNION SELECT principal FROM quota_buckets UNION SELECT principal FROM principal_domains
        UNION SELECT principal FROM principal_limits UNION SELECT principal FROM quota_last
        UNION SELECT principal_kind || ':' || principal_name FROM incidents)
  WHERE (p LIKE 'user:%' OR p LIKE 'device:%') AND p NOT IN (SELECT kind || ':' || name FROM principals);

ALTER TABLE users ADD COLUMN principal_ref INTEGER REFERENCES principals (id);
UPDATE users SET principal_ref = (SELECT id FROM principals p WHERE p.kind = 'user' AND p.name = users.username AND p.deleted_at IS NULL);
CREATE UNIQUE INDEX users_principal ON users (principal_ref);
ALTER TABLE devices ADD COLUMN principal_ref INTEGER REFERENCES principals (id);
UPDATE devices SET principal_ref = (SELECT id FROM principals p WHERE p.kind = 'device' AND p.name = devices.name AND p.deleted_at IS NULL);
CREATE UNIQUE INDEX devices_principal ON devices (principal_ref);

-- The old key's principal: the live one of that name, else the deleted one kept above.
CREATE TEMP VIEW principal_keys AS
  SELECT kind || ':' || name AS k, id FROM principals p
  WHERE deleted_at IS NULL OR NOT EXISTS (SELECT 1 FROM principals q WHERE q.kind = p.kind AND q.name = p.name AND q.deleted_at IS NULL);

ALTER TABLE messages ADD COLUMN principal_ref INTEGER REFERENCES principals (id);
UPDATE messages SET principal_ref = (SELECT id FROM principal_keys WHERE k = messages.principal);
ALTER TABLE messages DROP COLUMN principal;

CREATE TABLE delivery_outcomes_new (
  principal_ref INTEGER NOT NULL,
  at            INTEGER NOT NULL,
  rejected      INTEGER NOT NULL CHECK (rejected IN (0, 1))
);
INSERT INTO delivery_outcomes_new SELECT k.id, o.at, o.rejected FROM delivery_outcomes o JOIN principal_keys k ON k.k = o.principal;
DROP TABLE delivery_outcomes;
ALTER TABLE delivery_outcomes_new RENAME TO delivery_outcomes;
CREATE INDEX delivery_outcomes_principal ON delivery_outcomes (principal_ref, at);

CREATE TABLE quota_buckets_new (
  principal_ref INTEGER NOT NULL,
  minute        INTEGER NOT NULL,  -- floor(ms / 60000)
  messages      INTEGER NOT NULL,
  recipients    INTEGER NOT NULL,
  PRIMARY KEY (principal_ref, minute)
) WITHOUT ROWID;
INSERT INTO quota_buckets_new SELECT k.id, b.minute, b.messages, b.recipients FROM quota_buckets b JOIN principal_keys k ON k.k = b.principal;
DROP TABLE quota_buckets;
ALTER TABLE quota_buckets_new RENAME TO quota_buckets;

CREATE TABLE quota_last_new (
  principal_ref INTEGER PRIMARY KEY,
  at            INTEGER NOT NULL
);
INSERT INTO quota_last_new SELECT k.id, l.at FROM quota_last l JOIN principal_keys k ON k.k = l.principal;
DROP TABLE quota_last;
ALTER TABLE quota_last_new RENAME TO quota_last;

CREATE TABLE principal_limits_new (
  principal_ref       INTEGER PRIMARY KEY REFERENCES principals (id),
  messages_per_hour   INTEGER,
  recipients_per_hour INTEGER,
  recipients_per_day  INTEGER,
  updated_at          INTEGER NOT NULL
);
INSERT INTO principal_limits_new SELECT k.id, l.messages_per_hour, l.recipients_per_hour, l.recipients_per_day, l.updated_at
  FROM principal_limits l JOIN principal_keys k ON k.k = l.principal;
DROP TABLE principal_limits;
ALTER TABLE principal_limits_new RENAME TO principal_limits;
-- Dropped with the old table; the policy cache must still see every change.
CREATE TRIGGER principal_limits_gen_i AFTER INSERT ON principal_limits BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER principal_limits_gen_u AFTER UPDATE ON principal_limits BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER principal_limits_gen_d AFTER DELETE ON principal_limits BEGIN UPDATE policy_generation SET n = n + 1; END;

CREATE TABLE principal_domains_new (
  principal_ref INTEGER NOT NULL,
  domain        TEXT NOT NULL,
  first_at      INTEGER NOT NULL,
  PRIMARY KEY (principal_ref, domain)
) WITHOUT ROWID;
INSERT INTO principal_domains_new SELECT k.id, d.domain, d.first_at FROM principal_domains d JOIN principal_keys k ON k.k = d.principal;
DROP TABLE principal_domains;
ALTER TABLE principal_domains_new RENAME TO principal_domains;

ALTER TABLE incidents ADD COLUMN principal_ref INTEGER REFERENCES principals (id);
UPDATE incidents SET principal_ref = (SELECT id FROM principal_keys WHERE k = incidents.principal_kind || ':' || incidents.principal_name);
CREATE INDEX incidents_principal_ref ON incidents (principal_ref, resolved_at);

DROP VIEW principal_keys;
