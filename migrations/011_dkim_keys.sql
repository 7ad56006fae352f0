-- DKIM signing keys live in the store, so every node sharing it signs with the same keys.
-- Keys found in data_dir/dkim/<domain>/<selector>.key are imported on start (created_at is
-- the file's modification time, so the newest file still wins); `postern dkim keygen` writes
-- here. The private key is PKCS#8 PEM: whoever can read this database can sign as the domain,
-- as whoever could read the key file before.
CREATE TABLE dkim_keys (
  domain      TEXT NOT NULL,
  selector    TEXT NOT NULL,
  private_key TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (domain, selector)
) WITHOUT ROWID;
