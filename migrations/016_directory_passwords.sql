-- Directory passwords (issue 18, [auth] backend = "dovecot").

-- Store-wide secrets, made once by whichever process needs one first and then shared by
-- every process and node on this database: the key of the compromised-password fingerprints.
CREATE TABLE secrets (
  name       TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

-- The password a compromise signal caught a directory user with, as a keyed fingerprint
-- (HMAC-SHA256 under secrets 'password-fingerprint' of the user's principal number and the
-- password; never the password, never a hash an attacker could test guesses against without
-- the key). Postern cannot change a directory password, so it refuses this one at login, even
-- after the suspension is lifted, until the user has changed it in the directory.
CREATE TABLE compromised_passwords (
  user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  fingerprint TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (user_id, fingerprint)
);
