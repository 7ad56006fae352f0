-- Directory passwords (see migrations/016_directory_passwords.sql for why each is as it is).

CREATE TABLE secrets (
  name       text PRIMARY KEY,
  value      text NOT NULL,
  created_at bigint NOT NULL
);

CREATE TABLE compromised_passwords (
  user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  fingerprint text NOT NULL,
  created_at  bigint NOT NULL,
  PRIMARY KEY (user_id, fingerprint)
);
