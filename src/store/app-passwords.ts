import type { Db } from './db.js';
import type { PolicyCache } from './policy-cache.js';

/**
 * A second secret of a user, one per device ("phone"): argon2id like the main password, found
 * at login by its public id (the part of the password that is not secret). Its own bindings
 * (owner 'app-password', id = this id) are network, country and ASN only.
 */
export interface AppPassword {
  id: number;
  userId: number;
  label: string;
  publicId: string;
  passwordHash: string;
  createdAt: number;
  /** Recorded at most once a minute (touch); as read through the policy cache it can be older than stored. */
  lastUsedAt: number | null;
}

export interface AppPasswordRow {
  id: number;
  user_id: number;
  label: string;
  public_id: string;
  password_hash: string;
  created_at: number;
  last_used_at: number | null;
}

export const toAppPassword = (r: AppPasswordRow): AppPassword => ({
  id: r.id,
  userId: r.user_id,
  label: r.label,
  publicId: r.public_id,
  passwordHash: r.password_hash,
  createdAt: r.created_at,
  lastUsedAt: r.last_used_at,
});

/** The user already has an app password of that label (in any letter case): the same error from every engine. */
export class AppPasswordExistsError extends Error {
  override name = 'AppPasswordExistsError';
}

/** How long a recorded use stands before touch records another (no write per login). */
export const TOUCH_EVERY_MS = 60_000;

export class AppPasswordRepo {
  /** By public id, as a login finds it; cached (shared, frozen) when the store has a PolicyCache. */
  readonly byPublicId: (publicId: string) => AppPassword | undefined;
  /** By id; cached as byPublicId. */
  readonly get: (id: number) => AppPassword | undefined;
  /** A user's, oldest first; cached as byPublicId. */
  readonly list: (userId: number) => AppPassword[];

  constructor(
    private readonly db: Db,
    cache?: PolicyCache,
  ) {
    const byPublicId = (publicId: string) => {
      const r = this.db.prepare<[string], AppPasswordRow>('SELECT * FROM app_passwords WHERE public_id = ?').get(publicId);
      return r && toAppPassword(r);
    };
    const get = (id: number) => {
      const r = this.db.prepare<[number], AppPasswordRow>('SELECT * FROM app_passwords WHERE id = ?').get(id);
      return r && toAppPassword(r);
    };
    const list = (userId: number) =>
      this.db.prepare<[number], AppPasswordRow>('SELECT * FROM app_passwords WHERE user_id = ? ORDER BY created_at, id').all(userId).map(toAppPassword);
    this.byPublicId = cache ? cache.table(byPublicId) : byPublicId;
    this.get = cache ? cache.table(get) : get;
    this.list = cache ? cache.table(list) : list;
  }

  /** The app passwords of several users at once (as list gives them), an entry for each id: one query, for `user list`. */
  listMany(userIds: number[]): Map<number, AppPassword[]> {
    const out = new Map<number, AppPassword[]>(userIds.map((id) => [id, []]));
    const rows = this.db
      .prepare<[string], AppPasswordRow>('SELECT * FROM app_passwords WHERE user_id IN (SELECT value FROM json_each(?)) ORDER BY user_id, created_at, id')
      .all(JSON.stringify(userIds));
    for (const r of rows) out.get(r.user_id)?.push(toAppPassword(r));
    return out;
  }

  add(userId: number, label: string, publicId: string, passwordHash: string, now: number): AppPassword {
    try {
      const r = this.db
        .prepare<[number, string, string, string, number], AppPasswordRow>(
          'INSERT INTO app_passwords (user_id, label, public_id, password_hash, created_at) VALUES (?, ?, ?, ?, ?) RETURNING *',
        )
        .get(userId, label, publicId, passwordHash, now)!;
      return toAppPassword(r);
    } catch (e) {
      // The label's index, not the public id's (a random id that collides is a plain error).
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && /app_passwords\.label/.test((e as Error).message)) {
        throw new AppPasswordExistsError(`app password ${label} already exists`);
      }
      throw e;
    }
  }

  /** Read as stored (not cached): what the CLI names by label. Any letter case. */
  find(userId: number, label: string): AppPassword | undefined {
    const r = this.db.prepare<[number, string], AppPasswordRow>('SELECT * FROM app_passwords WHERE user_id = ? AND label = ?').get(userId, label);
    return r && toAppPassword(r);
  }

  /**
   * Records a use, at most once per TOUCH_EVERY_MS (the check is in the statement, so callers
   * may call it on every login). Not a policy change: no cache anywhere is dropped for it.
   */
  touch(id: number, now: number): void {
    this.db
      .prepare('UPDATE app_passwords SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)')
      .run(now, id, now - TOUCH_EVERY_MS);
  }

  /**
   * Deletes one (its bindings go with it: migration 015's trigger) and bumps its user's
   * auth_epoch, so credentials cached by any process are checked afresh. False if none.
   */
  revoke(id: number, now: number): boolean {
    return this.db.transaction(() => {
      const r = this.db.prepare<[number], { user_id: number }>('DELETE FROM app_passwords WHERE id = ? RETURNING user_id').get(id);
      if (!r) return false;
      this.bumpEpoch(r.user_id, now);
      return true;
    })();
  }

  /** revoke for each of a user's app passwords, at once; how many there were. */
  revokeAll(userId: number, now: number): number {
    return this.db.transaction(() => {
      const n = this.db.prepare('DELETE FROM app_passwords WHERE user_id = ?').run(userId).changes;
      if (n > 0) this.bumpEpoch(userId, now);
      return n;
    })();
  }

  private bumpEpoch(userId: number, now: number): void {
    this.db.prepare('UPDATE users SET auth_epoch = auth_epoch + 1, updated_at = ? WHERE id = ?').run(now, userId);
  }
}
