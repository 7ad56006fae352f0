import type { Db } from './db.js';

/**
 * What Postern keeps about passwords it does not own (a directory's, through Dovecot): the
 * fingerprints of the ones a compromise signal caught, and the store-wide key they are made
 * with. Never a password and never a hash anyone could test guesses against without the key.
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
  markCompromised(userId: number, fingerprint: string, now: number): boolean {
    return this.db.prepare('INSERT INTO compromised_passwords (user_id, fingerprint, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(userId, fingerprint, now).changes === 1;
  }

  isCompromised(userId: number, fingerprint: string): boolean {
    return this.db.prepare<[number, string], { n: number }>('SELECT 1 AS n FROM compromised_passwords WHERE user_id = ? AND fingerprint = ?').get(userId, fingerprint) !== undefined;
  }

  /** How many of the user's passwords are known to be compromised. */
  countCompromised(userId: number): number {
    return this.db.prepare<[number], { n: number }>('SELECT COUNT(*) AS n FROM compromised_passwords WHERE user_id = ?').get(userId)!.n;
  }

  /** Forgets them all (the admin knows the user chose a new password): how many there were. */
  forgetCompromised(userId: number): number {
    return this.db.prepare('DELETE FROM compromised_passwords WHERE user_id = ?').run(userId).changes;
  }
}
