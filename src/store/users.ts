import type { Db } from './db.js';
import type { PolicyCache } from './policy-cache.js';
import type { PrincipalRef, User, UserStatus } from '../domain/types.js';
import { deleteWithPrincipal, newPrincipal } from './principals.js';

export interface UserRow {
  id: number;
  principal_ref: number;
  username: string;
  password_hash: string;
  status: UserStatus;
  status_reason: string | null;
  auth_epoch: number;
  notify_address: string | null;
  suspended_at: number | null;
  created_at: number;
  updated_at: number;
}

export function toUser(row: UserRow): User {
  return {
    id: row.id,
    principalRef: row.principal_ref as PrincipalRef,
    username: row.username,
    passwordHash: row.password_hash,
    status: row.status,
    statusReason: row.status_reason,
    authEpoch: row.auth_epoch,
    notifyAddress: row.notify_address,
    suspendedAt: row.suspended_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export class UserExistsError extends Error {
  override name = 'UserExistsError';
}

export class UserRepo {
  /** By username; cached (shared, frozen) when the store has a PolicyCache. */
  readonly find: (username: string) => User | undefined;
  /** By id, as find. */
  readonly get: (id: number) => User | undefined;
  constructor(
    private readonly db: Db,
    cache?: PolicyCache,
  ) {
    const byName = db.prepare<[string], UserRow>('SELECT * FROM users WHERE username = ?');
    const byId = db.prepare<[number], UserRow>('SELECT * FROM users WHERE id = ?');
    const find = (username: string) => {
      const row = byName.get(username);
      return row && toUser(row);
    };
    const get = (id: number) => {
      const row = byId.get(id);
      return row && toUser(row);
    };
    this.find = cache ? cache.table(find) : find;
    this.get = cache ? cache.table(get) : get;
  }

  list(): User[] {
    return this.db.prepare<[], UserRow>('SELECT * FROM users ORDER BY username').all().map(toUser);
  }

  /** A new user is a new principal: nothing of an earlier user of the same name carries over. */
  add(username: string, passwordHash: string, now: number): User {
    try {
      return this.db.transaction(() => {
        const info = this.db
          .prepare('INSERT INTO users (username, password_hash, created_at, updated_at, principal_ref) VALUES (?, ?, ?, ?, ?)')
          .run(username, passwordHash, now, now, newPrincipal(this.db, 'user', username, now));
        return this.get(Number(info.lastInsertRowid))!;
      })();
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new UserExistsError(`user ${username} already exists`);
      }
      throw e;
    }
  }

  /**
   * Adds several users, each a new principal, all or none (a name taken: UserExistsError);
   * returned in the order given. For `user import`: PostgreSQL does it in one statement.
   */
  addMany(users: Array<{ username: string; passwordHash: string; notifyAddress: string | null }>, now: number): User[] {
    return this.db.transaction(() =>
      users.map((n) => {
        const u = this.add(n.username, n.passwordHash, now);
        if (n.notifyAddress === null) return u;
        this.setNotifyAddress(u.id, n.notifyAddress, now);
        return this.get(u.id)!;
      }),
    )();
  }

  /** A new password: cached credentials for the user are dropped via the epoch. */
  setPassword(id: number, passwordHash: string, now: number): void {
    this.db
      .prepare('UPDATE users SET password_hash = ?, auth_epoch = auth_epoch + 1, updated_at = ? WHERE id = ?')
      .run(passwordHash, now, id);
  }

  /** Same password, stronger parameters: the cache stays valid. */
  rehash(id: number, passwordHash: string, now: number): void {
    this.db.prepare('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?').run(passwordHash, now, id);
  }

  /** Suspends SMTP auth; the epoch bump drops cached credentials in every process. */
  suspend(id: number, reason: string, now: number): boolean {
    return (
      this.db
        .prepare(
          `UPDATE users SET status = 'suspended', status_reason = ?, suspended_at = ?, auth_epoch = auth_epoch + 1, updated_at = ?
           WHERE id = ? AND status = 'active'`,
        )
        .run(reason, now, now, id).changes === 1
    );
  }

  unsuspend(id: number, now: number): boolean {
    return (
      this.db
        .prepare(
          `UPDATE users SET status = 'active', status_reason = NULL, suspended_at = NULL, auth_epoch = auth_epoch + 1, updated_at = ?
           WHERE id = ? AND status = 'suspended'`,
        )
        .run(now, id).changes === 1
    );
  }

  setNotifyAddress(id: number, address: string | null, now: number): void {
    this.db.prepare('UPDATE users SET notify_address = ?, updated_at = ? WHERE id = ?').run(address, now, id);
  }

  delete(id: number, now: number): boolean {
    return deleteWithPrincipal(this.db, 'users', id, now);
  }
}
