import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { Store } from '../store/index.js';
import { signsBefore, type DkimKey } from '../store/dkim.js';
import path from 'node:path';
import type { Config } from '../config/schema.js';

/** A DNS label, as a DKIM selector and each label of a signing domain must be. */
export const DKIM_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;
export const isDkimDomain = (d: string) => d.length <= 253 && d.includes('.') && d.split('.').every((l) => DKIM_LABEL.test(l));

/**
 * DKIM keys live in the store (every node signs with the same keys). Files at
 * data_dir/dkim/<domain>/<selector>.key (PKCS#8 PEM), where keys lived before, are imported on
 * start (delivery/dkim.ts importDkimFiles).
 */
export const dkimDir = (dataDir: string) => path.join(dataDir, 'dkim');

/** A key file under data_dir/dkim, read: the key, or why it cannot be used. */
export type DkimFile = { path: string; domain: string; selector: string; mtime: number } & ({ pem: string } | { error: string });

/** Every data_dir/dkim/<domain>/<selector>.key file (the layout keygen wrote before keys moved to the store). */
export function readDkimFiles(dataDir: string): DkimFile[] {
  const root = dkimDir(dataDir);
  if (!existsSync(root)) return [];
  const out: DkimFile[] = [];
  // What cannot be read is reported, never fatal: an unreadable directory or a dangling link
  // under data_dir/dkim must not keep the relay from starting.
  const list = (dir: string): string[] => {
    try {
      return readdirSync(dir).sort();
    } catch {
      return [];
    }
  };
  for (const domain of list(root)) {
    const dir = path.join(root, domain);
    if (!isDkimDomain(domain)) continue;
    for (const f of list(dir)) {
      const selector = /^([a-z0-9-]+)\.key$/i.exec(f)?.[1];
      if (!selector || !DKIM_LABEL.test(selector)) continue;
      const file = path.join(dir, f);
      const base = { path: file, domain: domain.toLowerCase(), selector: selector.toLowerCase(), mtime: 0 };
      try {
        base.mtime = Math.floor(statSync(file).mtimeMs);
        const pem = readFileSync(file, 'utf8');
        createPrivateKey(pem);
        out.push({ ...base, pem });
      } catch (e) {
        out.push({ ...base, error: (e as Error).message });
      }
    }
  }
  return out;
}

/** A DKIM key the doctor checks: the one that signs for a domain, or one staged to sign next. */
export interface LocalDkimKey {
  domain: string;
  selector: string;
  /**
   * signing (also when absent): mail is signed with it, its record must be published;
   * inactive: made by keygen after the signing key was activated, waiting for its record and
   * `postern dkim activate`.
   */
  state?: 'signing' | 'inactive';
  /** Where it is, for messages: "the store" or a key file not imported yet. */
  path: string;
  /** The public half, or why the key could not be read as a private key. */
  key: { publicKey: KeyObject } | { error: string };
}

/** The submission certificate, as serve would load it. */
export type LocalCertificate =
  | { state: 'none'; path: string }
  | { state: 'unreadable'; path: string; error: string }
  | { state: 'loaded'; path: string; pem: string; selfSigned: boolean };

/** A key of the store as the doctor's DKIM check takes it (`dkim activate` checks one so). */
export function storedDkimKey(k: DkimKey): LocalDkimKey {
  return { domain: k.domain, selector: k.selector, state: k.activatedAt === null ? 'inactive' : 'signing', path: `the key of selector ${k.selector} in the store`, key: publicHalf(k.privateKeyPem) };
}

function publicHalf(pem: string): LocalDkimKey['key'] {
  try {
    return { publicKey: createPublicKey(createPrivateKey(pem)) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/**
 * For each domain, the key Postern signs with, as the signer will see it, then the keys staged
 * to sign next. The signing key is the one activated last among the store's keys and the
 * data_dir/dkim files the next start imports (activated as of their modification time; a
 * file whose name the store already has is not imported, so the stored key is the one
 * checked). Staged: inactive keys made after the signing key was activated (an older inactive
 * key was passed over and is not checked).
 */
export async function readDkimKeys(store: Pick<Store, 'dkim'>, dataDir: string, domains: string[]): Promise<LocalDkimKey[]> {
  const stored = await store.dkim.list();
  const have = new Set(stored.map((k) => `${k.selector}._domainkey.${k.domain}`));
  const candidates = [
    ...stored.map((k) => ({ ...k, path: `the key of selector ${k.selector} in the store`, key: () => publicHalf(k.privateKeyPem) })),
    ...readDkimFiles(dataDir)
      .filter((f) => !have.has(`${f.selector}._domainkey.${f.domain}`))
      .map((f) => ({
        domain: f.domain,
        selector: f.selector,
        createdAt: f.mtime,
        activatedAt: f.mtime,
        privateKeyPem: '',
        path: `${f.path} (imported at the next start)`,
        key: () => ('error' in f ? { error: f.error } : publicHalf(f.pem)),
      })),
  ];
  return domains.flatMap((d): LocalDkimKey[] => {
    const mine = candidates.filter((k) => k.domain === d.toLowerCase());
    const signing = mine.filter((k) => k.activatedAt !== null).sort(signsBefore)[0];
    const since = signing?.activatedAt ?? -Infinity;
    const staged = mine.filter((k) => k.activatedAt === null && k.createdAt > since).sort((a, b) => b.createdAt - a.createdAt || (a.selector < b.selector ? -1 : 1));
    return [
      ...(signing ? [{ domain: signing.domain, selector: signing.selector, state: 'signing' as const, path: signing.path, key: signing.key() }] : []),
      ...staged.map((k) => ({ domain: k.domain, selector: k.selector, state: 'inactive' as const, path: k.path, key: k.key() })),
    ];
  });
}

/** [tls] cert, else the self-signed one serve makes in data_dir/tls on first start. */
export function readCertificate(cfg: Config): LocalCertificate {
  const selfSigned = !cfg.tls.cert;
  const file = cfg.tls.cert || path.join(cfg.server.data_dir, 'tls', 'selfsigned.crt');
  if (selfSigned && !existsSync(file)) return { state: 'none', path: file };
  try {
    return { state: 'loaded', path: file, pem: readFileSync(file, 'utf8'), selfSigned };
  } catch (e) {
    return { state: 'unreadable', path: file, error: (e as Error).message };
  }
}
