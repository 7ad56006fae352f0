/**
 * Country codes as bindings use them: ISO 3166-1 alpha-2, upper case, checked against the
 * region names Node.js knows (its ICU data). One check for the CLI, imports and the config's
 * [auth.template].
 */
const REGIONS = new Intl.DisplayNames(['en'], { type: 'region' });

/** What is wrong with `v` as a country code (null: nothing), said for the one who wrote it. */
export function countryProblem(v: string): string | null {
  const c = v.trim().toUpperCase();
  // The IP databases say GB, as ISO 3166-1 does; UK would match nobody.
  if (c === 'UK') return 'the ISO 3166-1 code of the United Kingdom is GB';
  const name = /^[A-Z]{2}$/.test(c) ? REGIONS.of(c) : undefined;
  if (!name || name === c || name === 'Unknown Region') return 'use a two-letter ISO 3166-1 code such as DE, AT or PT';
  // Codes for no one country, which IP data never gives an address: user-assigned ones (AA,
  // QM-QZ, XA-XZ, ZZ; XK, Kosovo's, is kept: the IP databases use it) and groups.
  if (/^(AA|Q[M-Z]|X[A-JL-Z]|ZZ|EU|EZ|UN)$/.test(c)) return `${c} (${name}) is not a country: use a two-letter ISO 3166-1 code such as DE, AT or PT`;
  // Retired codes ICU still names (DD, SU, YU, ZR...): the IP data says the current one.
  const current = Intl.getCanonicalLocales(`und-${c}`)[0]?.split('-')[1];
  if (current && current !== c) return `${c} is a retired code: use ${current} (${REGIONS.of(current) ?? current})`;
  return null;
}
