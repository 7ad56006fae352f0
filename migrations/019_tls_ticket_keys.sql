-- TLS session ticket keys (issue 20), shared by every worker and node so that a device
-- resumes its TLS session on whichever one it reaches. One key per rotation period:
-- starts_at is the period's start (ms since the epoch, a multiple of the rotation length);
-- the key issues tickets during its period and is still accepted during the next one, then
-- deleted. name (16 bytes) is written in every ticket it issues; secret (32 bytes) is the
-- HMAC-SHA256 key (16) followed by the AES-128 key (16). The first process to need a
-- period's key inserts it; every other one reads that row.
CREATE TABLE tls_ticket_keys (
  starts_at  INTEGER PRIMARY KEY,
  name       BLOB NOT NULL UNIQUE,
  secret     BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
