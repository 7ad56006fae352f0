import ipaddr from 'ipaddr.js';

/** IPv4-mapped IPv6 (::ffff:192.0.2.7) is the IPv4 client it stands for. */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/**
 * The unit a per-client limit counts: the IPv4 address, or the IPv6 /64, since one host can
 * hold a whole /64 and rotate through it. The /64 is taken from the parsed address, never
 * from its text: "2001:db8::1" and "2001:db8:0:0:ffff::2" are one /64 however each is
 * written. Connection caps and the password-guessing brake both key on this, so an address
 * cannot be one client for one and many for the other.
 */
export function clientKey(ip: string): string {
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.process(ip);
  } catch {
    // Not an address (a unix socket, a test double): the text is the only key there is.
    return ip;
  }
  if (a.kind() === 'ipv4') return a.toString();
  return `${(a as ipaddr.IPv6).parts.slice(0, 4).map((p) => p.toString(16)).join(':')}::/64`;
}
