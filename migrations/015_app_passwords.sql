-- Roaming users (issue 17): bindings by country and by autonomous system, and app passwords
-- with bindings of their own.

-- A second secret per device of a user ("phone", "laptop"): argon2id like the main password,
-- found at login by public_id (the part of the password that is not secret), revoked one by
-- one. A label names one app password of its user, in any letter case.
CREATE TABLE app_passwords (
  id            INTEGER PRIMARY KEY,
  user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  label         TEXT NOT NULL COLLATE NOCASE,
  public_id     TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  last_used_at  INTEGER
);
CREATE UNIQUE INDEX app_passwords_label ON app_passwords (user_id, label);

-- SQLite cannot change a CHECK: the table is built again with the new kinds and owners.
-- 'country' is an ISO 3166-1 alpha-2 code in upper case, 'asn' an AS number in decimal
-- (no "AS", no leading zero); checked here so that a value policy could never match is
-- refused when written, not ignored at every login. An app password's own bindings say
-- where it may log in from; what it may send as is always its user's.
CREATE TABLE bindings_new (
  principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'device', 'app-password')),
  principal_id   INTEGER NOT NULL,
  kind           TEXT NOT NULL CHECK (kind IN ('network', 'sender', 'recipient', 'country', 'asn')),
  value          TEXT NOT NULL,
  position       INTEGER NOT NULL,
  expires_at     INTEGER,
  created_at     INTEGER NOT NULL,
  PRIMARY KEY (principal_kind, principal_id, kind, value),
  CHECK (kind <> 'country' OR (length(value) = 2 AND value GLOB '[A-Z][A-Z]')),
  CHECK (kind <> 'asn' OR value = '0' OR (length(value) <= 10 AND value GLOB '[1-9]*' AND NOT value GLOB '*[^0-9]*')),
  CHECK (principal_kind <> 'app-password' OR kind IN ('network', 'country', 'asn'))
);
INSERT INTO bindings_new (principal_kind, principal_id, kind, value, position, expires_at, created_at)
  SELECT principal_kind, principal_id, kind, value, position, expires_at, created_at FROM bindings;
DROP TABLE bindings;
ALTER TABLE bindings_new RENAME TO bindings;
-- Dropped with the old table (migration 007); the policy cache must still see every change.
CREATE TRIGGER bindings_gen_i AFTER INSERT ON bindings BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER bindings_gen_u AFTER UPDATE ON bindings BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER bindings_gen_d AFTER DELETE ON bindings BEGIN UPDATE policy_generation SET n = n + 1; END;

-- An app password's bindings go with it, however it goes: revoked, or with its user (the
-- cascade above fires this too), or by an admin's own SQL.
CREATE TRIGGER app_passwords_bindings AFTER DELETE ON app_passwords
BEGIN DELETE FROM bindings WHERE principal_kind = 'app-password' AND principal_id = OLD.id; END;

-- Logins read app passwords through the policy cache. Recording when one was last used is not
-- a policy change: it must not empty every process's cache each minute.
CREATE TRIGGER app_passwords_gen_i AFTER INSERT ON app_passwords BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER app_passwords_gen_u AFTER UPDATE OF user_id, label, public_id, password_hash, created_at ON app_passwords BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER app_passwords_gen_d AFTER DELETE ON app_passwords BEGIN UPDATE policy_generation SET n = n + 1; END;
