import { networkAllowed } from './bindings.js';

/**
 * Where a login may come from: CIDRs, and for people who travel, the countries they work in
 * and the networks (autonomous systems) of the providers they use. Pure: the caller reads the
 * bindings from the store and hands in the IP database once it is loaded.
 */
export interface LoginPlaces {
  networks: string[];
  /** ISO 3166-1 alpha-2, upper case. */
  countries: string[];
  /** Autonomous system numbers, as decimal strings (as stored). */
  asns: string[];
}

/** Where an address is, as the IP database places it (all null: not placed). */
export interface Place {
  country: string | null;
  asn: number | null;
  org: string | null;
}

export interface Placer {
  lookup(ip: string): Place;
}

export const NO_PLACES: LoginPlaces = { networks: [], countries: [], asns: [] };

/** The places among a principal's bindings (its senders and recipients left out). */
export function placesOf(bindings: ReadonlyArray<{ kind: string; value: string }>): LoginPlaces {
  const of = (k: string) => bindings.filter((b) => b.kind === k).map((b) => b.value);
  return { networks: of('network'), countries: of('country'), asns: of('asn') };
}

/** Anything bound at all: a principal with nothing bound cannot log in from anywhere. */
export const placesBound = (p: LoginPlaces) => p.networks.length + p.countries.length + p.asns.length > 0;

/** Bindings that need the IP database to be judged. */
export const needsGeo = (p: LoginPlaces) => p.countries.length + p.asns.length > 0;

/**
 * Is the client inside one of the places? A CIDR decides alone; otherwise the address's country
 * or AS must be bound. An address the database does not place (private ranges, unknown) matches
 * only CIDRs, and so does every address while no database is at hand (`geo` null).
 */
export function placeAllowed(clientIp: string, p: LoginPlaces, geo: Placer | null): boolean {
  if (networkAllowed(clientIp, p.networks)) return true;
  if (!needsGeo(p) || !geo) return false;
  const at = geo.lookup(clientIp);
  return (at.country !== null && p.countries.includes(at.country)) || (at.asn !== null && p.asns.includes(String(at.asn)));
}

const APP_PASSWORD_MARK = '; app password ';

/**
 * A refused login's incident detail: where it came from, and the app password used, if any
 * ("203.0.113.9, FR, AS16276 OVH; app password phone"). loginDetailParts reads it back.
 */
export const loginDetail = (place: string, appLabel: string | null) => (appLabel ? `${place}${APP_PASSWORD_MARK}${appLabel}` : place);

export function loginDetailParts(detail: string): { place: string; appLabel: string | null } {
  const at = detail.lastIndexOf(APP_PASSWORD_MARK);
  return at === -1 ? { place: detail, appLabel: null } : { place: detail.slice(0, at), appLabel: detail.slice(at + APP_PASSWORD_MARK.length) };
}

/** "203.0.113.9, FR, AS16276 OVH": the address and what is known of it. */
export function describePlace(ip: string, at: Place | null): string {
  if (!at) return ip;
  return [ip, at.country, at.asn !== null ? `AS${at.asn}${at.org ? ` ${at.org}` : ''}` : null].filter(Boolean).join(', ');
}
