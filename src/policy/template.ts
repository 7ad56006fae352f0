import { USERNAME_RE } from '../domain/names.js';
import { canonicalNetwork, canonicalSenderBinding } from './bindings.js';

/** [auth.template]: what a directory user's first login gets. */
export interface ProvisionTemplate {
  senders: string[];
  networks: string[];
  countries: string[];
  asns: (string | number)[];
}

export interface ProvisionedBindings {
  senders: string[];
  networks: string[];
  countries: string[];
  asns: string[];
}

/**
 * The template's bindings for one login name ("{user}" is the name, "{localpart}" and
 * "{domain}" its halves around the last "@"), or why they cannot be made. `config check`
 * runs this with a sample name, so a template that could never work stops the start.
 */
export function templateFor(t: ProvisionTemplate, name: string): ProvisionedBindings | { problem: string } {
  if (!USERNAME_RE.test(name)) return { problem: `the name ${JSON.stringify(name)} is not one Postern's users can have` };
  const at = name.lastIndexOf('@');
  const vars: Record<string, string> = { user: name, localpart: at < 0 ? name : name.slice(0, at), domain: at < 0 ? '' : name.slice(at + 1) };
  const senders: string[] = [];
  for (const pattern of t.senders) {
    const unknown = /\{(?!user\}|localpart\}|domain\})[^}]*\}/.exec(pattern);
    if (unknown) return { problem: `sender ${JSON.stringify(pattern)} names ${unknown[0]}: use {user}, {localpart} or {domain}` };
    const value = pattern.replace(/\{(user|localpart|domain)\}/g, (_, k: string) => vars[k]!);
    const c = canonicalSenderBinding(value);
    if (!c) return { problem: `sender ${JSON.stringify(pattern)} gives ${JSON.stringify(value)} for ${name}, not an address or @domain` };
    senders.push(c);
  }
  if (!senders.length) return { problem: 'the template has no senders' };
  const networks = t.networks.map((n) => canonicalNetwork(n));
  const countries = t.countries.map((c) => c.toUpperCase());
  const asns = t.asns.map((a) => String(Number(String(a).replace(/^AS/i, ''))));
  if (!networks.length && !countries.length && !asns.length) return { problem: 'the template has no networks, countries or asns' };
  return { senders: [...new Set(senders)], networks, countries, asns };
}
