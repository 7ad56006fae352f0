import { AuditRepo } from './audit.js';
import type { Db } from './db.js';
import { dkimSigning } from './sql.js';

/** A DKIM signing key: PKCS#8 PEM, signing mail whose header From is in `domain`. */
export interface DkimKey {
  /** Lower-case A-label domain. */
  domain: string;
  /** Lower-case DNS label: the key is published at SELECTOR._domainkey.DOMAIN. */
  selector: string;
  privateKeyPem: string;
  /** ms since the epoch. */
  createdAt: number;
  /**
   * When `postern dkim activate` (or the import of a key file) made it the domain's signing
   * key, ms since the epoch; null while it was never activated. The key activated last signs.
   */
  activatedAt: number | null;
}

/**
 * signing: signs the domain's mail now (the key activated last); retired: signed before and
 * was replaced, kept so that `dkim activate` can roll back to it; inactive: never activated
 * (made by keygen, waiting for its DNS record).
 */
export type DkimState = 'signing' | 'retired' | 'inactive';

/**
 * Which of two keys of a domain signs rather than the other: the one activated last, then the
 * newer, then the first selector by name (code points, as both engines' ORDER BY). An
 * inactive key never signs.
 */
export function signsBefore(a: DkimKey, b: DkimKey): number {
  if (a.activatedAt === null || b.activatedAt === null) return a.activatedAt === null ? (b.activatedAt === null ? 0 : 1) : -1;
  return b.activatedAt - a.activatedAt || b.createdAt - a.createdAt || (a.selector < b.selector ? -1 : a.selector > b.selector ? 1 : 0);
}

/** Each key's state among the keys given (all of its domain's, as list() returns them). */
export function dkimStates(keys: DkimKey[]): DkimState[] {
  const signing = new Map<string, DkimKey>();
  for (const k of keys) {
    const cur = signing.get(k.domain);
    if (k.activatedAt !== null && (!cur || signsBefore(k, cur) < 0)) signing.set(k.domain, k);
  }
  return keys.map((k) => (signing.get(k.domain) === k ? 'signing' : k.activatedAt === null ? 'inactive' : 'retired'));
}

/** What `activate` found: the switch made (and the selector that signed before), or why not. */
export type DkimActivation = { outcome: 'activated'; previous: string | null; at: number } | { outcome: 'already-signing' } | { outcome: 'not-found' };

/** Who activates, for the audit log; `forced` when the DNS check was overridden. */
export interface DkimActivator {
  actor: string;
  reason: string | null;
  now: number;
  forced: boolean;
}

/**
 * Both engines: the activation time given to a key so that it signs, and its audit entry.
 * Strictly after the domain's last activation, so the key just activated signs even when
 * this node's clock is behind the one that activated the last key.
 */
export function activation(domain: string, selector: string, signing: { selector: string; activated_at: number | string } | undefined, by: DkimActivator) {
  const at = signing ? Math.max(by.now, Number(signing.activated_at) + 1) : by.now;
  const previous = signing?.selector ?? null;
  const audit = { at: by.now, actor: by.actor, action: 'dkim.activate', target: `dkim:${domain}`, detail: { selector, previous, forced: by.forced }, reason: by.reason };
  return { at, previous, audit };
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
  created_at: number | string;
  activated_at: number | string | null;
}
export const toDkimKey = (r: Row): DkimKey => ({
  domain: r.domain,
  selector: r.selector,
  privateKeyPem: r.private_key,
  createdAt: Number(r.created_at),
  activatedAt: r.activated_at === null ? null : Number(r.activated_at),
});

/** DKIM signing keys, shared by every node on the store; never replaced in place. */
export class DkimRepo {
  constructor(private readonly db: Db) {}

  /**
   * Stores a new key (keygen: inactive, activatedAt null; a key file: active as of its date);
   * DkimKeyExistsError if its domain already has that selector.
   */
  add(key: DkimKey): void {
    const k = normDkimKey(key);
    const r = this.db
      .prepare('INSERT INTO dkim_keys (domain, selector, private_key, created_at, activated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
      .run(k.domain, k.selector, k.privateKeyPem, k.createdAt, k.activatedAt);
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

  /** The key that signs for `domain` (see signsBefore); null when none was ever activated. */
  signing(domain: string): DkimKey | null {
    const r = this.db.prepare<[string], Row>(dkimSigning('*', '?', '')).get(domain.toLowerCase());
    return r ? toDkimKey(r) : null;
  }

  /**
   * Makes a key its domain's signing key (audited as dkim.activate on dkim:DOMAIN, in the same
   * transaction). Activating a retired key rolls back to it.
   */
  activate(domain: string, selector: string, by: DkimActivator): DkimActivation {
    const d = domain.toLowerCase();
    const sel = selector.toLowerCase();
    return this.db.transaction((): DkimActivation => {
      if (!this.db.prepare('SELECT 1 FROM dkim_keys WHERE domain = ? AND selector = ?').get(d, sel)) return { outcome: 'not-found' };
      const cur = this.db.prepare<[string], { selector: string; activated_at: number }>(dkimSigning('selector, activated_at', '?', '')).get(d);
      if (cur?.selector === sel) return { outcome: 'already-signing' };
      const a = activation(d, sel, cur, by);
      this.db.prepare('UPDATE dkim_keys SET activated_at = ? WHERE domain = ? AND selector = ?').run(a.at, d, sel);
      new AuditRepo(this.db).record(a.audit);
      return { outcome: 'activated', previous: a.previous, at: a.at };
    })();
  }

  /** Every key, by domain, newest first within a domain. */
  list(): DkimKey[] {
    return this.db.prepare<[], Row>('SELECT * FROM dkim_keys ORDER BY domain, created_at DESC, selector').all().map(toDkimKey);
  }
}
