import type { Incident, IncidentKind, PrincipalRef } from '../../domain/types.js';
import { detailColumn, detailOf, type AuditEntry, type AuditRecord, type NewAuditEntry } from '../audit.js';
import type { AuditStore, IncidentStore } from '../index.js';
import { toIncident, type IncidentResolution, type NewIncident, type Row } from '../incidents.js';
import type { Pg } from './pg.js';

type AuditRow = Omit<AuditEntry, 'detail'> & { detail: string | null };
const auditEntry = (r: AuditRow): AuditRecord => ({ ...r, detail: detailOf(r.detail) });

export class PgIncidentRepo implements IncidentStore {
  constructor(private readonly db: Pg) {}

  /** One transaction, serialized per principal: concurrent reports cannot both claim the notice. */
  record(i: NewIncident, now: number, burstMs: number | null): Promise<{ incident: Incident; notify: boolean }> {
    return this.db.tx(async () => {
      await this.lock(i.principalRef);
      return this.insert(i, now, burstMs);
    });
  }

  recordUnlessOpen(i: NewIncident, now: number, burstMs: number | null, since: number): Promise<{ incident: Incident; notify: boolean } | null> {
    return this.db.tx(async () => {
      await this.lock(i.principalRef);
      return (await this.hasOpen(i.principalRef, { kind: i.kind, since })) ? null : this.insert(i, now, burstMs);
    });
  }

  private async lock(ref: PrincipalRef): Promise<void> {
    await this.db.lock(`incidents ${ref}`);
  }

  private async insert(i: NewIncident, now: number, burstMs: number | null): Promise<{ incident: Incident; notify: boolean }> {
    const notify =
      burstMs !== null &&
      (await this.db.one<{ n: number }>('SELECT COUNT(*)::int AS n FROM incidents WHERE principal_ref = $1 AND notified = 1 AND created_at > $2', [i.principalRef, now - burstMs]))!.n === 0;
    const r = await this.db.one<Row>(
      `INSERT INTO incidents (principal_kind, principal_id, principal_name, principal_ref, kind, client_ip, sender, detail, created_at, notified)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *`,
      [i.principalKind, i.principalId, i.principalName, i.principalRef, i.kind, i.clientIp ?? null, i.sender ?? null, i.detail ?? null, now, notify ? 1 : 0],
    );
    return { incident: toIncident(r!), notify };
  }

  async get(id: number): Promise<Incident | undefined> {
    const r = await this.db.one<Row>('SELECT * FROM incidents WHERE id = $1', [id]);
    return r && toIncident(r);
  }

  /** Newest first. By name: every principal that had the name; by principal: that one only. */
  async list(filter: { principalKind?: 'user' | 'device'; name?: string; principal?: PrincipalRef; open?: boolean; limit?: number } = {}): Promise<Incident[]> {
    const rows = await this.db.q<Row>(
      `SELECT * FROM incidents
       WHERE ($1::bigint IS NULL OR principal_ref = $1) AND ($2::text IS NULL OR principal_kind = $2)
         AND ($3::text IS NULL OR lower(principal_name) = lower($3)) AND (NOT $4 OR resolved_at IS NULL)
       ORDER BY created_at DESC, id DESC LIMIT $5`,
      [filter.principal ?? null, filter.principalKind ?? null, filter.name || null, Boolean(filter.open), filter.limit ?? 1000],
    );
    return rows.map(toIncident);
  }

  /** An unresolved incident of the principal; with `of`, one of that kind opened since then. */
  async countOpenMany(principals: PrincipalRef[]): Promise<Map<PrincipalRef, number>> {
    const out = new Map<PrincipalRef, number>(principals.map((p) => [p, 0]));
    if (!principals.length) return out;
    const rows = await this.db.q<{ p: PrincipalRef; n: number }>(
      'SELECT principal_ref AS p, COUNT(*) AS n FROM incidents WHERE resolved_at IS NULL AND principal_ref = ANY($1::bigint[]) GROUP BY principal_ref',
      [principals],
    );
    for (const r of rows) out.set(r.p, Number(r.n));
    return out;
  }

  async hasOpen(principal: PrincipalRef, of?: { kind: IncidentKind; since: number }): Promise<boolean> {
    const r = await this.db.one(
      `SELECT 1 FROM incidents WHERE principal_ref = $1 AND resolved_at IS NULL AND ($2::text IS NULL OR kind = $2) AND created_at >= $3 LIMIT 1`,
      [principal, of?.kind ?? null, of?.since ?? 0],
    );
    return r !== undefined;
  }

  async resolve(id: number, by: { actor: string; reason: string | null; now: number }): Promise<IncidentResolution> {
    return this.db.tx(async () => {
      const r = await this.db.one<Row>('SELECT * FROM incidents WHERE id = $1 FOR UPDATE', [id]);
      if (!r) return 'not-found';
      if (r.resolved_at !== null) return 'already-resolved';
      await this.db.run('UPDATE incidents SET resolved_at = $1, resolved_by = $2 WHERE id = $3', [by.now, by.actor, id]);
      await this.db.audit({ at: by.now, actor: by.actor, action: 'incident.resolve', target: `incident:${id}`, detail: { principal: r.principal_name, principal_kind: r.principal_kind, kind: r.kind }, reason: by.reason });
      return 'resolved';
    });
  }

  /** Resolves every open incident of a principal; returns how many. */
  resolveOpen(principal: PrincipalRef, by: string, now: number): Promise<number> {
    return this.db.run('UPDATE incidents SET resolved_at = $1, resolved_by = $2 WHERE principal_ref = $3 AND resolved_at IS NULL', [now, by, principal]);
  }
}

export class PgAuditRepo implements AuditStore {
  constructor(private readonly db: Pg) {}

  async record(e: NewAuditEntry): Promise<void> {
    await this.db.audit(e);
  }

  /** In one statement; ids ascend in the order given (WITH ORDINALITY, ORDER BY). */
  async recordMany(entries: NewAuditEntry[]): Promise<void> {
    if (!entries.length) return;
    await this.db.run(
      `INSERT INTO audit (at, actor, action, target, detail, reason)
       SELECT at, actor, action, target, detail, reason FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS e(at, actor, action, target, detail, reason, n) ORDER BY n`,
      [entries.map((e) => e.at), entries.map((e) => e.actor), entries.map((e) => e.action), entries.map((e) => e.target), entries.map((e) => detailColumn(e.detail)), entries.map((e) => e.reason)],
    );
  }

  /** Newest first; target is "user:NAME", "device:NAME", "message:ID", "incident:ID" and so on. */
  async list(filter: { target?: string; limit?: number } = {}): Promise<AuditRecord[]> {
    const rows = await this.db.q<AuditRow>(
      'SELECT * FROM audit WHERE ($1::text IS NULL OR lower(target) = lower($1)) ORDER BY at DESC, id DESC LIMIT $2',
      [filter.target || null, filter.limit ?? 1000],
    );
    return rows.map(auditEntry);
  }

  /**
   * Entries written after `position`, by id. An id is taken when a transaction inserts its row,
   * not when it commits, so a later id can be visible before an earlier one: the follower
   * (obs/admin-log.ts) passes a hole in the ids only once it has lasted.
   */
  async after(position: number, limit: number): Promise<AuditRecord[]> {
    return (await this.db.q<AuditRow>('SELECT * FROM audit WHERE id > $1 ORDER BY id LIMIT $2', [position, limit])).map(auditEntry);
  }

  /** Where the follower `name` stands; a new one starts at the newest entry. */
  async cursor(name: string): Promise<number> {
    await this.db.run('INSERT INTO log_cursors (name, position) SELECT $1, COALESCE(MAX(id), 0) FROM audit ON CONFLICT (name) DO NOTHING', [name]);
    return (await this.db.one<{ position: number }>('SELECT position FROM log_cursors WHERE name = $1', [name]))!.position;
  }

  /** Moves the follower from `from` to `to`; false when another node moved it first. */
  async advanceCursor(name: string, from: number, to: number): Promise<boolean> {
    return (await this.db.run('UPDATE log_cursors SET position = $1 WHERE name = $2 AND position = $3', [to, name, from])) === 1;
  }
}
