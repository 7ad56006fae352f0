import type { Db } from './db.js';

/** A DKIM signing key: PKCS#8 PEM, signing mail whose header From is in `domain`. */
export interface DkimKey {
  /** Lower-case A-label domain. */
  domain: string;
  /** Lower-case DNS label: the key is published at SELECTOR._domainkey.DOMAIN. */
  selector: string;
  privateKeyPem: string;
  /** ms since the epoch; the newest key of a domain signs. */
  createdAt: number;
}

/** A second key under a (domain, selector) already taken: replacing it would break every signature until DNS caught up. */
export class DkimKeyExistsError extends Error {
  override name = 'DkimKeyExistsError';
  constructor(
    readonly domain: string,
    readonly selector: string,
  ) {
    super(`a key for selector ${selector} of ${domain} already exists`);
  }
}

/** What importing a key file found in the store under its name. */
export type DkimImport = 'added' | 'same' | 'different';

/** Both engines: a name already taken holds the same key (white space aside) or another one. */
export const importedOver = (stored: string | undefined, pem: string): DkimImport => (stored?.trim() === pem.trim() ? 'same' : 'different');

export const normDkimKey = (k: DkimKey): DkimKey => ({ ...k, domain: k.domain.toLowerCase(), selector: k.selector.toLowerCase() });

interface Row {
  domain: string;
  selector: string;
  private_key: string;
  created_at: number;
}
export const toDkimKey = (r: Row): DkimKey => ({ domain: r.domain, selector: r.selector, privateKeyPem: r.private_key, createdAt: Number(r.created_at) });

/** DKIM signing keys, shared by every node on the store; never replaced in place. */
export class DkimRepo {
  constructor(private readonly db: Db) {}

  /** Stores a new key; DkimKeyExistsError if its domain already has that selector. */
  add(key: DkimKey): void {
    const k = normDkimKey(key);
    const r = this.db
      .prepare('INSERT INTO dkim_keys (domain, selector, private_key, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING')
      .run(k.domain, k.selector, k.privateKeyPem, k.createdAt);
    if (!r.changes) throw new DkimKeyExistsError(k.domain, k.selector);
  }

  /** Adds a key read from a file unless its name is taken; says whether the stored key is the same. */
  importKey(key: DkimKey): DkimImport {
    const k = normDkimKey(key);
    try {
      this.add(k);
      return 'added';
    } catch (e) {
      if (!(e instanceof DkimKeyExistsError)) throw e;
    }
    const had = this.db.prepare<[string, string], { private_key: string }>('SELECT private_key FROM dkim_keys WHERE domain = ? AND selector = ?').get(k.domain, k.selector);
    return importedOver(had?.private_key, k.privateKeyPem);
  }

  /** The key that signs for `domain`: the newest, ties to the first selector by name. */
  newest(domain: string): DkimKey | null {
    const r = this.db
      .prepare<[string], Row>('SELECT * FROM dkim_keys WHERE domain = ? ORDER BY created_at DESC, selector LIMIT 1')
      .get(domain.toLowerCase());
    return r ? toDkimKey(r) : null;
  }

  /** Every key, by domain, newest first within a domain. */
  list(): DkimKey[] {
    return this.db.prepare<[], Row>('SELECT * FROM dkim_keys ORDER BY domain, created_at DESC, selector').all().map(toDkimKey);
  }
}
