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
    dropsCache(this, cache, ['add', 'setPermanent', 'remove', 'removeAll', 'sweepLapsed']);
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

  /** In one query: reading a thousand users' bindings one by one costs a round trip each. */
  async listMany(pk: BindingOwner, ids: number[], now: number): Promise<Map<number, Binding[]>> {
    const out = new Map<number, Binding[]>(ids.map((id) => [id, []]));
    if (!ids.length) return out;
    const rows = await this.db.q<Row & { principal_id: number }>(
      `SELECT principal_id, kind, value, expires_at FROM bindings
       WHERE principal_kind = $1 AND principal_id = ANY($2::bigint[]) AND (expires_at IS NULL OR expires_at > $3) ORDER BY principal_id, kind, position`,
      [pk, ids, now],
    );
    for (const r of rows) out.get(r.principal_id)?.push({ kind: r.kind, value: r.value, expiresAt: r.expires_at });
    return out;
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

  /** As the SQLite engine's, in one statement after the principals' locks (taken in one order). */
  setPermanent(pk: BindingOwner, sets: Array<{ id: number; kind: BindingKind; values: string[] }>, now: number): Promise<void> {
    if (!sets.length) return Promise.resolve();
    const want = sets.flatMap((s) => [...new Set(s.values)].map((value) => ({ id: s.id, kind: s.kind, value })));
    return this.db.tx(async () => {
      const ids = [...new Set(sets.map((s) => s.id))].sort((a, b) => a - b);
      await this.db.q('SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest($1::text[]) WITH ORDINALITY AS l(k, n) ORDER BY n', [ids.map((id) => `bindings ${pk}:${id}`)]);
      await this.db.run(
        `WITH want AS (SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS w(id, kind, value, n)),
         gone AS (
           DELETE FROM bindings b USING unnest($5::bigint[], $6::text[]) AS s(id, kind)
           WHERE b.principal_kind = $1 AND b.principal_id = s.id AND b.kind = s.kind AND b.expires_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM want w WHERE w.id = b.principal_id AND w.kind = b.kind AND w.value = b.value))
         INSERT INTO bindings (principal_kind, principal_id, kind, value, position, expires_at, created_at)
         SELECT $1, w.id, w.kind, w.value, COALESCE((SELECT MAX(position) FROM bindings b WHERE b.principal_kind = $1 AND b.principal_id = w.id AND b.kind = w.kind), -1) + w.n, NULL, $7
         FROM want w
         ON CONFLICT (principal_kind, principal_id, kind, value) DO UPDATE SET expires_at = NULL WHERE bindings.expires_at IS NOT NULL`,
        [pk, want.map((w) => w.id), want.map((w) => w.kind), want.map((w) => w.value), sets.map((s) => s.id), sets.map((s) => s.kind), now],
      );
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
