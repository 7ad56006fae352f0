import type { CredentialStore } from '../index.js';
import type { Pg } from './pg.js';

/** The fingerprints of compromised directory passwords and their key (see store/credentials.ts). */
export class PgCredentialRepo implements CredentialStore {
  constructor(private readonly db: Pg) {}

  async secret(name: string, fresh: string, now: number): Promise<string> {
    await this.db.run('INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING', [name, fresh, now]);
    return (await this.db.one<{ value: string }>('SELECT value FROM secrets WHERE name = $1', [name]))!.value;
  }

  async markCompromised(fingerprint: string, account: string, userId: number | null, now: number): Promise<boolean> {
    return (await this.db.run('INSERT INTO compromised_passwords (fingerprint, account, user_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [fingerprint, account, userId, now])) === 1;
  }

  async isCompromised(fingerprint: string): Promise<boolean> {
    return (await this.db.one('SELECT 1 AS n FROM compromised_passwords WHERE fingerprint = $1', [fingerprint])) !== undefined;
  }

  async countCompromised(userId: number, account: string): Promise<number> {
    return Number((await this.db.one<{ n: string }>('SELECT COUNT(*) AS n FROM compromised_passwords WHERE user_id = $1 OR lower(account) = lower($2)', [userId, account]))!.n);
  }

  async countCompromisedMany(userIds: number[]): Promise<Map<number, number>> {
    const out = new Map<number, number>(userIds.map((id) => [id, 0]));
    if (!userIds.length) return out;
    const rows = await this.db.q<{ id: number; n: number }>(
      `SELECT u.id, (SELECT COUNT(*) FROM compromised_passwords c WHERE c.user_id = u.id OR lower(c.account) = lower(u.username)) AS n
       FROM users u WHERE u.id = ANY($1::bigint[])`,
      [userIds],
    );
    for (const r of rows) out.set(r.id, Number(r.n));
    return out;
  }

  async forgetCompromised(userId: number, account: string): Promise<number> {
    return this.db.run('DELETE FROM compromised_passwords WHERE user_id = $1 OR lower(account) = lower($2)', [userId, account]);
  }
}
