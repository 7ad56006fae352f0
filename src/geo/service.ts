import { performance } from 'node:perf_hooks';
import { systemClock, type Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';
import { GeoDbError } from './error.js';
import type { GeoDb, GeoInfo, GeoOptions } from './index.js';

const DAY = 86_400_000;

/** How long a failed load is answered from memory before the files are read again. */
const RETRY_AFTER_MS = 60_000;

/**
 * The relay's one IP database: loaded on first need, never at start by default (most
 * installations bind CIDRs only and should not pay ~25 MB and a second of CPU for nothing),
 * and replaced whole on SIGHUP. Lookups never wait for a reload: the old data answers until
 * the new data is ready, and stays when the new data cannot be read.
 */
export class GeoService {
  private opts: GeoOptions;
  private db: GeoDb | null = null;
  /** The first load in flight: concurrent logins share it rather than each reading the files. */
  private loading: Promise<GeoDb> | null = null;
  /** The last failed load, so get() does not start another for RETRY_AFTER_MS. */
  private failed: { at: number; error: unknown } | null = null;
  /** Reloads run one after another (two quick SIGHUPs must not swap in the older data last). */
  private reloading: Promise<void> = Promise.resolve();

  constructor(
    opts: GeoOptions,
    private readonly log: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    this.opts = opts;
  }

  /** The database, loaded now if it is not yet. A failed load rejects; the next call tries again. */
  get(): Promise<GeoDb> {
    if (this.db) return Promise.resolve(this.db);
    // A file that failed is not parsed again for a minute: every login of a country-bound
    // user would otherwise start another full load of a broken file.
    if (this.failed && this.clock.now() - this.failed.at < RETRY_AFTER_MS) return Promise.reject(this.failed.error);
    if (!this.loading) {
      // Installed before the load resolves to anyone: a reload() waiting on it then finds
      // the data loaded, and geo.loaded is logged once loaded() returns it.
      const load = this.load(this.opts, 'geo.loaded', (db) => {
        this.db = db;
      });
      this.loading = load;
      void load.then(
        () => {
          this.loading = null;
          this.failed = null;
        },
        (error: unknown) => {
          this.loading = null;
          this.failed = { at: this.clock.now(), error };
        },
      );
    }
    return this.loading;
  }

  /** The database if it is loaded, else null (never starts a load). */
  loaded(): GeoDb | null {
    return this.db;
  }

  /**
   * Starts the load in the background (at start, when some binding already needs it, so the
   * first such login does not wait). A failure is logged by the load and left for the next get().
   */
  preload(): void {
    this.get().catch(() => undefined);
  }

  /**
   * SIGHUP: takes the (possibly new) [geo] paths. Loaded data is read again from them and
   * swapped in once ready; a failure keeps the old data (geo.load_failed). Data not loaded yet
   * stays unloaded: the next get() reads the new paths. Never rejects.
   */
  reload(opts: GeoOptions): Promise<void> {
    this.opts = opts;
    const run = async () => {
      // A first load in flight may have read the files before they were replaced: let it
      // finish, then read them again.
      if (this.loading) await this.loading.catch(() => undefined);
      if (!this.db) return;
      try {
        await this.load(opts, 'geo.reloaded', (db) => {
          this.db = db;
        });
      } catch {
        // Logged by load(); the old data keeps answering.
      }
    };
    this.reloading = this.reloading.then(run);
    return this.reloading;
  }

  /**
   * An address as notices and logs name it: "203.0.113.9, FR, AS16276 OVH", with only what
   * the loaded database knows ("203.0.113.9, FR"), or the bare address when nothing is
   * loaded or the database does not place it. Never starts a load.
   */
  describe(ip: string): string {
    const place = this.db?.lookup(ip);
    if (!place) return ip;
    const parts = [ip];
    if (place.country) parts.push(place.country);
    if (place.asn !== null) parts.push(place.org ? `AS${place.asn} ${place.org}` : `AS${place.asn}`);
    return parts.join(', ');
  }

  private async load(opts: GeoOptions, event: 'geo.loaded' | 'geo.reloaded', install: (db: GeoDb) => void): Promise<GeoDb> {
    const t0 = performance.now();
    let db: GeoDb;
    try {
      // The readers (and mmdb-lib) are imported with the first load: a relay whose bindings
      // are all CIDRs never carries them (the 2,000-idle-connection memory budget).
      const { loadGeo } = await import('./index.js');
      db = await loadGeo(opts);
    } catch (e) {
      const err = e as Error;
      this.log.error({
        event: 'geo.load_failed',
        key: e instanceof GeoDbError ? `geo.${e.key}` : null,
        file: e instanceof GeoDbError ? e.file : null,
        err: err.message,
        // On a reload the data loaded before keeps answering.
        kept: event === 'geo.reloaded',
      });
      throw e;
    }
    const ms = Math.round(performance.now() - t0);
    install(db);
    this.log.info({ event, ...this.fields(db.info()), ms });
    return db;
  }

  private fields(info: GeoInfo) {
    const day = (d: Date | null) => (d ? d.toISOString().slice(0, 10) : null);
    return {
      country_source: info.countrySource,
      asn_source: info.asnSource,
      rows: info.rows,
      bytes: info.bytes,
      // The older half's date: what postern doctor's geo.data check goes by.
      data_date: day(info.builtAt),
      data_age_days: info.builtAt ? Math.floor((this.clock.now() - info.builtAt.getTime()) / DAY) : null,
    };
  }
}
