import { rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/domain/clock.js';
import { GeoDbError } from '../../src/geo/index.js';
import { GeoService } from '../../src/geo/service.js';
import { createLogger } from '../../src/obs/log.js';
import { LogCapture, startTestRelay, tempDir } from '../helpers/relay.js';

// Small CSV files in a temp dir: loading the bundled data would cost half a second a load.
let dir: string;
const write = (name: string, text: string, mtime?: Date) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  if (mtime) utimesSync(p, mtime, mtime);
  return p;
};
const NOW = Date.UTC(2026, 10, 22, 12, 0, 0);
const DATED = new Date(Date.UTC(2026, 10, 2, 0, 0, 0));

let country: string;
let asn: string;
let logs: LogCapture;
let geo: GeoService;

beforeAll(() => {
  dir = tempDir('postern-geo-service-');
  country = write('country.csv', '1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,CN\n', DATED);
  asn = write('asn.csv', '1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."\n', DATED);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeEach(() => {
  logs = new LogCapture();
  geo = new GeoService({ countryDb: country, asnDb: asn }, createLogger('debug', logs), new ManualClock(NOW));
});

describe('GeoService', () => {
  it('loads nothing until asked, then loads once and logs where the data came from', async () => {
    expect(geo.loaded()).toBeNull();
    expect(geo.describe('1.0.0.9')).toBe('1.0.0.9');
    expect(logs.lines).toEqual([]);

    const db = await geo.get();
    expect(geo.loaded()).toBe(db);
    expect(await geo.get()).toBe(db);
    expect(db.lookup('1.0.1.7')).toEqual({ country: 'CN', asn: null, org: null });
    expect(logs.events('geo.loaded')).toEqual([
      expect.objectContaining({
        level: 'info',
        country_source: country,
        asn_source: asn,
        rows: 3,
        bytes: expect.any(Number),
        ms: expect.any(Number),
        data_date: '2026-11-02',
        data_age_days: 20,
      }),
    ]);
  });

  it('shares one load between callers that ask at once', async () => {
    const all = await Promise.all([geo.get(), geo.get(), geo.get()]);
    expect(new Set(all).size).toBe(1);
    expect(logs.events('geo.loaded')).toHaveLength(1);
  });

  it('rejects a failed load naming the key and the file, and tries again a minute later', async () => {
    const missing = path.join(dir, 'later.csv');
    const clock = new ManualClock();
    geo = new GeoService({ countryDb: missing, asnDb: asn }, createLogger('debug', logs), clock);
    const failed = geo.get();
    // A second caller during the failing load shares its failure rather than starting another.
    const second = geo.get();
    await expect(failed).rejects.toThrow(new GeoDbError('country_db', missing, null, 'cannot be read (ENOENT)'));
    await expect(second).rejects.toThrow(`country_db = ${missing}: cannot be read (ENOENT)`);
    expect(geo.loaded()).toBeNull();
    expect(logs.events('geo.load_failed')).toEqual([
      expect.objectContaining({ level: 'error', key: 'geo.country_db', file: missing, err: `country_db = ${missing}: cannot be read (ENOENT)`, kept: false }),
    ]);

    write('later.csv', '1.0.0.0,1.0.0.255,NZ\n');
    // Within the minute the failure is answered from memory, without reading the files again.
    clock.advance(59_000);
    await expect(geo.get()).rejects.toThrow(`country_db = ${missing}: cannot be read (ENOENT)`);
    expect(logs.events('geo.load_failed')).toHaveLength(1);
    clock.advance(1_000);
    expect((await geo.get()).lookup('1.0.0.1').country).toBe('NZ');
    expect(logs.events('geo.loaded')).toHaveLength(1);
  });

  it('preloads in the background and logs a failure rather than throwing it', async () => {
    geo.preload();
    await logs.logged('geo.loaded');
    expect(geo.loaded()).not.toBeNull();

    const broken = write('broken.csv', '1.0.0.0,1.0.0.255,AU\n1.2.3,1.2.3.255,AU\n');
    const other = new GeoService({ countryDb: broken, asnDb: asn }, createLogger('debug', logs));
    other.preload();
    await logs.logged('geo.load_failed');
    expect(logs.events('geo.load_failed')).toEqual([expect.objectContaining({ key: 'geo.country_db', file: broken, err: `country_db = ${broken}: line 2: bad address "1.2.3"` })]);
    expect(other.loaded()).toBeNull();
  });

  it('describes an address with what the loaded data knows of it', async () => {
    await geo.get();
    expect(geo.describe('1.0.0.9')).toBe('1.0.0.9, AU, AS13335 Cloudflare, Inc.');
    expect(geo.describe('1.0.1.9')).toBe('1.0.1.9, CN');
    expect(geo.describe('198.51.100.7')).toBe('198.51.100.7');
    expect(geo.describe('not an address')).toBe('not an address');
  });

  it('on reload reads the files again and swaps the new data in', async () => {
    const live = write('live.csv', '1.0.0.0,1.0.0.255,AU\n');
    geo = new GeoService({ countryDb: live, asnDb: asn }, createLogger('debug', logs));
    const before = await geo.get();
    write('live.csv', '1.0.0.0,1.0.0.255,FR\n');
    await geo.reload({ countryDb: live, asnDb: asn });
    expect(geo.loaded()).not.toBe(before);
    expect(geo.describe('1.0.0.9')).toBe('1.0.0.9, FR, AS13335 Cloudflare, Inc.');
    expect(before.lookup('1.0.0.9').country).toBe('AU');
    expect(logs.events('geo.reloaded')).toEqual([expect.objectContaining({ level: 'info', country_source: live, asn_source: asn, rows: 2 })]);

    // New paths (a list of CSV files) are taken the same way.
    const v6 = write('v6.csv', '2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n');
    await geo.reload({ countryDb: [live, v6], asnDb: asn });
    expect(geo.describe('2001:200::1')).toBe('2001:200::1, JP');
    expect(logs.events('geo.reloaded')).toHaveLength(2);
  });

  it('keeps answering with the old data when the new data cannot be loaded', async () => {
    const old = await geo.get();
    const bad = write('bad.csv', '1.0.0.0,1.0.0.255,AU,\n1.0.1.0,junk\n');
    await geo.reload({ countryDb: bad, asnDb: asn });
    expect(geo.loaded()).toBe(old);
    expect(await geo.get()).toBe(old);
    expect(geo.describe('1.0.0.9')).toBe('1.0.0.9, AU, AS13335 Cloudflare, Inc.');
    expect(logs.events('geo.load_failed')).toEqual([expect.objectContaining({ key: 'geo.country_db', file: bad, err: expect.stringMatching(/^country_db = .*bad\.csv: line 2: /), kept: true })]);
    expect(logs.events('geo.reloaded')).toEqual([]);
  });

  it('leaves data that was never loaded unloaded on reload, and loads the new paths when asked', async () => {
    const fresh = write('fresh.csv', '1.0.0.0,1.0.0.255,DE\n');
    await geo.reload({ countryDb: fresh, asnDb: asn });
    expect(geo.loaded()).toBeNull();
    expect(logs.lines).toEqual([]);
    expect((await geo.get()).lookup('1.0.0.1').country).toBe('DE');
  });

  it('reads the new paths once a first load that was in flight at the reload has finished', async () => {
    const next = write('next.csv', '1.0.0.0,1.0.0.255,PT\n');
    const first = geo.get();
    await geo.reload({ countryDb: next, asnDb: asn });
    expect((await first).lookup('1.0.0.1').country).toBe('AU');
    expect(geo.describe('1.0.0.1')).toBe('1.0.0.1, PT, AS13335 Cloudflare, Inc.');
    expect(logs.events('geo.loaded').length + logs.events('geo.reloaded').length).toBe(2);
  });
});

describe('the relay', () => {
  it('loads the IP database at start only when a binding names a country or an ASN', async () => {
    const data = tempDir('postern-geo-relay-');
    const overrides = { geo: { country_db: country, asn_db: asn } };
    const first = await startTestRelay(overrides, { dir: data });
    try {
      expect(first.relay.geo.loaded()).toBeNull();
      const id = await first.addUser('alice', 'correct horse battery staple');
      await first.relay.store.bindings.add('user', id, 'country', 'AU', first.clock.now());
    } finally {
      await first.stop();
    }
    const second = await startTestRelay(overrides, { dir: data });
    try {
      await second.logs.logged('geo.loaded');
      expect(second.relay.geo.describe('1.0.0.9')).toBe('1.0.0.9, AU, AS13335 Cloudflare, Inc.');
    } finally {
      await second.stop();
      rmSync(data, { recursive: true, force: true });
    }
  });
});
