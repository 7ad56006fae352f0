import type { Device, User } from '../../domain/types.js';
import { DeviceExistsError, toDevice, type Row as DeviceRow } from '../devices.js';
import type { DeviceStore, UserStore } from '../index.js';
import { toUser, UserExistsError, type UserRow } from '../users.js';
import { dropsCache, type PgPolicyCache } from './cache.js';
import type { Pg } from './pg.js';

const UNIQUE = '23505';
const isUnique = (e: unknown) => (e as { code?: string }).code === UNIQUE;

/** A new principal number (never reused), inside the caller's transaction. */
async function newPrincipal(db: Pg, kind: 'user' | 'device', name: string, now: number): Promise<number> {
  return (await db.one<{ id: number }>('INSERT INTO principals (kind, name, created_at) VALUES ($1, $2, $3) RETURNING id', [kind, name, now]))!.id;
}

/**
 * Adds a user or device as a new principal, in one transaction; a name taken (in any letter
 * case) is `exists`, the same error the SQLite engine throws.
 */
async function addWithPrincipal<R>(db: Pg, kind: 'user' | 'device', name: string, now: number, exists: Error, insert: (ref: number) => Promise<R | undefined>): Promise<R> {
  try {
    return await db.tx(async () => (await insert(await newPrincipal(db, kind, name, now)))!);
  } catch (e) {
    if (isUnique(e)) throw exists;
    throw e;
  }
}

/** Deletes a user or device and retires its principal (kept, marked deleted). */
async function deleteWithPrincipal(db: Pg, table: 'users' | 'devices', id: number, now: number): Promise<boolean> {
  return db.tx(async () => {
    const row = await db.one<{ principal_ref: number }>(`DELETE FROM ${table} WHERE id = $1 RETURNING principal_ref`, [id]);
    if (!row) return false;
    await db.run('UPDATE principals SET deleted_at = $1 WHERE id = $2', [now, row.principal_ref]);
    return true;
  });
}

export class PgUserRepo implements UserStore {
  /** By username; through the policy cache when there is one (shared, frozen rows). */
  readonly find: (username: string) => Promise<User | undefined>;
  /** By id, as find. */
  readonly get: (id: number) => Promise<User | undefined>;

  constructor(
    private readonly db: Pg,
    cache?: PgPolicyCache,
  ) {
    const find = async (username: string) => {
      const r = await this.db.one<UserRow>('SELECT * FROM users WHERE lower(username) = lower($1)', [username]);
      return r && toUser(r);
    };
    const get = async (id: number) => {
      const r = await this.db.one<UserRow>('SELECT * FROM users WHERE id = $1', [id]);
      return r && toUser(r);
    };
    this.find = cache ? cache.table(find) : find;
    this.get = cache ? cache.table(get) : get;
    dropsCache(this, cache, ['add', 'addMany', 'setPassword', 'rehash', 'suspend', 'unsuspend', 'setNotifyAddress', 'delete']);
  }


  async list(): Promise<User[]> {
    return (await this.db.q<UserRow>('SELECT * FROM users ORDER BY lower(username) COLLATE "C"')).map(toUser);
  }

  async add(username: string, passwordHash: string, now: number): Promise<User> {
    const r = await addWithPrincipal(this.db, 'user', username, now, new UserExistsError(`user ${username} already exists`), (ref) =>
      this.db.one<UserRow>(
        'INSERT INTO users (username, password_hash, created_at, updated_at, principal_ref) VALUES ($1, $2, $3, $3, $4) RETURNING *',
        [username, passwordHash, now, ref],
      ),
    );
    return toUser(r);
  }

  /** One statement for all (an import of a thousand users is not two thousand round trips). */
  async addMany(users: Array<{ username: string; passwordHash: string; notifyAddress: string | null }>, now: number): Promise<User[]> {
    if (!users.length) return [];
    let rows: UserRow[];
    try {
      rows = await this.db.q<UserRow>(
        `WITH p AS (INSERT INTO principals (kind, name, created_at) SELECT 'user', n, $4 FROM unnest($1::text[]) AS n RETURNING id, name)
         INSERT INTO users (username, password_hash, notify_address, created_at, updated_at, principal_ref)
         SELECT u.n, u.h, u.a, $4, $4, p.id FROM unnest($1::text[], $2::text[], $3::text[]) AS u(n, h, a) JOIN p ON p.name = u.n
         RETURNING *`,
        [users.map((u) => u.username), users.map((u) => u.passwordHash), users.map((u) => u.notifyAddress), now],
      );
    } catch (e) {
      // "Key (lower(username))=(alice) already exists."
      if (isUnique(e)) throw new UserExistsError(`user ${/\)=\((.*)\) already exists/.exec(String((e as { detail?: string }).detail))?.[1] ?? users[0]!.username} already exists`);
      throw e;
    }
    const byName = new Map(rows.map((r) => [r.username, toUser(r)]));
    return users.map((u) => byName.get(u.username)!);
  }

  async setPassword(id: number, passwordHash: string, now: number): Promise<void> {
    await this.db.run('UPDATE users SET password_hash = $1, auth_epoch = auth_epoch + 1, updated_at = $2 WHERE id = $3', [passwordHash, now, id]);
  }

  async rehash(id: number, passwordHash: string, now: number): Promise<void> {
    await this.db.run('UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3', [passwordHash, now, id]);
  }

  async suspend(id: number, reason: string, now: number): Promise<boolean> {
    return (
      (await this.db.run(
        `UPDATE users SET status = 'suspended', status_reason = $1, suspended_at = $2, auth_epoch = auth_epoch + 1, updated_at = $2
         WHERE id = $3 AND status = 'active'`,
        [reason, now, id],
      )) === 1
    );
  }

  async unsuspend(id: number, now: number): Promise<boolean> {
    return (
      (await this.db.run(
        `UPDATE users SET status = 'active', status_reason = NULL, suspended_at = NULL, auth_epoch = auth_epoch + 1, updated_at = $1
         WHERE id = $2 AND status = 'suspended'`,
        [now, id],
      )) === 1
    );
  }

  async setNotifyAddress(id: number, address: string | null, now: number): Promise<void> {
    await this.db.run('UPDATE users SET notify_address = $1, updated_at = $2 WHERE id = $3', [address, now, id]);
  }

  delete(id: number, now: number): Promise<boolean> {
    return deleteWithPrincipal(this.db, 'users', id, now);
  }
}

export class PgDeviceRepo implements DeviceStore {
  /** By id; through the policy cache when there is one. */
  readonly get: (id: number) => Promise<Device | undefined>;

  constructor(
    private readonly db: Pg,
    cache?: PgPolicyCache,
  ) {
    const get = async (id: number) => {
      const r = await this.db.one<DeviceRow>('SELECT * FROM devices WHERE id = $1', [id]);
      return r && toDevice(r);
    };
    this.get = cache ? cache.table(get) : get;
    dropsCache(this, cache, ['add', 'suspend', 'unsuspend', 'delete']);
  }


  async find(name: string): Promise<Device | undefined> {
    const r = await this.db.one<DeviceRow>('SELECT * FROM devices WHERE lower(name) = lower($1)', [name]);
    return r && toDevice(r);
  }

  /** The device bound to this exact address ("192.0.2.7/32" form). */
  async byAddress(network: string, now = Date.now()): Promise<Device | undefined> {
    const r = await this.db.one<DeviceRow>(
      `SELECT d.* FROM devices d JOIN bindings b ON b.principal_kind = 'device' AND b.principal_id = d.id
       WHERE b.kind = 'network' AND b.value = $1 AND (b.expires_at IS NULL OR b.expires_at > $2) LIMIT 1`,
      [network, now],
    );
    return r && toDevice(r);
  }

  async list(): Promise<Device[]> {
    return (await this.db.q<DeviceRow>('SELECT * FROM devices ORDER BY lower(name) COLLATE "C"')).map(toDevice);
  }

  async add(name: string, requireTls: boolean, now: number): Promise<Device> {
    const r = await addWithPrincipal(this.db, 'device', name, now, new DeviceExistsError(`device ${name} already exists`), (ref) =>
      this.db.one<DeviceRow>(
        'INSERT INTO devices (name, require_tls, created_at, updated_at, principal_ref) VALUES ($1, $2, $3, $3, $4) RETURNING *',
        [name, requireTls ? 1 : 0, now, ref],
      ),
    );
    return toDevice(r);
  }

  async suspend(id: number, reason: string, now: number): Promise<boolean> {
    return (
      (await this.db.run(`UPDATE devices SET status = 'suspended', status_reason = $1, suspended_at = $2, updated_at = $2 WHERE id = $3 AND status = 'active'`, [reason, now, id])) === 1
    );
  }

  async unsuspend(id: number, now: number): Promise<boolean> {
    return (
      (await this.db.run(`UPDATE devices SET status = 'active', status_reason = NULL, suspended_at = NULL, updated_at = $1 WHERE id = $2 AND status = 'suspended'`, [now, id])) === 1
    );
  }

  delete(id: number, now: number): Promise<boolean> {
    return deleteWithPrincipal(this.db, 'devices', id, now);
  }
}
