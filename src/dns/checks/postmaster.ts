import { registeredDomain, sameAddress } from '../names.js';
import { fail, pass, warn, type CheckResult, type DoctorContext, type Found } from './result.js';

/**
 * postmaster@ and abuse@ the names this relay announces. RFC 5321 4.5.1 and RFC 2142: a
 * receiver with a complaint about the relay's mail writes to the name it was given, the HELO
 * name (in every Received: header the relay's mail carries) or the 220 greeting name (which
 * also signs Postern's notices, postmaster@<hostname> by default). Postern takes no inbound
 * mail, so neither a null MX (RFC 7505) nor an address record alone (the implicit MX, RFC
 * 5321 5.1) will do: such a name needs an MX to a host that accepts mail. Names that send
 * nothing and announce nothing (the PTR name) keep their null MX.
 */

export async function addressesOf(c: DoctorContext, name: string): Promise<string[]> {
  const [v4, v6] = await Promise.all([c.dns.addresses(name, 4), c.dns.addresses(name, 6)]);
  return [...v4, ...v6];
}

/** Every address is this relay's own outbound address, where Postern listens for no mail. */
const onlyThisRelay = (c: DoctorContext, addrs: string[]) => c.ip !== null && addrs.length > 0 && addrs.every((a) => sameAddress(a, c.ip!));

const byPriority = <T extends { priority: number }>(l: T[]) => [...l].sort((a, b) => a.priority - b.priority);

/**
 * The inbound MX to suggest: the first usable MX host of the name's registered domain (the
 * same organisation), else of an envelope domain; null when none is known. A suggestion only:
 * a lookup that fails here leaves the placeholder, it fails no check.
 */
async function inboundMx(c: DoctorContext, name: string): Promise<{ host: string; of: string } | null> {
  const owners = [...new Set([registeredDomain(name), ...c.domains])].filter((d): d is string => Boolean(d) && d !== name);
  for (const owner of owners) {
    try {
      for (const m of byPriority(await c.dns.mx(owner))) {
        if (!m.exchange || m.exchange === name) continue;
        const addrs = await addressesOf(c, m.exchange);
        if (addrs.length && !onlyThisRelay(c, addrs)) return { host: m.exchange, of: owner };
      }
    } catch {
      // try the next owner
    }
  }
  return null;
}

/** The MX record to publish for name; MX-HOST stands for a host the doctor cannot know. */
async function mxFix(c: DoctorContext, name: string, nullMx: boolean): Promise<string> {
  const to = await inboundMx(c, name);
  const accept = `postmaster@${name} and abuse@${name}`;
  return [
    ...(nullMx ? [`; remove the null MX (${name}. IN MX 0 .): RFC 7505 allows no other MX beside it`] : []),
    to ? `; ${to.host} receives mail for ${to.of}: have it accept ${accept} too` : `; replace MX-HOST with your organisation's inbound mail host, and have it accept ${accept}`,
    `${name}. IN MX 10 ${to?.host ?? 'MX-HOST'}.`,
  ].join('\n');
}

async function route(c: DoctorContext, id: string, name: string, why: string): Promise<CheckResult> {
  const to = `postmaster@${name} and abuse@${name}`;
  const mx = byPriority(await c.dns.mx(name));
  const hosts = mx.map((m) => m.exchange).filter(Boolean);
  if (mx.length && !hosts.length) {
    return fail(id, name, `null MX (RFC 7505): mail to ${to} is refused, yet ${why}; publish an MX to a host that accepts it`, await mxFix(c, name, true));
  }
  if (!hosts.length) {
    const own = await addressesOf(c, name);
    const got = own.length
      ? `no MX, only an address: mail to ${to} goes to port 25 of ${own.join(', ')} (the implicit MX, RFC 5321 5.1), and Postern takes no inbound mail`
      : `no MX and no address: mail to ${to} bounces`;
    return fail(id, name, `${got}; ${why}: publish an MX to a host that accepts it`, await mxFix(c, name, false));
  }
  const addrs = await Promise.all(hosts.map((h) => addressesOf(c, h)));
  const live = hosts.filter((_, i) => addrs[i]!.length);
  if (!live.length) return fail(id, name, `no MX host (${hosts.join(', ')}) has an address: mail to ${to} bounces, yet ${why}`, await mxFix(c, name, false));
  if (onlyThisRelay(c, addrs.flat())) {
    return warn(
      id,
      name,
      `MX ${live.join(', ')} is this relay's outbound address ${c.ip}, where Postern takes no inbound mail: unless another MTA accepts mail on port 25 there, mail to ${to} is refused`,
      await mxFix(c, name, false),
    );
  }
  return pass(id, name, `mail to ${to} goes to MX ${live.join(', ')}`);
}

export const checkHeloPostmaster = (c: DoctorContext): Promise<CheckResult> =>
  route(c, 'helo.postmaster', c.helo, "receivers write there about this relay's mail (RFC 5321 4.5.1, RFC 2142)");

/** The greeting name, unless it is the HELO name (helo.postmaster already judged it). */
export const checkHostnamePostmaster = (c: DoctorContext): Promise<Found> =>
  c.hostname === c.helo
    ? Promise.resolve(null)
    : route(c, 'hostname.postmaster', c.hostname, `it is the 220 greeting name, and Postern's notices come from postmaster@${c.hostname} unless [notify] from says otherwise`);
