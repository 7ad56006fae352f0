-- State that must hold across processes sharing the database, kept here instead of in each
-- process's memory.

-- The password-guessing brake: an attempt is a row from the moment it begins ("inflight",
-- with a lease so a dead process's attempts lapse) and stays one while it counts as a failure
-- ("failed", until the window ends). A counter that reached its limit is a lock.
CREATE TABLE auth_attempts (
  id       INTEGER PRIMARY KEY,
  key      TEXT NOT NULL,
  state    TEXT NOT NULL CHECK (state IN ('inflight', 'failed')),
  expires  INTEGER NOT NULL
);
CREATE INDEX auth_attempts_key ON auth_attempts (key, expires);
CREATE INDEX auth_attempts_expires ON auth_attempts (expires);
CREATE TABLE auth_locks (
  key    TEXT PRIMARY KEY,
  until  INTEGER NOT NULL
);

-- Named leases: "one at a time" (the waiting-mail drain) and "once per burst" (a held-mail
-- notice, a rate-limit incident) for every process at once. Taken atomically; a lease whose
-- holder died lapses at `until`.
CREATE TABLE leases (
  name   TEXT PRIMARY KEY,
  owner  TEXT NOT NULL,
  until  INTEGER NOT NULL
);
