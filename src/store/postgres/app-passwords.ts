import { AppPasswordExistsError, toAppPassword, TOUCH_EVERY_MS, type AppPassword, type AppPasswordRow } from '../app-passwords.js';
import type { AppPasswordStore } from '../index.js';
import { dropsCache, type PgPolicyCache } from './cache.js';
import type { Pg } from './pg.js';

export class PgAppPasswordRepo implements AppPasswordStore {
  /** By public id, as a login finds it; through the policy cache when there is one. */
  readonly byPublicId: (publicId: string) => Promise<AppPassword | undefined>;
  /** By id; cached as byPublicId. */
  readonly get: (id: number) => Promise<AppPassword | undefined>;
  /** A user's, oldest first; cached as byPublicId. */
  readonly list: (userId: number) => Promise<AppPassword[]>;

  constructor(
    private readonly db: Pg,
    cache?: PgPolicyCache,
  ) {
    const byPublicId = async (publicId: string) => {
      const r = await this.db.one<AppPasswordRow>('SELECT * FROM app_passwords WHERE public_id = $1', [publicId]);
      return r && toAppPassword(r);
    };
    const get = async (id: number) => {
      const r = await this.db.one<AppPasswordRow>('SELECT * FROM app_passwords WHERE id = $1', [id]);
      return r && toAppPassword(r);
    };
    const list = async (userId: number) =>
      (await this.db.q<AppPasswordRow>('SELECT * FROM app_passwords WHERE user_id = $1 ORDER BY created_at, id', [userId])).map(toAppPassword);
    this.byPublicId = cache ? cache.table(byPublicId) : byPublicId;
    this.get = cache ? cache.table(get) : get;
    this.list = cache ? cache.table(list) : list;
    // touch is left out on purpose: a recorded use is not a policy change.
    dropsCache(this, cache, ['add', 'revoke', 'revokeAll']);
  }

  async listMany(userIds: number[]): Promise<Map<number, AppPassword[]>> {
    const out = new Map<number, AppPassword[]>(userIds.map((id) => [id, []]));
    if (!userIds.length) return out;
    const rows = await this.db.q<AppPasswordRow>('SELECT * FROM app_passwords WHERE user_id = ANY($1::bigint[]) ORDER BY user_id, created_at, id', [userIds]);
    for (const r of rows) out.get(r.user_id)?.push(toAppPassword(r));
    return out;
  }

  async add(userId: number, label: string, publicId: string, passwordHash: string, now: number): Promise<AppPassword> {
    try {
      const r = await this.db.one<AppPasswordRow>(
        'INSERT INTO app_passwords (user_id, label, public_id, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *',
        [userId, label, publicId, passwordHash, now],
      );
      return toAppPassword(r!);
    } catch (e) {
      const err = e as { code?: string; constraint?: string };
      if (err.code === '23505' && err.constraint === 'app_passwords_label') throw new AppPasswordExistsError(`app password ${label} already exists`);
      throw e;
    }
  }

  async find(userId: number, label: string): Promise<AppPassword | undefined> {
    const r = await this.db.one<AppPasswordRow>('SELECT * FROM app_passwords WHERE user_id = $1 AND lower(label) = lower($2)', [userId, label]);
    return r && toAppPassword(r);
  }

  async touch(id: number, now: number): Promise<void> {
    await this.db.run('UPDATE app_passwords SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)', [now, id, now - TOUCH_EVERY_MS]);
  }

  revoke(id: number, now: number): Promise<boolean> {
    return this.db.tx(async () => {
      const r = await this.db.one<{ user_id: number }>('DELETE FROM app_passwords WHERE id = $1 RETURNING user_id', [id]);
      if (!r) return false;
      await this.bumpEpoch(r.user_id, now);
      return true;
    });
  }

  revokeAll(userId: number, now: number): Promise<number> {
    return this.db.tx(async () => {
      const n = await this.db.run('DELETE FROM app_passwords WHERE user_id = $1', [userId]);
      if (n > 0) await this.bumpEpoch(userId, now);
      return n;
    });
  }

  private async bumpEpoch(userId: number, now: number): Promise<void> {
    await this.db.run('UPDATE users SET auth_epoch = auth_epoch + 1, updated_at = $1 WHERE id = $2', [now, userId]);
  }
}
