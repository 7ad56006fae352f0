import type { TlsReportStore } from '../index.js';
import { tlsReportEntry, type TlsReportEntry, type TlsReportKey } from '../tls-reports.js';
import type { Pg } from './pg.js';

/** The TLS report counters (see store/tls-reports.ts). */
export class PgTlsReportRepo implements TlsReportStore {
  constructor(private readonly db: Pg) {}

  async add(k: TlsReportKey, n = 1): Promise<void> {
    // The conflict target names the unique index's expression (md5 of the policy: see migration 009).
    await this.db.run(
      `INSERT INTO tls_report_counts (day, policy_domain, policy_type, policy_string, mx_host, result, sending_ip, receiving_ip, count)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT (day, policy_domain, policy_type, md5(policy_string), mx_host, result, sending_ip, receiving_ip)
       DO UPDATE SET count = tls_report_counts.count + excluded.count`,
      [k.day, k.policyDomain, k.policyType, k.policyString, k.mxHost, k.result, k.sendingIp, k.receivingIp, n],
    );
  }

  async daysBefore(day: string): Promise<string[]> {
    return (await this.db.q<{ day: string }>('SELECT DISTINCT day COLLATE "C" AS day FROM tls_report_counts WHERE day < $1 COLLATE "C" ORDER BY 1', [day])).map((r) => r.day);
  }

  async entries(day: string): Promise<TlsReportEntry[]> {
    // COLLATE "C": the same order as SQLite's, whatever the database's collation.
    const rows = await this.db.q<Parameters<typeof tlsReportEntry>[0]>(
      `SELECT * FROM tls_report_counts WHERE day = $1
       ORDER BY policy_domain COLLATE "C", policy_type COLLATE "C", policy_string COLLATE "C", mx_host COLLATE "C", result COLLATE "C", sending_ip COLLATE "C", receiving_ip COLLATE "C"`,
      [day],
    );
    return rows.map(tlsReportEntry);
  }

  clear(day: string, policyDomain: string): Promise<number> {
    return this.db.run('DELETE FROM tls_report_counts WHERE day = $1 AND policy_domain = $2', [day, policyDomain]);
  }
}
