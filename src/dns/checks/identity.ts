import { isIP } from 'node:net';
import { addressType, hostNameProblem, registeredDomain, reverseName, sameAddress } from '../names.js';
import { fail, info, pass, warn, type CheckResult, type DoctorContext, type Found } from './result.js';

/** Checks 1-3 and 6-8 of `postern doctor`: the names receivers see before the first byte of mail. */

const addressRecord = (name: string, ip: string) => `${name}. IN ${addressType(ip)} ${ip}`;

/** A PTR name to propose: the configured one, unless it looks generic too. */
function proposedPtr(c: DoctorContext): string {
  if (c.cfgPtr && !genericReason(c.cfgPtr, c.ip ?? '')) return c.cfgPtr;
  const domain = registeredDomain(c.ptrSeen ?? '') ?? registeredDomain(c.helo) ?? 'example.com';
  return `mail.${domain}`;
}

/** A HELO name to propose: in the PTR name's registered domain, and not the PTR name. */
function proposedHelo(c: DoctorContext): string {
  const domain = registeredDomain(c.ptrName ?? '') ?? registeredDomain(c.helo.replace(/_/g, '-')) ?? 'example.com';
  const first = c.helo.replace(/_/g, '-').split('.')[0] ?? '';
  const candidates = [/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(first) ? `${first}.${domain}` : '', `mta-out.${domain}`, `helo.${domain}`];
  return candidates.find((n) => n && n !== c.ptrName && !hostNameProblem(n)) ?? `mta-out.${domain}`;
}

export function checkOutboundIp(c: DoctorContext): CheckResult {
  const raw = c.cfg.identity.outbound_ip.trim();
  if (!raw) {
    return fail(
      'identity.outbound_ip',
      '[identity] outbound_ip',
      'not set: set outbound_ip = "ADDRESS" in [identity] to the public address mail leaves from; the PTR, HELO address and SPF checks need it and were skipped',
    );
  }
  if (!isIP(raw)) return fail('identity.outbound_ip', '[identity] outbound_ip', `"${raw}" is not an IPv4 or IPv6 address; the checks that need it were skipped`);
  return pass('identity.outbound_ip', raw, 'the public address mail leaves from');
}

export async function checkPtrExists(c: DoctorContext): Promise<CheckResult> {
  const ip = c.ip!;
  const names = await c.dns.ptr(ip);
  const fix = `${reverseName(ip)}. IN PTR ${proposedPtr(c)}.`;
  if (!names.length) {
    return fail('ptr.exists', ip, `no PTR record: receivers refuse or distrust mail from addresses without reverse DNS (the address's provider publishes it)`, fix);
  }
  if (names.length > 1) return warn('ptr.exists', ip, `${names.length} PTR records (${names.join(', ')}): receivers look at one of them, keep only one`, fix);
  return pass('ptr.exists', ip, `PTR ${names[0]}`);
}

export async function checkPtrForward(c: DoctorContext): Promise<CheckResult> {
  const [ip, name] = [c.ip!, c.ptrSeen!];
  const addrs = await c.dns.addresses(name, c.family);
  if (addrs.some((a) => sameAddress(a, ip))) return pass('ptr.forward', name, `resolves back to ${ip} (forward-confirmed)`);
  const got = addrs.length ? `resolves to ${addrs.join(', ')}, not ${ip}` : `has no ${addressType(ip)} record`;
  return fail('ptr.forward', name, `the PTR name ${got}: receivers require forward-confirmed reverse DNS (FCrDNS)`, addressRecord(name, ip));
}

export function checkPtrMatchesConfig(c: DoctorContext): CheckResult {
  const ip = c.ip!;
  if (!c.cfgPtr) return warn('ptr.matches_config', ip, `[identity] ptr is not set: set ptr = "${c.ptrSeen}" so the HELO checks compare with the name receivers see`);
  if (c.observedPtr.includes(c.cfgPtr)) return pass('ptr.matches_config', ip, `PTR is ${c.cfgPtr}, as [identity] ptr says`);
  return fail(
    'ptr.matches_config',
    ip,
    `PTR is ${c.observedPtr.join(', ')} but [identity] ptr is ${c.cfgPtr}: have the address's provider change the PTR, or correct the config`,
    `${reverseName(ip)}. IN PTR ${c.cfgPtr}.`,
  );
}

// Words that providers put in names of dynamic and residential space; receivers' "generic rDNS"
// rules (Spamhaus PBL-style heuristics) match the same ones.
const GENERIC_WORDS = /(?:^|[^a-z])(a?dsl|xdsl|dyn|dynamic|dhcp|pool|cable|ppp|pppoe|client|clients|static-?ip|dial-?up|broadband|cust|customer)(?=[^a-z]|$)/;

/** Why name looks generic for ip, or null. Only labels left of the registered domain count. */
export function genericReason(name: string, ip: string): string | null {
  const domain = registeredDomain(name);
  const host = domain && name.endsWith(`.${domain}`) ? name.slice(0, -domain.length - 1) : name;
  const word = GENERIC_WORDS.exec(host);
  if (word) return `contains "${word[1]}"`;
  if (isIP(ip) !== 4) return host.includes(ip.replace(/:/g, '-')) ? 'embeds the address' : null;
  const octets = ip.split('.');
  const digits = host.split(/[^0-9]+/).filter(Boolean);
  const hex = octets.map((o) => Number(o).toString(16).padStart(2, '0')).join('');
  const padded = octets.map((o) => o.padStart(3, '0')).join('');
  const bag = [...digits];
  const allOctets = octets.every((o) => {
    const i = bag.indexOf(o);
    if (i >= 0) bag.splice(i, 1);
    return i >= 0;
  });
  const [, , c3, c4] = octets;
  const pairs = digits.some((d, i) => (d === c3 && digits[i + 1] === c4) || (d === c4 && digits[i + 1] === c3));
  if (allOctets || pairs || host.includes(hex) || host.includes(padded)) return 'embeds the address';
  return null;
}

export function checkPtrGeneric(c: DoctorContext): CheckResult {
  const name = c.ptrSeen!;
  const why = genericReason(name, c.ip!);
  if (!why) return pass('ptr.generic', name, 'does not look like a dynamic or residential name');
  return warn(
    'ptr.generic',
    name,
    `the PTR name ${why}, so it looks like dynamic or residential space that many receivers refuse; use a name of its own`,
    `${reverseName(c.ip!)}. IN PTR ${proposedPtr(c)}.`,
  );
}

export function checkHeloSyntax(c: DoctorContext): CheckResult {
  const problem = hostNameProblem(c.helo);
  if (!problem) return pass('helo.syntax', c.helo, 'a fully qualified host name');
  const better = proposedHelo(c);
  return fail(
    'helo.syntax',
    c.helo || '[identity] helo',
    `[identity] helo ${problem}: set it to a name such as ${better}`,
    c.ip ? addressRecord(better, c.ip) : undefined,
  );
}

export async function checkHeloCname(c: DoctorContext): Promise<CheckResult> {
  const target = await c.dns.cname(c.helo);
  if (!target.length) return pass('helo.cname', c.helo, 'not a CNAME');
  return fail(
    'helo.cname',
    c.helo,
    `the HELO name is a CNAME to ${target[0]}: RFC 5321 2.3.5 wants a primary host name with its own address record`,
    c.ip ? addressRecord(c.helo, c.ip) : undefined,
  );
}

export async function checkHeloForward(c: DoctorContext): Promise<CheckResult> {
  const ip = c.ip!;
  const addrs = await c.dns.addresses(c.helo, c.family);
  if (addrs.some((a) => sameAddress(a, ip))) return pass('helo.forward', c.helo, `resolves to ${ip}`);
  const got = addrs.length ? `resolves to ${addrs.join(', ')}, not ${ip}` : `has no ${addressType(ip)} record`;
  return fail('helo.forward', c.helo, `the HELO name ${got}: receivers check that it names the connecting host`, addressRecord(c.helo, ip));
}

export function checkHeloNotPtr(c: DoctorContext): CheckResult {
  if (c.helo !== c.ptrName) return pass('helo.not_ptr', c.helo, `differs from the PTR name ${c.ptrName}`);
  const better = proposedHelo(c);
  return fail(
    'helo.not_ptr',
    c.helo,
    `the HELO name is the PTR name: give the delivering MTA a name of its own in the same domain (the PTR name can then refuse all mail); set [identity] helo = "${better}"`,
    c.ip ? addressRecord(better, c.ip) : undefined,
  );
}

export function checkHeloSameDomain(c: DoctorContext): CheckResult {
  const [mine, theirs] = [registeredDomain(c.helo), registeredDomain(c.ptrName!)];
  if (mine && mine === theirs) return pass('helo.same_domain', c.helo, `in ${mine}, like the PTR name`);
  const better = proposedHelo(c);
  return fail(
    'helo.same_domain',
    c.helo,
    `the HELO name is in ${mine ?? '(no registered domain)'} but the PTR name ${c.ptrName} is in ${theirs}: receivers see two unrelated owners; set [identity] helo = "${better}"`,
    c.ip ? addressRecord(better, c.ip) : undefined,
  );
}

/** Names that are the apex of a registered domain or an envelope domain receive mail: no null MX for them. */
const receivesMail = (c: DoctorContext, name: string) => c.domains.includes(name) || registeredDomain(name) === name;

async function nullMx(c: DoctorContext, id: string, name: string): Promise<Found> {
  if (receivesMail(c, name)) return null;
  const mx = await c.dns.mx(name);
  if (mx.length === 1 && mx[0]!.exchange === '') return pass(id, name, 'null MX: receives no mail (RFC 7505)');
  if (mx.length) return pass(id, name, `receives mail via ${mx.map((m) => m.exchange).join(', ')}`);
  return warn(
    id,
    name,
    'no MX: mail to this name falls back to its A record and queues against a host that takes none; a null MX refuses it at once (RFC 7505)',
    `${name}. IN MX 0 .`,
  );
}

/**
 * The PTR name sends nothing and announces nothing, so it refuses mail. Not when it is also the
 * HELO or greeting name: those must take mail for postmaster@ (helo.postmaster, hostname.postmaster).
 */
export const checkPtrNullMx = (c: DoctorContext) => (c.ptrName === c.helo || c.ptrName === c.hostname ? null : nullMx(c, 'ptr.null_mx', c.ptrName!));

/** The PTR name never sends as an envelope domain: a null SPF lets receivers refuse mail forged from it. */
export async function checkPtrNullSpf(c: DoctorContext): Promise<Found> {
  const name = c.ptrName!;
  if (name === c.helo || c.domains.includes(name)) return null;
  const spf = (await c.dns.txt(name)).filter((t) => /^v=spf1(\s|$)/i.test(t));
  if (spf.length) return pass('ptr.null_spf', name, `SPF ${spf[0]}`);
  return warn('ptr.null_spf', name, 'no SPF: mail forged from this name cannot be refused by SPF; it sends none, so publish a null SPF', `${name}. IN TXT "v=spf1 -all"`);
}

async function hasAddress(c: DoctorContext, name: string): Promise<boolean> {
  const [v4, v6] = await Promise.all([c.dns.addresses(name, 4), c.dns.addresses(name, 6)]);
  return v4.length + v6.length > 0;
}

/** RFC 5321 4.5.1 and RFC 2142: receivers write to postmaster@ and abuse@ of the HELO's domain about problems. */
export async function checkPostmaster(c: DoctorContext): Promise<Found> {
  const domain = registeredDomain(c.helo);
  // A HELO name that is its registered domain is judged, more strictly, by helo.postmaster.
  if (!domain || domain === c.helo) return null;
  const subject = domain;
  const fix = `; an MX host that accepts mail for postmaster@${domain} and abuse@${domain}\n${domain}. IN MX 10 mx.${domain}.`;
  const mx = await c.dns.mx(domain);
  const hosts = mx.map((m) => m.exchange).filter(Boolean);
  if (mx.length && !hosts.length) return fail('postmaster.route', subject, `${domain} has a null MX: mail to postmaster@ and abuse@ (receivers' complaints) is refused`, fix);
  if (hosts.length) {
    const reachable = await Promise.all(hosts.map((h) => hasAddress(c, h)));
    if (reachable.some(Boolean)) return pass('postmaster.route', subject, `postmaster@ and abuse@ are routable via MX ${hosts.join(', ')}`);
    return fail('postmaster.route', subject, `no MX host of ${domain} (${hosts.join(', ')}) has an address: mail to postmaster@ and abuse@ bounces`, fix);
  }
  if (await hasAddress(c, domain)) return pass('postmaster.route', subject, `postmaster@ and abuse@ are routable via the domain's address (implicit MX, RFC 5321 5.1)`);
  return fail('postmaster.route', subject, `${domain} has no MX and no address: mail to postmaster@ and abuse@ (receivers' complaints) bounces`, fix);
}

/** Client SMTP Authorization (draft-ietf-marid-csv-csa): weight 2 says "this host may send". */
export async function checkCsa(c: DoctorContext): Promise<CheckResult> {
  const at = `_client._smtp.${c.helo}`;
  const fix = `${at}. IN SRV 1 2 0 ${c.helo}.`;
  const srv = await c.dns.srv(at);
  if (srv.some((s) => s.priority === 1 && s.weight === 2)) return pass('helo.csa', at, 'CSA SRV authorises this host');
  if (srv.length) return info('helo.csa', at, `CSA SRV present but not "1 2" (authorised): ${srv.map((s) => `${s.priority} ${s.weight}`).join(', ')}`, fix);
  return info('helo.csa', at, 'no CSA SRV record; few receivers use it', fix);
}

export async function checkRp(c: DoctorContext): Promise<CheckResult> {
  const rp = await c.dns.rp(c.helo);
  if (rp.length) return pass('helo.rp', c.helo, `RP ${rp[0]!.mbox}`);
  const domain = registeredDomain(c.helo) ?? c.helo;
  return info('helo.rp', c.helo, 'no RP record naming who runs this host; optional, read by people chasing abuse', `${c.helo}. IN RP postmaster.${domain}. .`);
}
