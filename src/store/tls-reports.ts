import type { Db } from './db.js';

/** What an RFC 8460 report tells apart about a delivery session. */
export interface TlsReportKey {
  /** The UTC day, 'YYYY-MM-DD'. */
  day: string;
  policyDomain: string;
  policyType: 'sts' | 'tlsa' | 'no-policy-found';
  /** The policy's lines joined with '\n'; '' for none. */
  policyString: string;
  /** '' when none. */
  mxHost: string;
  /** 'success', or an RFC 8460 result-type ('starttls-not-supported', 'certificate-not-trusted', ...). */
  result: string;
  /** '' when unknown. */
  sendingIp: string;
  /** '' when unknown. */
  receivingIp: string;
}

export interface TlsReportEntry extends TlsReportKey {
  count: number;
}

interface Row {
  day: string;
  policy_domain: string;
  policy_type: TlsReportKey['policyType'];
  policy_string: string;
  mx_host: string;
  result: string;
  sending_ip: string;
  receiving_ip: string;
  count: number;
}

export const tlsReportEntry = (r: Row): TlsReportEntry => ({
  day: r.day,
  policyDomain: r.policy_domain,
  policyType: r.policy_type,
  policyString: r.policy_string,
  mxHost: r.mx_host,
  result: r.result,
  sendingIp: r.sending_ip,
  receivingIp: r.receiving_ip,
  count: Number(r.count),
});

/**
 * The counters behind the daily TLS reports (RFC 8460), on the synchronous=NORMAL connection:
 * one upsert per delivery session, and a power cut forgets at most the last few counts of a
 * report that is statistics, not mail. add() is one statement, so processes counting at once
 * all land.
 */
export class TlsReportRepo {
  private readonly addStmt;

  constructor(private readonly db: Db) {
    this.addStmt = db.prepare(
      `INSERT INTO tls_report_counts (day, policy_domain, policy_type, policy_string, mx_host, result, sending_ip, receiving_ip, count)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (day, policy_domain, policy_type, policy_string, mx_host, result, sending_ip, receiving_ip)
       DO UPDATE SET count = count + excluded.count`,
    );
  }

  /** Counts `n` more sessions of this kind. */
  add(k: TlsReportKey, n = 1): void {
    this.addStmt.run(k.day, k.policyDomain, k.policyType, k.policyString, k.mxHost, k.result, k.sendingIp, k.receivingIp, n);
  }

  /** The days with counts strictly before `day` ('YYYY-MM-DD'), oldest first. */
  daysBefore(day: string): string[] {
    return this.db.prepare<[string], { day: string }>('SELECT DISTINCT day FROM tls_report_counts WHERE day < ? ORDER BY day').all(day).map((r) => r.day);
  }

  /** Every count of the day, by policy domain, policy, MX host, result and addresses. */
  entries(day: string): TlsReportEntry[] {
    return this.db
      .prepare<[string], Row>(
        `SELECT * FROM tls_report_counts WHERE day = ?
         ORDER BY policy_domain, policy_type, policy_string, mx_host, result, sending_ip, receiving_ip`,
      )
      .all(day)
      .map(tlsReportEntry);
  }

  /** Forgets the day's counts for a policy domain (reported, or nobody to report to): how many rows. */
  clear(day: string, policyDomain: string): number {
    return this.db.prepare('DELETE FROM tls_report_counts WHERE day = ? AND policy_domain = ?').run(day, policyDomain).changes;
  }
}
