import type { Db } from './db.js';
import type { PolicyCache } from './policy-cache.js';
import { GEO_BINDINGS } from './sql.js';

export type PrincipalKind = 'user' | 'device';
/**
 * What a binding is: 'network' a CIDR, 'sender' an address or '@domain', 'recipient' (devices)
 * an address, 'country' an ISO 3166-1 alpha-2 code in upper case ('DE'), 'asn' an autonomous
 * system number in decimal ('3320'). The schema refuses country and asn values of another form.
 */
export type BindingKind = 'network' | 'sender' | 'recipient' | 'country' | 'asn';
/**
 * Whose binding it is: a user's, a device's, or an app password's (principal id = the app
 * password's id; only network, country and asn, which then replace its user's network
 * bindings for logins with it).
 */
export type BindingOwner = PrincipalKind | 'app-password';

export interface Binding {
  kind: BindingKind;
  value: string;
  expiresAt: number | null;
}

interface Row {
  kind: BindingKind;
  value: string;
  expires_at: number | null;
}

/** What each principal may do: its networks, senders and (devices) recipients. */
export class BindingRepo {
  /** Every binding of a principal, lapsed ones too (filtered by time on each read). */
  private readonly all: (key: string) => Row[];
  private readonly geo: (key: 0) => boolean;

  constructor(
    private readonly db: Db,
    cache?: PolicyCache,
  ) {
    const load = (key: string) => {
      const sep = key.indexOf(':');
      return this.db
        .prepare<[string, number], Row>('SELECT kind, value, expires_at FROM bindings WHERE principal_kind = ? AND principal_id = ? ORDER BY kind, position')
        .all(key.slice(0, sep), Number(key.slice(sep + 1)));
    };
    this.all = cache ? cache.table(load) : load;
    const geo = () => this.db.prepare<[], { n: number }>(GEO_BINDINGS).get()!.n > 0;
    this.geo = cache ? cache.table(geo) : geo;
  }

  /**
   * Whether any binding (lapsed or not yet swept ones too) names a country or an ASN: only
   * then does the relay load the IP database. Cached like the bindings, so cheap to ask often.
   */
  hasGeoBindings(): boolean {
    return this.geo(0);
  }

  /** Bindings in force at `now` (lapsed exceptions excluded), in the order they were added. */
  list(pk: BindingOwner, id: number, now: number, kind?: BindingKind): Binding[] {
    return this.all(`${pk}:${id}`)
      .filter((r) => (!kind || r.kind === kind) && (r.expires_at === null || r.expires_at > now))
      .map((r) => ({ kind: r.kind, value: r.value, expiresAt: r.expires_at }));
  }

  /** The bindings in force of several principals at once (as list gives them), an entry for each id. */
  listMany(pk: BindingOwner, ids: number[], now: number): Map<number, Binding[]> {
    const out = new Map<number, Binding[]>(ids.map((id) => [id, []]));
    // One query, not a cached lookup per principal: for `user import` of a thousand users.
    const rows = this.db
      .prepare<[string, string, number], Row & { principal_id: number }>(
        `SELECT principal_id, kind, value, expires_at FROM bindings WHERE principal_kind = ? AND principal_id IN (SELECT value FROM json_each(?))
         AND (expires_at IS NULL OR expires_at > ?) ORDER BY principal_id, kind, position`,
      )
      .all(pk, JSON.stringify(ids), now);
    for (const r of rows) out.get(r.principal_id)?.push({ kind: r.kind, value: r.value, expiresAt: r.expires_at });
    return out;
  }

  values(pk: BindingOwner, id: number, kind: BindingKind, now: number): string[] {
    return this.list(pk, id, now, kind).map((b) => b.value);
  }

  /** Adds or refreshes (a new expiry replaces the old one; permanent stays permanent). Returns true if new. */
  add(pk: BindingOwner, id: number, kind: BindingKind, value: string, now: number, expiresAt: number | null = null): boolean {
    const existing = this.db
      .prepare<[string, number, string, string], { expires_at: number | null }>(
        'SELECT expires_at FROM bindings WHERE principal_kind = ? AND principal_id = ? AND kind = ? AND value = ?',
      )
      .get(pk, id, kind, value);
    if (existing) {
      if (existing.expires_at !== null) {
        this.db
          .prepare('UPDATE bindings SET expires_at = ? WHERE principal_kind = ? AND principal_id = ? AND kind = ? AND value = ?')
          .run(expiresAt, pk, id, kind, value);
      }
      return false;
    }
    const pos = this.db
      .prepare<[string, number, string], { p: number | null }>('SELECT MAX(position) AS p FROM bindings WHERE principal_kind = ? AND principal_id = ? AND kind = ?')
      .get(pk, id, kind)!.p;
    this.db
      .prepare('INSERT INTO bindings (principal_kind, principal_id, kind, value, position, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(pk, id, kind, value, (pos ?? -1) + 1, expiresAt, now);
    return true;
  }

  /**
   * Makes the permanent bindings of each (principal, kind) exactly `values`: others of that
   * kind go, new ones come after those kept, in the order given, and a time-limited exception
   * for a value listed becomes permanent; other exceptions stay. For `user import`, where
   * PostgreSQL does all of it in one statement.
   */
  setPermanent(pk: BindingOwner, sets: Array<{ id: number; kind: BindingKind; values: string[] }>, now: number): void {
    this.db.transaction(() => {
      for (const { id, kind, values } of sets) {
        const want = new Set(values);
        const rows = this.db
          .prepare<[string, number, string], { value: string }>('SELECT value FROM bindings WHERE principal_kind = ? AND principal_id = ? AND kind = ? AND expires_at IS NULL')
          .all(pk, id, kind);
        for (const r of rows) if (!want.has(r.value)) this.remove(pk, id, kind, r.value);
        for (const v of want) this.add(pk, id, kind, v, now);
      }
    })();
  }

  remove(pk: BindingOwner, id: number, kind: BindingKind, value: string): boolean {
    return (
      this.db.prepare('DELETE FROM bindings WHERE principal_kind = ? AND principal_id = ? AND kind = ? AND value = ?').run(pk, id, kind, value)
        .changes === 1
    );
  }

  removeAll(pk: BindingOwner, id: number): void {
    this.db.prepare('DELETE FROM bindings WHERE principal_kind = ? AND principal_id = ?').run(pk, id);
  }

  /** Deletes exceptions that have lapsed and returns them, so the caller can log and audit each. */
  sweepLapsed(now: number): Array<{ pk: BindingOwner; id: number; kind: BindingKind; value: string; expiresAt: number }> {
    const rows = this.db
      .prepare<[number], { principal_kind: BindingOwner; principal_id: number; kind: BindingKind; value: string; expires_at: number }>(
        'DELETE FROM bindings WHERE expires_at IS NOT NULL AND expires_at <= ? RETURNING principal_kind, principal_id, kind, value, expires_at',
      )
      .all(now);
    return rows.map((r) => ({ pk: r.principal_kind, id: r.principal_id, kind: r.kind, value: r.value, expiresAt: r.expires_at }));
  }
}
