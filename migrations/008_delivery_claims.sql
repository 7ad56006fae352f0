-- Delivery claims: a process takes due messages by an atomic claim with an owner and an
-- expiry (a lease, renewed while it works), so two processes on one database never deliver
-- one message twice, and a claim whose owner died lapses and the message is taken over.
ALTER TABLE messages ADD COLUMN claim_owner TEXT;
ALTER TABLE messages ADD COLUMN claim_until INTEGER;
