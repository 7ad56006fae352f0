import { existsSync, readFileSync, renameSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

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
  const pems = await generateInWorker(opts.hostname);
  // Key first, each via rename, so a crash never leaves a certificate without its key.
  writeFileSync(`${keyPath}.tmp`, pems.private, { mode: 0o600 });
  renameSync(`${keyPath}.tmp`, keyPath);
  writeFileSync(`${certPath}.tmp`, pems.cert, { mode: 0o644 });
  renameSync(`${certPath}.tmp`, certPath);
  return { cert: Buffer.from(pems.cert), key: Buffer.from(pems.private), source: 'generated' };
}

// Runs in a worker thread: selfsigned and its X.509 libraries are ~8 MB resident once loaded,
// needed once in the data dir's life, and a worker's modules go when the worker ends.
const GENERATE = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.lib).then(async ({ default: selfsigned }) => {
  const now = new Date();
  const pems = await selfsigned.generate([{ name: 'commonName', value: workerData.hostname }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: now,
    notAfterDate: new Date(now.getTime() + 825 * 86400000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: workerData.hostname }] },
    ],
  });
  parentPort.postMessage({ cert: pems.cert, private: pems.private });
});
`;

function generateInWorker(hostname: string): Promise<{ cert: string; private: string }> {
  const lib = pathToFileURL(createRequire(import.meta.url).resolve('selfsigned')).href;
  return new Promise((resolve, reject) => {
    const w = new Worker(GENERATE, { eval: true, workerData: { hostname, lib } });
    w.once('message', (m: { cert: string; private: string }) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`certificate generation ended (exit ${code}) without a certificate`)));
  });
}
