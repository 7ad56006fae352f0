import type { Db } from './db.js';
import type { PolicyCache } from './policy-cache.js';
import type { Device, PrincipalRef, UserStatus } from '../domain/types.js';
import { deleteWithPrincipal, newPrincipal } from './principals.js';

export interface Row {
  id: number;
  principal_ref: number;
  name: string;
  status: UserStatus;
  status_reason: string | null;
  suspended_at: number | null;
  require_tls: number;
  created_at: number;
  updated_at: number;
}

export const toDevice = (r: Row): Device => ({
  id: r.id,
  principalRef: r.principal_ref as PrincipalRef,
  name: r.name,
  status: r.status,
  statusReason: r.status_reason,
  suspendedAt: r.suspended_at,
  requireTls: r.require_tls === 1,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** A device of that name (in any letter case) exists: the same error from every engine. */
export class DeviceExistsError extends Error {
  override name = 'DeviceExistsError';
}

export class DeviceRepo {
  private readonly byIp;
  /** By id; cached (shared, frozen) when the store has a PolicyCache. */
  readonly get: (id: number) => Device | undefined;
  constructor(
    private readonly db: Db,
    cache?: PolicyCache,
  ) {
    const get = (id: number) => {
      const r = this.db.prepare<[number], Row>('SELECT * FROM devices WHERE id = ?').get(id);
      return r && toDevice(r);
    };
    this.get = cache ? cache.table(get) : get;
    // A device is found by its exact client address (stored as a /32 or /128 network binding).
    this.byIp = db.prepare<[string, number], Row>(
      `SELECT d.* FROM devices d JOIN bindings b ON b.principal_kind = 'device' AND b.principal_id = d.id
       WHERE b.kind = 'network' AND b.value = ? AND (b.expires_at IS NULL OR b.expires_at > ?) LIMIT 1`,
    );
  }

  find(name: string): Device | undefined {
    const r = this.db.prepare<[string], Row>('SELECT * FROM devices WHERE name = ?').get(name);
    return r && toDevice(r);
  }

  /** The device bound to this exact address ("192.0.2.7/32" form). */
  byAddress(network: string, now = Date.now()): Device | undefined {
    const r = this.byIp.get(network, now);
    return r && toDevice(r);
  }

  list(): Device[] {
    return this.db.prepare<[], Row>('SELECT * FROM devices ORDER BY name').all().map(toDevice);
  }

  /** A new device is a new principal, as a new user is. */
  add(name: string, requireTls: boolean, now: number): Device {
    try {
      return this.db.transaction(() => {
        const info = this.db
          .prepare('INSERT INTO devices (name, require_tls, created_at, updated_at, principal_ref) VALUES (?, ?, ?, ?, ?)')
          .run(name, requireTls ? 1 : 0, now, now, newPrincipal(this.db, 'device', name, now));
        return this.get(Number(info.lastInsertRowid))!;
      })();
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new DeviceExistsError(`device ${name} already exists`);
      throw e;
    }
  }

  suspend(id: number, reason: string, now: number): boolean {
    return (
      this.db
        .prepare(`UPDATE devices SET status = 'suspended', status_reason = ?, suspended_at = ?, updated_at = ? WHERE id = ? AND status = 'active'`)
        .run(reason, now, now, id).changes === 1
    );
  }

  unsuspend(id: number, now: number): boolean {
    return (
      this.db
        .prepare(`UPDATE devices SET status = 'active', status_reason = NULL, suspended_at = NULL, updated_at = ? WHERE id = ? AND status = 'suspended'`)
        .run(now, id).changes === 1
    );
  }

  delete(id: number, now: number): boolean {
    return deleteWithPrincipal(this.db, 'devices', id, now);
  }
}
