-- How far a follower of the audit table has come (see migrations/014_log_cursors.sql).
CREATE TABLE log_cursors (
  name     text PRIMARY KEY,
  position bigint NOT NULL
);
