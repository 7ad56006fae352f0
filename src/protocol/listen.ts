/** "[::]:587" -> { host: "::", port: 587 }; "127.0.0.1:0" -> an ephemeral port (tests). */
export function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec);
  if (!m) throw new Error(`bad listen address ${spec}`);
  const port = Number(m[3]);
  if (port > 65_535) throw new Error(`bad port in ${spec}`);
  return { host: m[1] ?? m[2]!, port };
}

/** IPv4-mapped IPv6 (::ffff:192.0.2.7) is the IPv4 client it stands for. */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/**
 * The unit a per-client limit counts: the address, or for IPv6 its /64, since one host can
 * hold a whole /64 and rotate through it.
 */
export function clientKey(ip: string): string {
  const v = normalizeIp(ip);
  if (!v.includes(':')) return v;
  const [head = '', tail = ''] = v.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = v.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '').toLowerCase()).join(':')}::/64`;
}
