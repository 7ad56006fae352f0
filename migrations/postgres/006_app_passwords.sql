-- Bindings by country and by autonomous system, and app passwords with bindings of their own
-- (see migrations/015_app_passwords.sql for why each is as it is).

CREATE TABLE app_passwords (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  label         text NOT NULL,
  public_id     text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  created_at    bigint NOT NULL,
  last_used_at  bigint
);
CREATE UNIQUE INDEX app_passwords_label ON app_passwords (user_id, lower(label));

ALTER TABLE bindings DROP CONSTRAINT bindings_principal_kind_check;
ALTER TABLE bindings DROP CONSTRAINT bindings_kind_check;
ALTER TABLE bindings ADD CONSTRAINT bindings_principal_kind_check CHECK (principal_kind IN ('user', 'device', 'app-password'));
ALTER TABLE bindings ADD CONSTRAINT bindings_kind_check CHECK (kind IN ('network', 'sender', 'recipient', 'country', 'asn'));
ALTER TABLE bindings ADD CONSTRAINT bindings_country_check CHECK (kind <> 'country' OR value ~ '^[A-Z]{2}$');
ALTER TABLE bindings ADD CONSTRAINT bindings_asn_check CHECK (kind <> 'asn' OR value ~ '^(0|[1-9][0-9]{0,9})$');
ALTER TABLE bindings ADD CONSTRAINT bindings_app_password_check CHECK (principal_kind <> 'app-password' OR kind IN ('network', 'country', 'asn'));

-- An app password's bindings go with it, however it goes (revoked, with its user, by hand).
CREATE FUNCTION app_password_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM bindings WHERE principal_kind = 'app-password' AND principal_id = OLD.id;
  RETURN NULL;
END $$;
CREATE TRIGGER app_passwords_bindings AFTER DELETE ON app_passwords FOR EACH ROW EXECUTE FUNCTION app_password_gone();

-- Logins read app passwords through the policy cache; recording when one was last used
-- (last_used_at alone) is not a policy change and tells no node to drop its cache.
CREATE TRIGGER app_passwords_gen AFTER INSERT OR DELETE ON app_passwords FOR EACH STATEMENT EXECUTE FUNCTION policy_changed();
CREATE TRIGGER app_passwords_gen_u AFTER UPDATE OF user_id, label, public_id, password_hash, created_at ON app_passwords FOR EACH STATEMENT EXECUTE FUNCTION policy_changed();
