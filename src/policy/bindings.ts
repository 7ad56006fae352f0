import ipaddr from 'ipaddr.js';
import { domainToASCII, domainToUnicode } from 'node:url';

/**
 * Pure matching of a client address and an envelope sender against a principal's bindings.
 * No I/O: callers read the bindings from the store and act on the answer (house rule 2).
 */

export type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** "192.0.2.0/24", "2001:db8::/32", or a bare address (a /32 or /128). Throws on anything else. */
export function parseNetwork(spec: string): Cidr {
  const s = spec.trim();
  if (s.includes('/')) {
    const [addr, bits] = ipaddr.parseCIDR(s);
    // "192.0.2.7/24" is almost always a typo for the network; refuse rather than guess.
    const net = ipaddr.parseCIDR(`${networkAddress(addr, bits)}/${bits}`)[0];
    if (net.toString() !== addr.toString()) {
      throw new Error(`${spec} has host bits set; did you mean ${networkAddress(addr, bits)}/${bits}?`);
    }
    return unmapped(addr, bits);
  }
  const addr = ipaddr.parse(s);
  return unmapped(addr, addr.kind() === 'ipv4' ? 32 : 128);
}

/**
 * An IPv4-mapped network (::ffff:192.0.2.0/120) is the IPv4 network it stands for. Clients
 * are judged as IPv4 (a dual-stack listener's ::ffff:192.0.2.7 is 192.0.2.7), so a binding
 * kept in mapped form would never match anyone; stored rows written before this are read
 * the same way.
 */
function unmapped(addr: ipaddr.IPv4 | ipaddr.IPv6, bits: number): Cidr {
  if (addr.kind() === 'ipv6' && bits >= 96 && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96];
  }
  return [addr, bits];
}

function networkAddress(addr: ipaddr.IPv4 | ipaddr.IPv6, bits: number): string {
  const bytes = addr.toByteArray();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i]! &= keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

/** The canonical text of a network as stored: "192.0.2.0/24", "2001:db8::/32". */
export function canonicalNetwork(spec: string): string {
  const [addr, bits] = parseNetwork(spec);
  return `${addr.toString()}/${bits}`;
}

/**
 * Stored networks, parsed: ipaddr.js takes some 25 µs to parse an IPv6 CIDR (and checks the
 * host bits on top), which every login paid for every network of its user. A stored binding is
 * canonical text, so its parse never changes; the map is bounded and simply starts over.
 */
const parsed = new Map<string, Cidr | null>();

function storedNetwork(n: string): Cidr | null {
  let cidr = parsed.get(n);
  if (cidr === undefined) {
    try {
      cidr = parseNetwork(n);
    } catch {
      cidr = null;
    }
    if (parsed.size >= 10_000) parsed.clear();
    parsed.set(n, cidr);
  }
  return cidr;
}

/** Is the client inside one of the networks? IPv4-mapped IPv6 clients match IPv4 networks. */
export function networkAllowed(clientIp: string, networks: string[]): boolean {
  if (!networks.length) return false;
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.process(clientIp);
  } catch {
    return false;
  }
  for (const n of networks) {
    const cidr = storedNetwork(n);
    if (cidr && ip.kind() === cidr[0].kind() && ip.match(cidr)) return true;
  }
  return false;
}

/**
 * Networks that say where a user is, not merely that the user may be anywhere: at most an
 * IPv4 /8 or an IPv6 /32. A roaming user bound to 0.0.0.0/0 and ::/0 is "inside" everywhere,
 * so a brake that spares clients inside a user's networks must not spare those.
 */
export function narrowNetworks(networks: string[]): string[] {
  return networks.filter((n) => {
    try {
      const [addr, bits] = parseNetwork(n);
      return bits >= (addr.kind() === 'ipv4' ? 8 : 32);
    } catch {
      return false;
    }
  });
}

/**
 * A domain in lower-case A-label form (IDN U-labels converted), or null when it is not one.
 * Strict: a name that UTS46 would have to change to get there (full-width letters, a soft
 * hyphen, a Kelvin sign, a decomposed accent) is refused, never mapped silently; otherwise
 * what was checked (the mapped form) and what is relayed (the bytes as sent) would be two
 * different names. ASCII case is no change: domains are case-blind.
 */
export function asciiDomain(domain: string): string | null {
  const d = domain.trim().replace(/\.$/, '');
  const lower = d.toLowerCase();
  const a = domainToASCII(lower);
  if (!a || !/^[a-z0-9.-]+$/.test(a)) return null;
  // ASCII in, ASCII out: an LDH name or an A-label that decodes to a valid U-label.
  if (!NON_ASCII.test(d)) return a === lower ? a : null;
  return d.normalize('NFKC') === d && domainToUnicode(a) === lower ? a : null;
}

const NON_ASCII = /[^\x00-\x7f]/;
// Invisible (soft hyphen, zero-width joiners, bidi controls) or control characters, and the
// replacement character invalid UTF-8 decodes to: a mailbox name nobody can read as it is.
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Cc}\ufffd]/u;

/** A local part that is what it looks like: NFKC leaves it unchanged and nothing in it is invisible. */
export function normalLocalPart(local: string): boolean {
  return !NON_ASCII.test(local) || (local.normalize('NFKC') === local && !INVISIBLE.test(local));
}

/**
 * The comparison form of an address: local part lower-cased (mailbox names are case-blind
 * in practice, and a binding that failed on "Alice@" would only teach admins to add both),
 * domain in A-label form. Null for the empty sender, anything without a domain, and any
 * address not in normal form (see asciiDomain and normalLocalPart): such an address matches
 * no binding.
 */
export function canonicalAddress(address: string): string | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  const local = address.slice(0, at);
  if (!normalLocalPart(local)) return null;
  const domain = asciiDomain(address.slice(at + 1));
  return domain ? `${local.toLowerCase()}@${domain}` : null;
}

export type EnvelopeForm = { ok: true; address: string } | { ok: false; problem: 'not-normal' | 'needs-smtputf8' };

/**
 * The one form an envelope address is checked, stored and relayed in: the local part as the
 * client wrote it (its case may matter to the receiver), the domain as a lower-case A-label
 * (valid for every next hop, SMTPUTF8 or not). Refused instead of mapped: an address not in
 * normal form, and a non-ASCII local part without SMTPUTF8 (RFC 6531 section 3.4). The null
 * sender, the domainless postmaster and address literals pass as they are.
 */
export function envelopeAddress(address: string, smtputf8: boolean): EnvelopeForm {
  const at = address.lastIndexOf('@');
  if (at <= 0) return { ok: true, address };
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (!normalLocalPart(local)) return { ok: false, problem: 'not-normal' };
  if (NON_ASCII.test(local) && !smtputf8) return { ok: false, problem: 'needs-smtputf8' };
  if (domain.startsWith('[')) return { ok: true, address };
  const a = asciiDomain(domain);
  return a ? { ok: true, address: `${local}@${a}` } : { ok: false, problem: 'not-normal' };
}

/** A sender binding as stored: an exact canonical address, or "@domain" for the whole domain. */
export function canonicalSenderBinding(spec: string): string | null {
  if (spec.startsWith('@')) {
    const d = asciiDomain(spec.slice(1));
    return d ? `@${d}` : null;
  }
  return canonicalAddress(spec);
}

/** Is this envelope sender one of the bound senders? The empty sender (<>) never is. */
export function senderAllowed(mailFrom: string, senders: string[]): boolean {
  const addr = canonicalAddress(mailFrom);
  if (!addr) return false;
  const domain = addr.slice(addr.lastIndexOf('@'));
  return senders.some((s) => s === addr || s === domain);
}
