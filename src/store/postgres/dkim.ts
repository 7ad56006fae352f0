import { activation, DkimKeyExistsError, importedOver, normDkimKey, toDkimKey, type DkimActivation, type DkimActivator, type DkimImport, type DkimKey } from '../dkim.js';
import type { DkimStore } from '../index.js';
import type { Pg } from './pg.js';
import { dkimSigning } from '../sql.js';

/** The signing key of the domain $1 (the order of signsBefore; "C": code points, as SQLite). */

/** DKIM signing keys on PostgreSQL: the same verbs as the SQLite DkimRepo. */
export class PgDkimRepo implements DkimStore {
  constructor(private readonly db: Pg) {}

  async add(key: DkimKey): Promise<void> {
    const k = normDkimKey(key);
    const n = await this.db.run('INSERT INTO dkim_keys (domain, selector, private_key, created_at, activated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
      k.domain,
      k.selector,
      k.privateKeyPem,
      k.createdAt,
      k.activatedAt,
    ]);
    if (!n) throw new DkimKeyExistsError(k.domain, k.selector);
  }

  async importKey(key: DkimKey): Promise<DkimImport> {
    const k = normDkimKey(key);
    try {
      await this.add(k);
      return 'added';
    } catch (e) {
      if (!(e instanceof DkimKeyExistsError)) throw e;
    }
    const had = await this.db.one<{ private_key: string }>('SELECT private_key FROM dkim_keys WHERE domain = $1 AND selector = $2', [k.domain, k.selector]);
    return importedOver(had?.private_key, k.privateKeyPem);
  }

  async signing(domain: string): Promise<DkimKey | null> {
    const r = await this.db.one<Parameters<typeof toDkimKey>[0]>(dkimSigning('*', '$1', ' COLLATE "C"'), [domain.toLowerCase()]);
    return r ? toDkimKey(r) : null;
  }

  async activate(domain: string, selector: string, by: DkimActivator): Promise<DkimActivation> {
    const d = domain.toLowerCase();
    const sel = selector.toLowerCase();
    return this.db.tx(async () => {
      // The domain's keys locked: two activations at once on different nodes take turns, and
      // the second sees the first's key as the one to follow.
      const keys = await this.db.q<{ selector: string }>('SELECT selector FROM dkim_keys WHERE domain = $1 FOR UPDATE', [d]);
      if (!keys.some((k) => k.selector === sel)) return { outcome: 'not-found' };
      const cur = await this.db.one<{ selector: string; activated_at: string }>(dkimSigning('selector, activated_at', '$1', ' COLLATE "C"'), [d]);
      if (cur?.selector === sel) return { outcome: 'already-signing' };
      const a = activation(d, sel, cur, by);
      await this.db.run('UPDATE dkim_keys SET activated_at = $1 WHERE domain = $2 AND selector = $3', [a.at, d, sel]);
      await this.db.audit(a.audit);
      return { outcome: 'activated', previous: a.previous, at: a.at };
    });
  }

  async list(): Promise<DkimKey[]> {
    return (await this.db.q<Parameters<typeof toDkimKey>[0]>('SELECT * FROM dkim_keys ORDER BY domain COLLATE "C", created_at DESC, selector COLLATE "C"')).map(toDkimKey);
  }
}
