import type { PrincipalRef, QueueState } from '../../domain/types.js';
import type { StatsStore } from '../index.js';
import { MESSAGES_BY_NODE } from '../sql.js';
import { nodeStats, principalStats, type NodeStats, type PrincipalStats } from '../stats.js';
import type { Pg } from './pg.js';

/** Per-principal figures for "postern stats"; the relay's own counters are in /metrics. */
export class PgStatsRepo implements StatsStore {
  constructor(private readonly db: Pg) {}

  /** Quarantine releases, deletions and expiries ever made, from the audit log. */
  async quarantineDecisions(): Promise<Record<string, number>> {
    const rows = await this.db.q<{ action: string; n: number }>(
      "SELECT action, COUNT(*) AS n FROM audit WHERE action IN ('quarantine.release', 'quarantine.delete', 'quarantine.expire') GROUP BY action",
    );
    const name: Record<string, string> = { 'quarantine.release': 'released', 'quarantine.delete': 'deleted', 'quarantine.expire': 'expired' };
    return Object.fromEntries(rows.map((r) => [name[r.action]!, r.n]));
  }

  async nodes(now: number): Promise<NodeStats[]> {
    const byNode = await this.db.q<{ node: string | null; state: QueueState; n: number }>(MESSAGES_BY_NODE);
    const owners = await this.db.q<{ owner: string }>('SELECT claim_owner AS owner FROM messages WHERE claim_owner IS NOT NULL AND claim_until > $1', [now]);
    return nodeStats(byNode, owners.map((r) => r.owner));
  }

  /** Every principal with any figure since `since`, or just `principal`; sorted by name (bytewise, as SQLite). */
  async since(since: number, principal?: PrincipalRef): Promise<PrincipalStats[]> {
    const only = principal !== undefined ? 'AND principal_ref = $2' : '';
    const rows = await this.db.q<{ principal: string; messages: number; delivered: number; rejected: number; held: number; incidents: number }>(
      `WITH
         s AS (SELECT principal_ref, SUM(messages) AS n FROM quota_buckets WHERE minute * 60000 > $1 ${only} GROUP BY principal_ref),
         h AS (SELECT principal_ref, COUNT(*) AS n FROM messages WHERE state = 'held' AND principal_ref IS NOT NULL AND received_at > $1 ${only} GROUP BY principal_ref),
         o AS (SELECT principal_ref, SUM(1 - rejected) AS d, SUM(rejected) AS r FROM delivery_outcomes WHERE at > $1 ${only} GROUP BY principal_ref),
         i AS (SELECT principal_ref, COUNT(*) AS n FROM incidents WHERE created_at > $1 AND principal_ref IS NOT NULL ${only} GROUP BY principal_ref),
         p AS (SELECT principal_ref FROM s UNION SELECT principal_ref FROM h UNION SELECT principal_ref FROM o UNION SELECT principal_ref FROM i)
       SELECT pr.kind || ':' || pr.name AS principal, COALESCE(s.n, 0) AS messages, COALESCE(o.d, 0) AS delivered, COALESCE(o.r, 0) AS rejected,
              COALESCE(h.n, 0) AS held, COALESCE(i.n, 0) AS incidents
         FROM p JOIN principals pr ON pr.id = p.principal_ref
         LEFT JOIN s USING (principal_ref) LEFT JOIN h USING (principal_ref) LEFT JOIN o USING (principal_ref) LEFT JOIN i USING (principal_ref)
        ORDER BY (pr.kind || ':' || pr.name) COLLATE "C", pr.id`,
      principal !== undefined ? [since, principal] : [since],
    );
    return rows.map(principalStats);
  }
}
