import { spf } from 'mailauth/lib/spf/index.js';
import { ipMechanism, txtData } from '../names.js';
import { fail, pass, warn, type CheckResult, type DoctorContext } from './result.js';

/** Checks 4 and 5 (SPF part): the HELO name's SPF and each envelope domain's. */

const isSpf = (t: string) => /^v=spf1(\s|$)/i.test(t);
const terms = (record: string) => record.trim().split(/\s+/).slice(1);
const ALL = /^[-~?+]?all$/i;
// RFC 7208 4.6.4: these cost a DNS lookup each; ip4, ip6 and all cost none.
const COSTS_LOOKUP = /^[-~?+]?(include:|a$|a[:/]|mx$|mx[:/]|ptr|exists:|redirect=)/i;

const record = (name: string, value: string) => `${name}. IN TXT ${txtData(value)}`;
const mechanism = (c: DoctorContext) => (c.ip ? ipMechanism(c.ip) : 'ip4:ADDRESS');

/** The record with this relay's address in front and, when asked, ending in -all. */
function amended(c: DoctorContext, existing: string | null, opts: { add: boolean; hardAll: boolean }): string {
  const mech = mechanism(c);
  let list = existing ? terms(existing) : [];
  if (opts.add) list = [mech, ...list.filter((t) => t.toLowerCase() !== mech)];
  if (opts.hardAll) list = list.map((t) => (ALL.test(t) ? '-all' : t));
  if (!list.some((t) => ALL.test(t)) && !list.some((t) => /^redirect=/i.test(t))) list.push('-all');
  return `v=spf1 ${list.join(' ')}`;
}

interface SpfTarget {
  /** 'helo' or 'domain': the id prefix. */
  prefix: string;
  name: string;
  /** The HELO name is used by this relay alone, so anything short of -all is a fault there. */
  strictAll: boolean;
}

export async function checkSpf(c: DoctorContext, t: SpfTarget): Promise<CheckResult[]> {
  const id = (s: string) => `${t.prefix}.spf.${s}`;
  const found = (await c.dns.txt(t.name)).filter(isSpf);
  if (!found.length) {
    return [fail(id('exists'), t.name, `no SPF record: receivers cannot tell that this relay may send as ${t.name}`, record(t.name, amended(c, null, { add: true, hardAll: true })))];
  }
  if (found.length > 1) {
    return [fail(id('exists'), t.name, `${found.length} SPF records: RFC 7208 4.5 makes that a permerror; merge them into one`, record(t.name, amended(c, found[0]!, { add: true, hardAll: t.strictAll })))];
  }
  const rr = found[0]!;
  const out = [pass(id('exists'), t.name, rr)];
  if (c.ip) out.push(await authorises(c, t, rr));
  out.push(endsInAll(c, t, rr));
  return out;
}

// Reserved addresses (240.0.0.0/4, 100::/64 discard) no record lists: evaluating for them walks
// the whole record, as a receiver does for any host the record does not name.
const PROBE = { 4: '240.0.0.1', 6: '100::1' } as const;

async function evaluate(c: DoctorContext, name: string, ip: string) {
  const res = await spf({ sender: `postmaster@${name}`, ip, helo: c.helo || name, mta: c.cfg.server.hostname, resolver: c.dns.raw });
  const detail = (res.status.comment ?? '').replace(/^.*?: (permanent )?error in processing during lookup of \S+: /, '');
  return { result: res.status.result, lookups: res.lookups?.count ?? 0, detail, overLimit: res.status.result === 'permerror' && /too many dns requests/i.test(detail) };
}

function flattenFix(c: DoctorContext, t: SpfTarget, rr: string): string {
  const kept = terms(rr).filter((m) => !COSTS_LOOKUP.test(m) && m.toLowerCase() !== mechanism(c));
  return `; flatten each include: into the ip4:/ip6: ranges it publishes\n${record(t.name, amended(c, `v=spf1 ${kept.join(' ')}`, { add: true, hardAll: false }))}`;
}

async function authorises(c: DoctorContext, t: SpfTarget, rr: string): Promise<CheckResult> {
  const id = `${t.prefix}.spf.authorises`;
  const ip = c.ip!;
  const got = await evaluate(c, t.name, ip);
  if (got.overLimit) {
    return fail(id, t.name, 'evaluating it takes more than the 10 DNS lookups RFC 7208 4.6.4 allows, so receivers get permerror; replace include:s by the ip4:/ip6: ranges they list', flattenFix(c, t, rr));
  }
  if (got.result === 'temperror') return fail(id, t.name, `could not be evaluated (temperror: ${got.detail}); run doctor again`);
  const fix = record(t.name, amended(c, rr, { add: true, hardAll: t.strictAll }));
  if (got.result === 'permerror') return fail(id, t.name, `permerror: ${got.detail}`, fix);
  if (got.result !== 'pass') return fail(id, t.name, `does not authorise ${ip} (SPF ${got.result}): receivers treat this relay's mail as forged`, fix);
  // This relay's address may match before the limit is reached while every other sender of
  // the domain gets permerror, which fails DMARC for the domain's mail as a whole.
  const whole = await evaluate(c, t.name, PROBE[c.family]);
  if (whole.overLimit) {
    return fail(id, t.name, `authorises ${ip}, but evaluating the rest takes more than the 10 DNS lookups RFC 7208 4.6.4 allows: every other sender gets permerror`, flattenFix(c, t, rr));
  }
  return pass(id, t.name, `authorises ${ip} (${got.lookups} of 10 DNS lookups)`);
}

function endsInAll(c: DoctorContext, t: SpfTarget, rr: string): CheckResult {
  const id = `${t.prefix}.spf.all`;
  const list = terms(rr).map((m) => m.toLowerCase());
  const all = list.find((m) => ALL.test(m));
  const redirect = list.find((m) => m.startsWith('redirect='));
  if (!all && redirect) return pass(id, t.name, `the policy continues at ${redirect.slice('redirect='.length)}`);
  if (all === '-all') return pass(id, t.name, 'ends in -all: other hosts are refused');
  const fix = record(t.name, amended(c, rr, { add: false, hardAll: true }));
  if (all === '+all' || all === 'all') return fail(id, t.name, `ends in ${all}: every host on the Internet may send as ${t.name}`, fix);
  const ending = all ?? 'no "all" (neutral)';
  if (t.strictAll) return fail(id, t.name, `ends in ${ending}: only this relay sends as the HELO name, so refuse the rest with -all`, fix);
  return warn(id, t.name, `ends in ${ending}: forged mail is only marked; use -all once every host that sends as ${t.name} is listed`, fix);
}
