import type { Db } from './db.js';

/**
 * Every domain users and devices may send as: the domain of each exact-address sender
 * binding and each '@domain' binding (stored lower-case A-label), expired exceptions left out.
 * The doctor checks these domains' SPF, DMARC, DKIM and MX.
 */
export function senderDomains(db: Db, now: number): string[] {
  const rows = db
    .prepare<[number], { value: string }>(
      `SELECT DISTINCT value FROM bindings
       WHERE kind = 'sender' AND principal_kind IN ('user', 'device') AND (expires_at IS NULL OR expires_at > ?)`,
    )
    .all(now);
  const domains = rows.map((r) => r.value.slice(r.value.lastIndexOf('@') + 1).toLowerCase()).filter(Boolean);
  return [...new Set(domains)].sort();
}
