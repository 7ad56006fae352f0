import type { CredentialStore } from '../index.js';
import type { Pg } from './pg.js';

/** The fingerprints of compromised directory passwords and their key (see store/credentials.ts). */
export class PgCredentialRepo implements CredentialStore {
  constructor(private readonly db: Pg) {}

  async secret(name: string, fresh: string, now: number): Promise<string> {
    await this.db.run('INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING', [name, fresh, now]);
    return (await this.db.one<{ value: string }>('SELECT value FROM secrets WHERE name = $1', [name]))!.value;
  }

  async markCompromised(userId: number, fingerprint: string, now: number): Promise<boolean> {
    return (await this.db.run('INSERT INTO compromised_passwords (user_id, fingerprint, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [userId, fingerprint, now])) === 1;
  }

  async isCompromised(userId: number, fingerprint: string): Promise<boolean> {
    return (await this.db.one('SELECT 1 AS n FROM compromised_passwords WHERE user_id = $1 AND fingerprint = $2', [userId, fingerprint])) !== undefined;
  }

  async countCompromised(userId: number): Promise<number> {
    return Number((await this.db.one<{ n: string }>('SELECT COUNT(*) AS n FROM compromised_passwords WHERE user_id = $1', [userId]))!.n);
  }

  async forgetCompromised(userId: number): Promise<number> {
    return this.db.run('DELETE FROM compromised_passwords WHERE user_id = $1', [userId]);
  }
}
