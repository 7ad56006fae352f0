-- TLS reports (issue 19, RFC 8460, [delivery] tls_reports).

-- Delivery sessions counted per UTC day and per what a report tells apart: the policy
-- applied (its type and its lines, '\n'-joined, '' for none), the MX host, the result
-- ('success' or an RFC 8460 result-type) and the addresses ('' when unknown). Every process
-- and node adds to the same rows (an upsert), and one node at a time (the lease
-- 'tls-reports') sends each finished day's rows of a policy domain and deletes them.
CREATE TABLE tls_report_counts (
  day           TEXT NOT NULL,
  policy_domain TEXT NOT NULL,
  policy_type   TEXT NOT NULL,
  policy_string TEXT NOT NULL,
  mx_host       TEXT NOT NULL,
  result        TEXT NOT NULL,
  sending_ip    TEXT NOT NULL,
  receiving_ip  TEXT NOT NULL,
  count         INTEGER NOT NULL,
  PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, result, sending_ip, receiving_ip)
) WITHOUT ROWID;
