-- TLS session ticket keys (see migrations/019_tls_ticket_keys.sql for what each column is).
CREATE TABLE tls_ticket_keys (
  starts_at  bigint PRIMARY KEY,
  name       bytea NOT NULL UNIQUE,
  secret     bytea NOT NULL,
  created_at bigint NOT NULL
);
