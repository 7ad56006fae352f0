-- The node that accepted each message (its [server] node_id, else its host name), for
-- `postern queue list` and `postern stats` when several nodes share one database. NULL for
-- mail accepted before this migration. The node delivering a message is its claim_owner.
ALTER TABLE messages ADD COLUMN accepted_by TEXT;
