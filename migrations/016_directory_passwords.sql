-- Directory passwords (issue 18, [auth] backend = "dovecot").

-- Store-wide secrets, made once by whichever process needs one first and then shared by
-- every process and node on this database: the key of the compromised-password fingerprints.
CREATE TABLE secrets (
  name       TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

-- The password a compromise signal caught a directory user with, as a keyed fingerprint
-- (HMAC-SHA256 under secrets 'password-fingerprint' of the directory account's name, in lower
-- case, and the password; never the password, never a hash an attacker could test guesses
-- against without the key). Postern cannot change a directory password, so it refuses this
-- one at login, even after the suspension is lifted, until the user has changed it in the
-- directory. Keyed by the account Dovecot named (its user=), not by the Postern user the
-- client's name found: another spelling of the name, a user deleted and added again, or one
-- provisioned anew meets the same refusal.
CREATE TABLE compromised_passwords (
  fingerprint TEXT PRIMARY KEY,
  account     TEXT NOT NULL COLLATE NOCASE,
  user_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
  created_at  INTEGER NOT NULL
);
CREATE INDEX compromised_passwords_account ON compromised_passwords (account);
CREATE INDEX compromised_passwords_user ON compromised_passwords (user_id);
