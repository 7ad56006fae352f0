-- MTA-STS and the TLS of each delivery (see migrations/017_mta_sts.sql).

CREATE TABLE mta_sts_policies (
  domain     text PRIMARY KEY,
  policy_id  text NOT NULL,
  mode       text NOT NULL CHECK (mode IN ('enforce', 'testing', 'none')),
  mx         text NOT NULL,
  max_age    bigint NOT NULL,
  policy     text NOT NULL,
  fetched_at bigint NOT NULL,
  expires_at bigint NOT NULL
);

ALTER TABLE recipients ADD COLUMN last_tls text;
