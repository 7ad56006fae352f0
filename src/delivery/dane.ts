import { createHash, X509Certificate } from 'node:crypto';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type { SecureAnswer } from '../dns/rawquery.js';

/** One TLSA record (RFC 6698): usage, selector, matching type and the association data. */
export interface Tlsa {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

/** What DANE says about one MX host (RFC 7672 section 2.2). */
export type DaneHost =
  /** Secure, usable TLSA records: TLS is required and the certificate must match one. */
  | { kind: 'dane'; records: Tlsa[] }
  /** Secure TLSA records, none usable (PKIX usages 0/1, unknown parameters): TLS required, no authentication. */
  | { kind: 'encrypt' }
  /** No DANE for this host: insecure data, or a secure denial of TLSA records. */
  | { kind: 'none' }
  /** The validating resolver failed (bogus data, SERVFAIL, timeout): the host cannot be used now. */
  | { kind: 'unusable'; reason: string };

export type SecureAsk = (name: string, type: 'MX' | 'A' | 'AAAA' | 'TLSA') => Promise<SecureAnswer>;

/** DANE-TA(2) and DANE-EE(3) with a known selector and matching type: the ones RFC 7672 3.1 says SMTP uses. */
const usable = (r: Tlsa) => (r.usage === 2 || r.usage === 3) && (r.selector === 0 || r.selector === 1) && r.matchingType >= 0 && r.matchingType <= 2;

/**
 * DANE for SMTP (RFC 7672), asked of a validating resolver this host trusts (AD bit). A
 * domain's MX RRset must be secure for DANE to apply at all; then each MX host whose address
 * records are secure has its TLSA records at _25._tcp.HOST looked up: secure and usable,
 * they decide how that host is authenticated.
 */
export class Dane {
  constructor(
    private readonly ask: SecureAsk,
    private readonly port = 25,
  ) {}

  /** Whether the domain's MX records (or, without MX, its address) are DNSSEC-secure; 'bogus' when the resolver failed them. */
  async domain(domain: string, implicitMx: boolean): Promise<'secure' | 'insecure' | 'bogus'> {
    try {
      const a = await this.ask(domain, implicitMx ? 'A' : 'MX');
      // RFC 7672 2.1.1: any failure but NOERROR/NXDOMAIN is a lookup failure, never "insecure".
      if (a.rcode !== 0 && a.rcode !== 3) return 'bogus';
      return a.secure ? 'secure' : 'insecure';
    } catch {
      return 'bogus';
    }
  }

  async host(name: string): Promise<DaneHost> {
    try {
      // RFC 7672 2.2.2: TLSA records count only for a host whose address is itself secure.
      const addr = await this.ask(name, 'A');
      if (addr.rcode !== 0 && addr.rcode !== 3) return { kind: 'unusable', reason: `the address of ${name} failed DNSSEC validation (rcode ${addr.rcode})` };
      if (!addr.secure) return { kind: 'none' };
      const t = await this.ask(`_${this.port}._tcp.${name}`, 'TLSA');
      if (t.rcode !== 0 && t.rcode !== 3) return { kind: 'unusable', reason: `the TLSA records of ${name} failed DNSSEC validation (rcode ${t.rcode})` };
      if (!t.secure) return { kind: 'none' };
      const records = t.answers
        .filter((a) => a.type === 'TLSA')
        .map((a) => {
          const d = a.data as unknown as { usage: number; selector: number; matchingType: number; certificate: Buffer };
          return { usage: d.usage, selector: d.selector, matchingType: d.matchingType, data: Buffer.from(d.certificate) };
        });
      if (!records.length) return { kind: 'none' };
      const good = records.filter(usable);
      return good.length ? { kind: 'dane', records: good } : { kind: 'encrypt' };
    } catch (e) {
      return { kind: 'unusable', reason: `DNSSEC lookup for ${name} failed: ${(e as Error).message}` };
    }
  }
}

function digest(data: Buffer, matchingType: number): Buffer {
  if (matchingType === 1) return createHash('sha256').update(data).digest();
  if (matchingType === 2) return createHash('sha512').update(data).digest();
  return data;
}

function selected(cert: X509Certificate, selector: number): Buffer {
  return selector === 1 ? cert.publicKey.export({ type: 'spki', format: 'der' }) : cert.raw;
}

const matches = (r: Tlsa, cert: X509Certificate) => digest(selected(cert, r.selector), r.matchingType).equals(r.data);

/**
 * Does the chain the server presented (leaf first) satisfy one of the TLSA records (RFC 7672
 * section 3.1)? DANE-EE(3): the leaf matches; its names and dates are not checked. DANE-TA(2):
 * a certificate of the chain matches, the leaf was issued through it, and the leaf is valid
 * for the MX host name. Null when one matches, else why not.
 */
export function daneMismatch(records: Tlsa[], chain: X509Certificate[], mxHost: string, leafPeer: PeerCertificate | null): string | null {
  const leaf = chain[0];
  if (!leaf) return 'the server presented no certificate';
  if (records.some((r) => r.usage === 3 && matches(r, leaf))) return null;
  for (const r of records.filter((x) => x.usage === 2)) {
    const at = chain.findIndex((c) => matches(r, c));
    if (at < 0) continue;
    // Every link from the leaf up to the trust anchor must be a real issue.
    let linked = true;
    for (let i = 0; i < at; i++) if (!chain[i]!.checkIssued(chain[i + 1]!) || !chain[i]!.verify(chain[i + 1]!.publicKey)) linked = false;
    if (!linked) continue;
    if (leafPeer && checkServerIdentity(mxHost, leafPeer) !== undefined) return `the certificate is not valid for ${mxHost}`;
    return null;
  }
  return `no TLSA record of ${mxHost} matches the certificate it presented`;
}
