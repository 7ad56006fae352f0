-- TLS reports (see migrations/018_tls_reports.sql for what each column is).

CREATE TABLE tls_report_counts (
  day           text NOT NULL,
  policy_domain text NOT NULL,
  policy_type   text NOT NULL,
  policy_string text NOT NULL,
  mx_host       text NOT NULL,
  result        text NOT NULL,
  sending_ip    text NOT NULL,
  receiving_ip  text NOT NULL,
  count         bigint NOT NULL
);
-- An MTA-STS policy may be up to 64 KB, more than a B-tree entry may hold: it is keyed by
-- its digest (the upsert names this same expression).
CREATE UNIQUE INDEX tls_report_counts_key ON tls_report_counts (day, policy_domain, policy_type, md5(policy_string), mx_host, result, sending_ip, receiving_ip);
