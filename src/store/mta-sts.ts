import type { Db } from './db.js';

/** A recipient domain's MTA-STS policy as fetched (RFC 8461), with when it lapses. */
export interface StsPolicy {
  domain: string;
  /** The id of the _mta-sts TXT record it was fetched for. */
  id: string;
  mode: 'enforce' | 'testing' | 'none';
  /** The policy's mx patterns, lower case ("mx1.example.com", "*.example.net"). */
  mx: string[];
  /** Seconds. */
  maxAge: number;
  /** The policy file's lines, as TLS reports quote them. */
  text: string[];
  fetchedAt: number;
  expiresAt: number;
}

export interface StsPolicyRow {
  domain: string;
  policy_id: string;
  mode: StsPolicy['mode'];
  mx: string;
  max_age: number;
  policy: string;
  fetched_at: number;
  expires_at: number;
}

export const toStsPolicy = (r: StsPolicyRow): StsPolicy => ({
  domain: r.domain,
  id: r.policy_id,
  mode: r.mode,
  mx: JSON.parse(r.mx) as string[],
  maxAge: Number(r.max_age),
  text: r.policy === '' ? [] : r.policy.split('\n'),
  fetchedAt: Number(r.fetched_at),
  expiresAt: Number(r.expires_at),
});

export const fromStsPolicy = (p: StsPolicy): unknown[] => [p.domain, p.id, p.mode, JSON.stringify(p.mx), p.maxAge, p.text.join('\n'), p.fetchedAt, p.expiresAt];

/** MTA-STS policies cached for every node (an expired one is still returned: the caller decides). */
export class MtaStsRepo {
  constructor(private readonly db: Db) {}

  get(domain: string): StsPolicy | undefined {
    const r = this.db.prepare<[string], StsPolicyRow>('SELECT * FROM mta_sts_policies WHERE domain = ?').get(domain.toLowerCase());
    return r && toStsPolicy(r);
  }

  put(p: StsPolicy): void {
    this.db
      .prepare(
        `INSERT INTO mta_sts_policies (domain, policy_id, mode, mx, max_age, policy, fetched_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode, mx = excluded.mx, max_age = excluded.max_age,
           policy = excluded.policy, fetched_at = excluded.fetched_at, expires_at = excluded.expires_at`,
      )
      .run(...fromStsPolicy({ ...p, domain: p.domain.toLowerCase() }));
  }
}
