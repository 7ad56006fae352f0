/**
 * SQL that more than one repository needs, written once. Fragments take the messages row as
 * `m`.
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
