import { geoDataDates } from '../../geo/index.js';
import { fail, pass, warn, type CheckResult, type DoctorContext } from './result.js';

/** The IP database behind country and ASN bindings: is its data recent? */

const DAY = 86_400_000;
// Address blocks change hands and providers renumber; ip-location-db and MaxMind publish
// daily to weekly. A quarter-old database misplaces enough addresses to lock travellers out.
export const GEO_STALE_DAYS = 90;

const HALVES = [
  { key: 'country_db', what: 'country', mmdb: 'GeoLite2-Country.mmdb' },
  { key: 'asn_db', what: 'ASN', mmdb: 'GeoLite2-ASN.mmdb' },
] as const;

/** Is any [geo] path set? Then the admin means to use the data, whatever the bindings. */
export const geoConfigured = (geo: DoctorContext['cfg']['geo']): boolean => [geo.country_db, geo.asn_db].some((v) => (typeof v === 'string' ? v !== '' : v.length > 0));

/**
 * One row per half (country, ASN), by the data's date: the bundled package's build time, an
 * mmdb file's build epoch, a CSV file's mtime. Nothing is loaded. The bundled data cannot be
 * refreshed with npm (ip-location-db stopped publishing there, and says the last npm data
 * has errors), so the way forward is always a file of one's own, re-read on SIGHUP.
 */
export async function checkGeoData(c: DoctorContext): Promise<CheckResult[]> {
  const cfg = c.cfg.geo;
  const dates = await geoDataDates({ countryDb: cfg.country_db, asnDb: cfg.asn_db });
  return HALVES.map((h) => {
    const { source, builtAt } = h.key === 'country_db' ? dates.country : dates.asn;
    const bundled = source.startsWith('bundled ');
    const subject = bundled ? source.slice('bundled '.length) : source;
    if (!builtAt) {
      return fail('geo.data', subject, `the ${h.what} data cannot be read: run postern config check as the service user, then fix geo.${h.key}`);
    }
    const day = builtAt.toISOString().slice(0, 10);
    const age = Math.floor((c.now - builtAt.getTime()) / DAY);
    const from = bundled ? 'bundled with Postern' : `in geo.${h.key}`;
    if (age <= GEO_STALE_DAYS) return pass('geo.data', subject, `${h.what} data ${from} is of ${day} (${age} days old)`);
    const next = bundled
      ? `set geo.${h.key} to a current file: ${h.mmdb} kept current by geoipupdate (MaxMind GeoLite2, free account), or the ${h.what} CSV files of https://github.com/sapics/ip-location-db/releases (npm updates of the bundled data have stopped)`
      : `replace ${source} with a current file (geoipupdate for MaxMind; https://github.com/sapics/ip-location-db/releases for CSV)`;
    return warn('geo.data', subject, `${h.what} data ${from} is of ${day}, ${age} days old (over ${GEO_STALE_DAYS}): addresses have moved since; ${next}, then systemctl reload postern`);
  });
}
