-- The node that accepted each message (see migrations/012_accepted_by.sql).
ALTER TABLE messages ADD COLUMN accepted_by text;
