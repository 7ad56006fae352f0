import type { Db } from './db.js';

/**
 * What Postern keeps about passwords it does not own (a directory's, through Dovecot): the
 * fingerprints of the ones a compromise signal caught, and the store-wide key they are made
 * with. Never a password and never a hash anyone could test guesses against without the key.
 * A fingerprint belongs to a directory account (Dovecot's name for the user) and names the
 * Postern user it was caught on, while that user exists.
 */
export class CredentialRepo {
  constructor(private readonly db: Db) {}

  /**
   * The store-wide secret `name`: the one stored, or `fresh`, stored now, when this is the
   * first process to ask (every process and node then uses the same one).
   */
  secret(name: string, fresh: string, now: number): string {
    this.db.prepare('INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING').run(name, fresh, now);
    return this.db.prepare<[string], { value: string }>('SELECT value FROM secrets WHERE name = ?').get(name)!.value;
  }

  /** Records a compromised password's fingerprint; false if it was already recorded. */
  markCompromised(fingerprint: string, account: string, userId: number | null, now: number): boolean {
    return this.db.prepare('INSERT INTO compromised_passwords (fingerprint, account, user_id, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING').run(fingerprint, account, userId, now).changes === 1;
  }

  isCompromised(fingerprint: string): boolean {
    return this.db.prepare<[string], { n: number }>('SELECT 1 AS n FROM compromised_passwords WHERE fingerprint = ?').get(fingerprint) !== undefined;
  }

  /** How many passwords caught on this user, or of the directory account of its name, are recorded. */
  countCompromised(userId: number, account: string): number {
    return this.db.prepare<[number, string], { n: number }>('SELECT COUNT(*) AS n FROM compromised_passwords WHERE user_id = ? OR account = ?').get(userId, account)!.n;
  }

  /** countCompromised for several users at once (each with its own name as the account), an entry for each id: one query, for `user list`. */
  countCompromisedMany(userIds: number[]): Map<number, number> {
    const out = new Map<number, number>(userIds.map((id) => [id, 0]));
    const rows = this.db
      .prepare<[string], { id: number; n: number }>(
        `SELECT u.id, (SELECT COUNT(*) FROM compromised_passwords c WHERE c.user_id = u.id OR c.account = u.username) AS n
         FROM users u WHERE u.id IN (SELECT value FROM json_each(?))`,
      )
      .all(JSON.stringify(userIds));
    for (const r of rows) out.set(r.id, r.n);
    return out;
  }

  /** Forgets them (a false alarm, or the admin knows the password was changed): how many there were. */
  forgetCompromised(userId: number, account: string): number {
    return this.db.prepare('DELETE FROM compromised_passwords WHERE user_id = ? OR account = ?').run(userId, account).changes;
  }
}
