import { DkimKeyExistsError, importedOver, normDkimKey, toDkimKey, type DkimImport, type DkimKey } from '../dkim.js';
import type { DkimStore } from '../index.js';
import type { Pg } from './pg.js';

/** DKIM signing keys on PostgreSQL: the same verbs as the SQLite DkimRepo. */
export class PgDkimRepo implements DkimStore {
  constructor(private readonly db: Pg) {}

  async add(key: DkimKey): Promise<void> {
    const k = normDkimKey(key);
    const n = await this.db.run('INSERT INTO dkim_keys (domain, selector, private_key, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [
      k.domain,
      k.selector,
      k.privateKeyPem,
      k.createdAt,
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

  async newest(domain: string): Promise<DkimKey | null> {
    const r = await this.db.one<Parameters<typeof toDkimKey>[0]>('SELECT * FROM dkim_keys WHERE domain = $1 ORDER BY created_at DESC, selector COLLATE "C" LIMIT 1', [domain.toLowerCase()]);
    return r ? toDkimKey(r) : null;
  }

  async list(): Promise<DkimKey[]> {
    return (await this.db.q<Parameters<typeof toDkimKey>[0]>('SELECT * FROM dkim_keys ORDER BY domain COLLATE "C", created_at DESC, selector COLLATE "C"')).map(toDkimKey);
  }
}
