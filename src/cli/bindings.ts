import { canonicalNetwork, canonicalSenderBinding, senderAllowed } from '../policy/bindings.js';
import { countryProblem } from '../domain/countries.js';
import { CliError } from './io.js';

/** Validates and canonicalises CLI input for bindings; errors say what was wrong and how to fix it. */
export function networksArg(values: string[]): string[] {
  const out = values.map((v) => {
    try {
      return canonicalNetwork(v);
    } catch (e) {
      throw new CliError(`bad network ${JSON.stringify(v)}: ${(e as Error).message.replace(/^ipaddr: /, '')} (use CIDR like 192.0.2.0/24 or 2001:db8::/32; 0.0.0.0/0 and ::/0 for roaming)`);
    }
  });
  return out;
}

/**
 * "::/0" reads as "everywhere", but no IPv4 client is inside it (a dual-stack listener's
 * ::ffff:192.0.2.7 is judged as 192.0.2.7): the user would be suspended at the first login
 * from an IPv4 network. Bound without 0.0.0.0/0 it is almost always that mistake. Checked
 * when networks are added, against what the principal will then have.
 */
export function refuseV6OnlyEverywhere(adding: string[], after: string[]): void {
  if (adding.includes('::/0') && !after.includes('0.0.0.0/0')) {
    throw new CliError('--network ::/0 matches IPv6 clients only, never an IPv4 one (not even one a dual-stack listener shows as ::ffff:192.0.2.7): to allow every client give both, --network 0.0.0.0/0 --network ::/0');
  }
}

export function sendersArg(values: string[], what = 'sender'): string[] {
  return values.map((v) => {
    const c = canonicalSenderBinding(v);
    if (!c) throw new CliError(`bad ${what} ${JSON.stringify(v)}: use an address (alice@example.com) or @domain (@example.com)`);
    return c;
  });
}

/** Notices to a mailbox the account itself can send as may be read by whoever stole the account. */
export function notifyWarning(name: string, address: string | null, senders: string[]): string | null {
  if (!address) return `warning: ${name} has no notification address: notices of a suspension will reach only the admins (set one with --notify)\n`;
  if (senderAllowed(address, senders)) {
    return `warning: notices for ${name} go to ${address}, one of the account's own senders: whoever holds the account may hold that mailbox too; prefer an address the user reads elsewhere (--notify)\n`;
  }
  return null;
}

/** ISO 3166-1 alpha-2 codes, upper case (domain/countries.ts). */
export function countriesArg(values: string[]): string[] {
  return values.map((v) => {
    const problem = countryProblem(v);
    if (problem) throw new CliError(`bad country ${JSON.stringify(v)}: ${problem}`);
    return v.trim().toUpperCase();
  });
}

/** Autonomous system numbers as stored (decimal strings): "3320" or "AS3320". */
export function asnsArg(values: string[]): string[] {
  return values.map((v) => {
    const m = /^(?:AS)?(\d{1,10})$/i.exec(v.trim());
    const n = m ? Number(m[1]) : NaN;
    if (!(n >= 1 && n <= 4_294_967_295)) throw new CliError(`bad ASN ${JSON.stringify(v)}: use an autonomous system number such as 3320 or AS3320`);
    return String(n);
  });
}
