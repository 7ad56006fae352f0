-- Directory passwords (see migrations/016_directory_passwords.sql for why each is as it is).

CREATE TABLE secrets (
  name       text PRIMARY KEY,
  value      text NOT NULL,
  created_at bigint NOT NULL
);

CREATE TABLE compromised_passwords (
  fingerprint text PRIMARY KEY,
  account     text NOT NULL,
  user_id     bigint REFERENCES users (id) ON DELETE SET NULL,
  created_at  bigint NOT NULL
);
CREATE INDEX compromised_passwords_account ON compromised_passwords (lower(account));
CREATE INDEX compromised_passwords_user ON compromised_passwords (user_id);
