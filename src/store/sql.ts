/**
 * SQL that more than one repository or engine needs, written once. Fragments take the
 * messages row as `m`. Those marked "both engines" are plain SQL that SQLite and PostgreSQL
 * read alike; the rest are SQLite's dialect.
 */

/** A message's recipient addresses in envelope order, as a JSON array. */
export const RCPTS_JSON = `(SELECT json_group_array(address) FROM (SELECT address FROM recipients r WHERE r.message_id = m.id ORDER BY position))`;

/** How many recipients a message has. */
export const RCPT_COUNT = `(SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id)`;

/** Removes a message; its recipients and body go with it (ON DELETE CASCADE). */
export const DELETE_MESSAGE = 'DELETE FROM messages WHERE id = ?';

/**
 * The one statement that hands a message to delivery (a quarantine release, a quota drain):
 * queued, due now. Only from the state the caller saw (`state`): a message that moved
 * meanwhile (held after a suspension, deleted, already released) is left alone.
 */
export const PROMOTE = `UPDATE messages SET state = 'queued', next_attempt_at = ?, held_at = NULL WHERE id = ? AND state = ?`;

/** Both engines: principals with mail waiting for quota, active ones only (a suspended account's mail never drains). */
export const PRINCIPALS_WAITING = `SELECT p.id AS ref, p.kind, p.name FROM principals p
  WHERE EXISTS (SELECT 1 FROM messages m WHERE m.principal_ref = p.id AND m.state = 'waiting-quota')
    AND EXISTS (SELECT 1 FROM users u WHERE u.principal_ref = p.id AND u.status = 'active'
                UNION ALL SELECT 1 FROM devices d WHERE d.principal_ref = p.id AND d.status = 'active')
  ORDER BY p.id`;

/** Both engines: messages in the spool, and per state. */
export const MESSAGE_COUNT = 'SELECT COUNT(*) AS n FROM messages';
export const MESSAGES_BY_STATE = 'SELECT state, COUNT(*) AS n FROM messages GROUP BY state';

/** Both engines: messages in the spool by the node that accepted them, and state. */
export const MESSAGES_BY_NODE = 'SELECT accepted_by AS node, state, COUNT(*) AS n FROM messages GROUP BY accepted_by, state';

/** Both engines: the schema version applied. */
export const SCHEMA_VERSION = 'SELECT MAX(version) AS v FROM schema_migrations';

/** Both engines: how far the policy tables have moved (see the policy caches). */
export const POLICY_GENERATION = 'SELECT n FROM policy_generation WHERE id = 1';

/**
 * Both engines, given the engine's placeholder and text ordering: the key that signs for a
 * domain (the last activated; ties to the newer key, then the first selector).
 */
export const dkimSigning = (cols: string, param: string, textOrder: string) =>
  `SELECT ${cols} FROM dkim_keys WHERE domain = ${param} AND activated_at IS NOT NULL ORDER BY activated_at DESC, created_at DESC, selector${textOrder} LIMIT 1`;

/** Both engines: whether any binding names a country or an ASN (only then is the IP database loaded). */
export const GEO_BINDINGS = `SELECT COUNT(*) AS n FROM (SELECT 1 FROM bindings WHERE kind IN ('country', 'asn') LIMIT 1) g`;
