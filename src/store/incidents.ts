import type { Db } from './db.js';
import type { Incident, IncidentKind, PrincipalRef } from '../domain/types.js';
import { AuditRepo } from './audit.js';

/** What resolving an incident by its id found. */
export type IncidentResolution = 'resolved' | 'already-resolved' | 'not-found';

export interface Row {
  id: number;
  principal_kind: 'user' | 'device';
  principal_id: number | null;
  principal_name: string;
  kind: string;
  client_ip: string | null;
  sender: string | null;
  detail: string | null;
  created_at: number;
  resolved_at: number | null;
  resolved_by: string | null;
  notified: number;
}

export const toIncident = (r: Row): Incident => ({
  id: r.id,
  principalKind: r.principal_kind,
  principalId: r.principal_id,
  principalName: r.principal_name,
  kind: r.kind,
  clientIp: r.client_ip,
  sender: r.sender,
  detail: r.detail,
  createdAt: r.created_at,
  resolvedAt: r.resolved_at,
  resolvedBy: r.resolved_by,
  notified: r.notified === 1,
});

export interface NewIncident {
  principalKind: 'user' | 'device';
  principalId: number | null;
  principalName: string;
  principalRef: PrincipalRef;
  kind: IncidentKind;
  clientIp?: string | null;
  sender?: string | null;
  detail?: string | null;
}

export class IncidentRepo {
  /**
   * Records an incident and says whether it opens a new burst: true when no incident of this
   * principal was notified within `burstMs`. Only the first of a burst is notified, so an
   * attacker retrying a stolen password does not flood the user's and the admins' mailboxes.
   * One transaction: concurrent sessions cannot both claim the notice. `burstMs` null: an
   * incident that sends no notice (and so opens no burst).
   */
  readonly record: (i: NewIncident, now: number, burstMs: number | null) => { incident: Incident; notify: boolean };
  /**
   * record(), unless the principal has an unresolved incident of the same kind opened since
   * `since` (then null): the check and the insert are one transaction, so two deliveries
   * finishing at once open one incident, not two.
   */
  readonly recordUnlessOpen: (i: NewIncident, now: number, burstMs: number | null, since: number) => { incident: Incident; notify: boolean } | null;

  constructor(private readonly db: Db) {
    const insert = db.prepare(
      `INSERT INTO incidents (principal_kind, principal_id, principal_name, principal_ref, kind, client_ip, sender, detail, created_at, notified)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const recent = db.prepare<[number, number], { n: number }>(
      'SELECT COUNT(*) AS n FROM incidents WHERE principal_ref = ? AND notified = 1 AND created_at > ?',
    );
    const record = (i: NewIncident, now: number, burstMs: number | null) => {
      const notify = burstMs !== null && recent.get(i.principalRef, now - burstMs)!.n === 0;
      const info = insert.run(i.principalKind, i.principalId, i.principalName, i.principalRef, i.kind, i.clientIp ?? null, i.sender ?? null, i.detail ?? null, now, notify ? 1 : 0);
      return { incident: this.get(Number(info.lastInsertRowid))!, notify };
    };
    this.record = db.transaction(record);
    const recordUnlessOpen = db.transaction((i: NewIncident, now: number, burstMs: number | null, since: number) =>
      this.hasOpen(i.principalRef, { kind: i.kind, since }) ? null : record(i, now, burstMs),
    );
    this.recordUnlessOpen = (...a) => recordUnlessOpen.immediate(...a);
  }

  get(id: number): Incident | undefined {
    const r = this.db.prepare<[number], Row>('SELECT * FROM incidents WHERE id = ?').get(id);
    return r && toIncident(r);
  }

  /** Newest first. By name: every principal that had the name; by principal: that one only. */
  list(filter: { principalKind?: 'user' | 'device'; name?: string; principal?: PrincipalRef; open?: boolean; limit?: number } = {}): Incident[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.principal !== undefined) {
      where.push('principal_ref = ?');
      params.push(filter.principal);
    }
    if (filter.principalKind) {
      where.push('principal_kind = ?');
      params.push(filter.principalKind);
    }
    if (filter.name) {
      where.push('principal_name = ? COLLATE NOCASE');
      params.push(filter.name);
    }
    if (filter.open) where.push('resolved_at IS NULL');
    const sql = `SELECT * FROM incidents ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`;
    return this.db.prepare<unknown[], Row>(sql).all(...params, filter.limit ?? 1000).map(toIncident);
  }

  /** An unresolved incident of the principal; with `of`, one of that kind opened since then. */
  /** Open incidents of several principals at once, an entry for each: one query, for `user list`. */
  countOpenMany(principals: PrincipalRef[]): Map<PrincipalRef, number> {
    const out = new Map<PrincipalRef, number>(principals.map((p) => [p, 0]));
    const rows = this.db
      .prepare<[string], { p: PrincipalRef; n: number }>(
        'SELECT principal_ref AS p, COUNT(*) AS n FROM incidents WHERE resolved_at IS NULL AND principal_ref IN (SELECT value FROM json_each(?)) GROUP BY principal_ref',
      )
      .all(JSON.stringify(principals));
    for (const r of rows) out.set(r.p, r.n);
    return out;
  }

  hasOpen(principal: PrincipalRef, of?: { kind: IncidentKind; since: number }): boolean {
    return (
      this.db
        .prepare<[number, string | null, string | null, number], { n: number }>(
          `SELECT COUNT(*) AS n FROM incidents WHERE principal_ref = ? AND resolved_at IS NULL
           AND (? IS NULL OR kind = ?) AND created_at >= ?`,
        )
        .get(principal, of?.kind ?? null, of?.kind ?? null, of?.since ?? 0)!.n > 0
    );
  }

  /**
   * Resolves one incident by hand (the helpdesk, once it has looked), audited in the same
   * transaction as "incident.resolve" on incident:ID. An open incident weighs on the scoring
   * of every message of its principal (open_incident) until it is resolved.
   */
  resolve(id: number, by: { actor: string; reason: string | null; now: number }): IncidentResolution {
    return this.db.transaction((): IncidentResolution => {
      const i = this.get(id);
      if (!i) return 'not-found';
      if (i.resolvedAt !== null) return 'already-resolved';
      this.db.prepare('UPDATE incidents SET resolved_at = ?, resolved_by = ? WHERE id = ?').run(by.now, by.actor, id);
      new AuditRepo(this.db).record({ at: by.now, actor: by.actor, action: 'incident.resolve', target: `incident:${id}`, detail: { principal: i.principalName, principal_kind: i.principalKind, kind: i.kind }, reason: by.reason });
      return 'resolved';
    })();
  }

  /** Resolves every open incident of a principal; returns how many. */
  resolveOpen(principal: PrincipalRef, by: string, now: number): number {
    return this.db.prepare('UPDATE incidents SET resolved_at = ?, resolved_by = ? WHERE principal_ref = ? AND resolved_at IS NULL').run(now, by, principal).changes;
  }
}
