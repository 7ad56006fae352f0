import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * A throwaway certificate authority made with the openssl command (Debian's openssl), and
 * certificates it issues for given DNS names: what verified delivery and MTA-STS policy
 * fetches check against, trusted through [delivery] tls_ca_file.
 */
export interface TestCa {
  /** The CA certificate's PEM file, for tls_ca_file. */
  caFile: string;
  issue(names: string[]): { key: string; cert: string };
}

export function makeTestCa(dir: string): TestCa {
  const caKey = path.join(dir, 'ca.key');
  const caFile = path.join(dir, 'ca.crt');
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', caKey, '-out', caFile, '-days', '2', '-subj', '/CN=Postern Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  let n = 0;
  return {
    caFile,
    issue(names) {
      const base = path.join(dir, `leaf-${++n}`);
      const ext = `${base}.ext`;
      writeFileSync(ext, `subjectAltName=${names.map((x) => `DNS:${x}`).join(',')}\nextendedKeyUsage=serverAuth\n`);
      ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${names[0]}`);
      ossl('x509', '-req', '-in', `${base}.csr`, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-out', `${base}.crt`, '-days', '2', '-extfile', ext);
      return { key: readFileSync(`${base}.key`, 'utf8'), cert: readFileSync(`${base}.crt`, 'utf8') };
    },
  };
}
