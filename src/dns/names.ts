import { BlockList, isIP } from 'node:net';
import { getDomain } from 'tldts';
import { HOSTNAME_RE } from '../config/schema.js';

/** Lower case without the root dot: how names are compared and printed here. */
export const normName = (n: string): string => n.trim().toLowerCase().replace(/\.$/, '');

/**
 * The registered domain (public suffix + one label). Private suffixes count: two customers of
 * one cloud's compute-1.amazonaws.com are different registrants, and receivers treat them so.
 */
export function registeredDomain(name: string): string | null {
  return getDomain(normName(name), { allowPrivateDomains: true }) ?? null;
}

/** The PTR owner name of an IPv4 or IPv6 address (in-addr.arpa / ip6.arpa). */
export function reverseName(ip: string): string {
  if (isIP(ip) === 6) {
    const parts = ip.toLowerCase().split('::');
    const head = parts[0] ? parts[0].split(':') : [];
    const tail = parts.length > 1 && parts[1] ? parts[1].split(':') : [];
    const groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
    const nibbles = groups.map((g) => g.padStart(4, '0')).join('');
    return `${nibbles.split('').reverse().join('.')}.ip6.arpa`;
  }
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

/** The zone-file type of an address record for ip. */
export const addressType = (ip: string): 'A' | 'AAAA' => (isIP(ip) === 6 ? 'AAAA' : 'A');

/** The SPF mechanism naming exactly ip. */
export const ipMechanism = (ip: string): string => (isIP(ip) === 6 ? `ip6:${ip}` : `ip4:${ip}`);

/**
 * Why name cannot be an EHLO argument, or null. RFC 5321 2.3.5 wants a fully qualified
 * primary host name; RFC 1123 host names have no underscore (receivers that check HELO
 * syntax reject "mta_out"), and an all-numeric last label is an address, not a name.
 */
export function hostNameProblem(name: string): string | null {
  if (!name) return 'is empty';
  if (isIP(name)) return 'is an IP address, not a name';
  if (name.includes('_')) return 'contains "_", which host names may not (RFC 1123)';
  if (!HOSTNAME_RE.test(name)) return 'is not a valid host name (letters, digits, hyphens in dot-separated labels)';
  const labels = name.split('.');
  if (labels.length < 2) return 'is not fully qualified (needs a domain, e.g. mta-out.example.com)';
  if (/^\d+$/.test(labels[labels.length - 1]!)) return 'ends in a numeric label';
  return null;
}

/** A TXT value in zone-file syntax: quoted, split into strings of at most 255 bytes (RFC 1035 3.3.14). */
export function txtData(value: string): string {
  const chunks = value.match(/[\s\S]{1,255}/g) ?? [''];
  return chunks.map((c) => `"${c.replace(/["\\]/g, '\\$&')}"`).join(' ');
}

/** Address equality that ignores IPv6 spelling (2001:db8::1 vs 2001:0db8:0:0:0:0:0:1). */
export function sameAddress(a: string, b: string): boolean {
  const family = isIP(a);
  if (!family || family !== isIP(b)) return false;
  const list = new BlockList();
  list.addAddress(a, family === 6 ? 'ipv6' : 'ipv4');
  return list.check(b, family === 6 ? 'ipv6' : 'ipv4');
}
