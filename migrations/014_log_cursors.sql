-- How far a follower of the audit table has come: the server logs each new audit entry (a
-- change made with the CLI on any node) as an admin.action event, once, on one node; the row
-- is moved forward by compare-and-set, so a node taking over goes on where the last one
-- stopped. position is the last audit id passed.
CREATE TABLE log_cursors (
  name     TEXT PRIMARY KEY,
  position INTEGER NOT NULL
);
