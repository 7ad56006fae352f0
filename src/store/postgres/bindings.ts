import type { Binding, BindingKind, BindingOwner } from '../bindings.js';
import type { BindingStore } from '../index.js';
import { dropsCache, type PgPolicyCache } from './cache.js';
import type { Pg } from './pg.js';
import { GEO_BINDINGS } from '../sql.js';

interface Row {
  kind: BindingKind;
  value: string;
  expires_at: number | null;
}

export class PgBindingRepo implements BindingStore {
  /** Every binding of a principal, lapsed ones too (filtered by time on each read); cached when there is a cache. */
  private readonly all: (key: string) => Promise<Row[]>;
  private readonly geo: (key: 0) => Promise<boolean>;

  constructor(
    private readonly db: Pg,
    cache?: PgPolicyCache,
  ) {
    const load = (key: string) => {
      const sep = key.indexOf(':');
      return this.db.q<Row>('SELECT kind, value, expires_at FROM bindings WHERE principal_kind = $1 AND principal_id = $2 ORDER BY kind, position', [key.slice(0, sep), Number(key.slice(sep + 1))]);
    };
    this.all = cache ? cache.table(load) : load;
    const geo = async () => ((await this.db.one<{ n: number }>(GEO_BINDINGS))?.n ?? 0) > 0;
    this.geo = cache ? cache.table(geo) : geo;
    dropsCache(this, cache, ['add', 'remove', 'removeAll', 'sweepLapsed']);
  }

  /** Whether any binding (lapsed or not yet swept ones too) names a country or an ASN; cached. */
  hasGeoBindings(): Promise<boolean> {
    return this.geo(0);
  }

  /** Bindings in force at `now` (lapsed exceptions excluded), in the order they were added. */
  async list(pk: BindingOwner, id: number, now: number, kind?: BindingKind): Promise<Binding[]> {
    return (await this.all(`${pk}:${id}`))
      .filter((r) => (!kind || r.kind === kind) && (r.expires_at === null || r.expires_at > now))
      .map((r) => ({ kind: r.kind, value: r.value, expiresAt: r.expires_at }));
  }

  async values(pk: BindingOwner, id: number, kind: BindingKind, now: number): Promise<string[]> {
    return (await this.list(pk, id, now, kind)).map((b) => b.value);
  }

  /** Adds or refreshes (a new expiry replaces the old one; permanent stays permanent). Returns true if new. */
  add(pk: BindingOwner, id: number, kind: BindingKind, value: string, now: number, expiresAt: number | null = null): Promise<boolean> {
    return this.db.tx(async () => {
      // One principal's bindings change one at a time, so positions stay in order of adding.
      await this.db.lock(`bindings ${pk}:${id}`);
      const existing = await this.db.one<{ expires_at: number | null }>(
        'SELECT expires_at FROM bindings WHERE principal_kind = $1 AND principal_id = $2 AND kind = $3 AND value = $4',
        [pk, id, kind, value],
      );
      if (existing) {
        if (existing.expires_at !== null) {
          await this.db.run('UPDATE bindings SET expires_at = $1 WHERE principal_kind = $2 AND principal_id = $3 AND kind = $4 AND value = $5', [expiresAt, pk, id, kind, value]);
        }
        return false;
      }
      await this.db.run(
        `INSERT INTO bindings (principal_kind, principal_id, kind, value, position, expires_at, created_at)
         VALUES ($1, $2, $3, $4, COALESCE((SELECT MAX(position) FROM bindings WHERE principal_kind = $1 AND principal_id = $2 AND kind = $3), -1) + 1, $5, $6)`,
        [pk, id, kind, value, expiresAt, now],
      );
      return true;
    });
  }

  async remove(pk: BindingOwner, id: number, kind: BindingKind, value: string): Promise<boolean> {
    return (await this.db.run('DELETE FROM bindings WHERE principal_kind = $1 AND principal_id = $2 AND kind = $3 AND value = $4', [pk, id, kind, value])) === 1;
  }

  async removeAll(pk: BindingOwner, id: number): Promise<void> {
    await this.db.run('DELETE FROM bindings WHERE principal_kind = $1 AND principal_id = $2', [pk, id]);
  }

  /** Deletes exceptions that have lapsed and returns them, so the caller can log and audit each. */
  async sweepLapsed(now: number): Promise<Array<{ pk: BindingOwner; id: number; kind: BindingKind; value: string; expiresAt: number }>> {
    const rows = await this.db.q<{ principal_kind: BindingOwner; principal_id: number; kind: BindingKind; value: string; expires_at: number }>(
      'DELETE FROM bindings WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING principal_kind, principal_id, kind, value, expires_at',
      [now],
    );
    return rows.map((r) => ({ pk: r.principal_kind, id: r.principal_id, kind: r.kind, value: r.value, expiresAt: r.expires_at }));
  }
}
