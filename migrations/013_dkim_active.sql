-- Staged DKIM rotation: `postern dkim keygen` makes a key that signs nothing until
-- `postern dkim activate` switches to it (after checking its DNS record is published). The
-- key of a domain activated last signs; older ones stay for a rollback (activate them again).
-- NULL: never activated. Existing keys all count as activated when they were made, so the
-- key that signed before this migration (the newest) is the one that signs after it.
ALTER TABLE dkim_keys ADD COLUMN activated_at INTEGER;
UPDATE dkim_keys SET activated_at = created_at;
