import type { MtaStsStore } from '../index.js';
import { fromStsPolicy, toStsPolicy, type StsPolicy, type StsPolicyRow } from '../mta-sts.js';
import type { Pg } from './pg.js';

/** MTA-STS policies cached for every node (see store/mta-sts.ts). */
export class PgMtaStsRepo implements MtaStsStore {
  constructor(private readonly db: Pg) {}

  async get(domain: string): Promise<StsPolicy | undefined> {
    const r = await this.db.one<StsPolicyRow>('SELECT * FROM mta_sts_policies WHERE domain = $1', [domain.toLowerCase()]);
    return r && toStsPolicy(r);
  }

  async put(p: StsPolicy): Promise<void> {
    await this.db.run(
      `INSERT INTO mta_sts_policies (domain, policy_id, mode, mx, max_age, policy, fetched_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode, mx = excluded.mx, max_age = excluded.max_age,
         policy = excluded.policy, fetched_at = excluded.fetched_at, expires_at = excluded.expires_at`,
      fromStsPolicy({ ...p, domain: p.domain.toLowerCase() }),
    );
  }
}
