import type { GeoPlace } from './index.js';

/** One half of the database (countries or ASNs) as loaded from one source. */
export interface GeoSource {
  /** "bundled @ip-location-db/asn 2.3.2026061719" or the path(s) as configured. */
  readonly source: string;
  readonly format: 'csv' | 'mmdb';
  /** When the data was made (package version, mmdb build epoch, file mtime), if known. */
  readonly builtAt: Date | null;
  /** CSV: ranges kept; mmdb: nodes in the search tree. */
  readonly rows: number;
  /** Memory held at rest: typed arrays and strings (estimated), or the mmdb file. */
  readonly bytes: number;
  /**
   * False for the bundled data, which must not place private or special-use addresses (its
   * registry rows do cover some, e.g. 192.168/16 and 2001:db8::/32); an admin's own file is
   * the admin's word and places whatever it holds.
   */
  readonly placesSpecial: boolean;
  /** Writes this half's fields of `out` for the address in w (nulls when not placed). */
  fill(family: 4 | 6, w: Uint32Array, out: GeoPlace): void;
}
