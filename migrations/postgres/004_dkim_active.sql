-- Staged DKIM rotation: NULL until `postern dkim activate` (see migrations/013_dkim_active.sql).
-- Existing keys count as activated when they were made, so the one that signed still signs.
ALTER TABLE dkim_keys ADD COLUMN activated_at bigint;
UPDATE dkim_keys SET activated_at = created_at;
