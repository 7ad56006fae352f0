import { existsSync, readFileSync, renameSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** Where they came from, for the start log line. */
  source: 'config' | 'generated' | 'reused';
}

/**
 * The configured certificate, or a self-signed one for the server's hostname made once in
 * the data dir and reused on every later start (clients that pinned it keep working).
 */
export async function loadTls(opts: { cert: string; key: string; dataDir: string; hostname: string }): Promise<TlsMaterial> {
  if (opts.cert) {
    return { cert: readFileSync(opts.cert), key: readFileSync(opts.key), source: 'config' };
  }
  const dir = path.join(opts.dataDir, 'tls');
  const certPath = path.join(dir, 'selfsigned.crt');
  const keyPath = path.join(dir, 'selfsigned.key');
  if (existsSync(certPath) && existsSync(keyPath)) {
    return { cert: readFileSync(certPath), key: readFileSync(keyPath), source: 'reused' };
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Loaded only here: it costs ~15 MB of resident memory, needed once in the data dir's life.
  const { default: selfsigned } = await import('selfsigned');
  const now = new Date();
  const pems = await selfsigned.generate([{ name: 'commonName', value: opts.hostname }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: now,
    notAfterDate: new Date(now.getTime() + 825 * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: opts.hostname }] },
    ],
  });
  // Key first, each via rename, so a crash never leaves a certificate without its key.
  writeFileSync(`${keyPath}.tmp`, pems.private, { mode: 0o600 });
  renameSync(`${keyPath}.tmp`, keyPath);
  writeFileSync(`${certPath}.tmp`, pems.cert, { mode: 0o644 });
  renameSync(`${certPath}.tmp`, certPath);
  return { cert: Buffer.from(pems.cert), key: Buffer.from(pems.private), source: 'generated' };
}
