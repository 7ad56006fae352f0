import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema.js';

/** A DKIM private key on disk: data_dir/dkim/<domain>/<selector>.key (the layout `postern dkim keygen` writes). */
export interface LocalDkimKey {
  domain: string;
  selector: string;
  path: string;
  /** The public half, or why the file could not be read as a private key. */
  key: { publicKey: KeyObject } | { error: string };
}

/** The submission certificate, as serve would load it. */
export type LocalCertificate =
  | { state: 'none'; path: string }
  | { state: 'unreadable'; path: string; error: string }
  | { state: 'loaded'; path: string; pem: string; selfSigned: boolean };

export const dkimDir = (dataDir: string, domain: string) => path.join(dataDir, 'dkim', domain.toLowerCase());

function readKey(file: string): LocalDkimKey['key'] {
  try {
    return { publicKey: createPublicKey(createPrivateKey(readFileSync(file))) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/**
 * The key Postern signs with for each domain: like the signer (src/delivery/dkim.ts), the
 * newest selector file wins, so a freshly generated selector is what the doctor checks.
 */
export function readDkimKeys(dataDir: string, domains: string[]): LocalDkimKey[] {
  return domains.flatMap((domain) => {
    const dir = dkimDir(dataDir, domain);
    if (!existsSync(dir)) return [];
    const newest = readdirSync(dir)
      .filter((f) => /^[a-z0-9-]+\.key$/i.test(f))
      .map((f) => ({ f, mtime: statSync(path.join(dir, f)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime || a.f.localeCompare(b.f))[0];
    if (!newest) return [];
    const file = path.join(dir, newest.f);
    return [{ domain, selector: newest.f.slice(0, -'.key'.length), path: file, key: readKey(file) }];
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
