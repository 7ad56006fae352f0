-- A counter that any change to the tables policy reads on every SMTP command (users,
-- devices, bindings, limit overrides) moves forward, whichever process makes the change
-- (the server, the CLI, an admin's sqlite3). The server keeps those rows in memory and
-- reads only this one row per command: when it has moved, the memory is dropped.
CREATE TABLE policy_generation (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  n  INTEGER NOT NULL
);
INSERT INTO policy_generation (id, n) VALUES (1, 0);

CREATE TRIGGER users_gen_i AFTER INSERT ON users BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER users_gen_u AFTER UPDATE ON users BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER users_gen_d AFTER DELETE ON users BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER devices_gen_i AFTER INSERT ON devices BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER devices_gen_u AFTER UPDATE ON devices BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER devices_gen_d AFTER DELETE ON devices BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER bindings_gen_i AFTER INSERT ON bindings BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER bindings_gen_u AFTER UPDATE ON bindings BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER bindings_gen_d AFTER DELETE ON bindings BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER principal_limits_gen_i AFTER INSERT ON principal_limits BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER principal_limits_gen_u AFTER UPDATE ON principal_limits BEGIN UPDATE policy_generation SET n = n + 1; END;
CREATE TRIGGER principal_limits_gen_d AFTER DELETE ON principal_limits BEGIN UPDATE policy_generation SET n = n + 1; END;
