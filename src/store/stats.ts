import type { Db } from './db.js';
import type { PrincipalRef, QueueState } from '../domain/types.js';
import { MESSAGES_BY_NODE } from './sql.js';
import { ownerNode } from './shared.js';

/** One node's share of the spool: what it accepted that is still there, and what it is delivering now. */
export interface NodeStats {
  /** null: mail accepted before nodes were recorded. */
  node: string | null;
  queued: number;
  held: number;
  waiting: number;
  /** Messages under a delivery claim of this node that has not lapsed. */
  delivering: number;
}

/** Both engines: folds the per-node counts and the live claim owners into NodeStats, by node name. */
export function nodeStats(byNode: Array<{ node: string | null; state: QueueState; n: number }>, owners: string[]): NodeStats[] {
  const out = new Map<string | null, NodeStats>();
  const of = (node: string | null) => out.get(node) ?? out.set(node, { node, queued: 0, held: 0, waiting: 0, delivering: 0 }).get(node)!;
  for (const r of byNode) {
    const s = of(r.node);
    if (r.state === 'waiting-quota') s.waiting += Number(r.n);
    else s[r.state] += Number(r.n);
  }
  for (const o of owners) of(ownerNode(o)).delivering++;
  return [...out.values()].sort((a, b) => (a.node ?? '\uffff').localeCompare(b.node ?? '\uffff'));
}

/** One principal's figures over a window; each comes from the table named beside it. */
export interface PrincipalStats {
  /** "user:alice", "device:printer-3" */
  principal: string;
  /** quota_buckets: messages handed to delivery (held mail counts once released), sent or not. */
  messages: number;
  /** delivery_outcomes: recipients a remote server accepted (2xx). */
  delivered: number;
  /** delivery_outcomes: recipients a remote server refused (5xx). */
  rejected: number;
  /** messages: held in quarantine now, received in the window. */
  held: number;
  /** incidents: opened in the window. */
  incidents: number;
}

/** Both engines: the figures of the query below in PrincipalStats' order. */
export const principalStats = (r: { principal: string; messages: number; delivered: number; rejected: number; held: number; incidents: number }): PrincipalStats => ({
  principal: r.principal,
  messages: Number(r.messages),
  delivered: Number(r.delivered),
  rejected: Number(r.rejected),
  held: Number(r.held),
  incidents: Number(r.incidents),
});

/** Per-principal figures for "postern stats"; the relay's own counters are in /metrics. */
export class StatsRepo {
  constructor(private readonly db: Db) {}

  /**
   * Quarantine releases, deletions and expiries ever made, from the audit log. Release and
   * delete run in the CLI's process, not the relay's, so the relay cannot count their log
   * events; the audit rows are written in the same transaction and never pruned.
   */
  quarantineDecisions(): Record<string, number> {
    const rows = this.db
      .prepare<[], { action: string; n: number }>(
        "SELECT action, COUNT(*) AS n FROM audit WHERE action IN ('quarantine.release', 'quarantine.delete', 'quarantine.expire') GROUP BY action",
      )
      .all();
    const name: Record<string, string> = { 'quarantine.release': 'released', 'quarantine.delete': 'deleted', 'quarantine.expire': 'expired' };
    return Object.fromEntries(rows.map((r) => [name[r.action]!, r.n]));
  }

  /** The spool by node: accepted and still there, and under a live delivery claim at `now`. */
  nodes(now: number): NodeStats[] {
    const byNode = this.db.prepare<[], { node: string | null; state: QueueState; n: number }>(MESSAGES_BY_NODE).all();
    const owners = this.db.prepare<[number], { owner: string }>('SELECT claim_owner AS owner FROM messages WHERE claim_owner IS NOT NULL AND claim_until > ?').all(now);
    return nodeStats(byNode, owners.map((r) => r.owner));
  }

  /** Every principal with any figure since `since`, or just `principal`; sorted by name. */
  since(since: number, principal?: PrincipalRef): PrincipalStats[] {
    const only = principal !== undefined ? 'AND principal_ref = @p' : '';
    const rows = this.db
      .prepare<{ since: number; p: number | null }, { principal: string; messages: number; delivered: number; rejected: number; held: number; incidents: number }>(
        `WITH
           s AS (SELECT principal_ref, SUM(messages) AS n FROM quota_buckets WHERE minute * 60000 > @since ${only} GROUP BY principal_ref),
           h AS (SELECT principal_ref, COUNT(*) AS n FROM messages WHERE state = 'held' AND principal_ref IS NOT NULL AND received_at > @since ${only} GROUP BY principal_ref),
           o AS (SELECT principal_ref, SUM(1 - rejected) AS d, SUM(rejected) AS r FROM delivery_outcomes WHERE at > @since ${only} GROUP BY principal_ref),
           i AS (SELECT principal_ref, COUNT(*) AS n FROM incidents WHERE created_at > @since AND principal_ref IS NOT NULL ${only} GROUP BY principal_ref),
           p AS (SELECT principal_ref FROM s UNION SELECT principal_ref FROM h UNION SELECT principal_ref FROM o UNION SELECT principal_ref FROM i)
         SELECT pr.kind || ':' || pr.name AS principal, COALESCE(s.n, 0) AS messages, COALESCE(o.d, 0) AS delivered, COALESCE(o.r, 0) AS rejected,
                COALESCE(h.n, 0) AS held, COALESCE(i.n, 0) AS incidents
           FROM p JOIN principals pr ON pr.id = p.principal_ref
           LEFT JOIN s USING (principal_ref) LEFT JOIN h USING (principal_ref) LEFT JOIN o USING (principal_ref) LEFT JOIN i USING (principal_ref)
          ORDER BY principal, pr.id`,
      )
      .all({ since, p: principal ?? null });
    return rows.map(principalStats);
  }
}
