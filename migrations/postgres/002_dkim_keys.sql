-- DKIM signing keys, shared by every node (see migrations/011_dkim_keys.sql).
CREATE TABLE dkim_keys (
  domain      text NOT NULL,
  selector    text NOT NULL,
  private_key text NOT NULL,
  created_at  bigint NOT NULL,
  PRIMARY KEY (domain, selector)
);
