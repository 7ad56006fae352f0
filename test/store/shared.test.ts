import { afterEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { openStore, type Store } from '../../src/store/index.js';
import { tempDir } from '../helpers/relay.js';

const opened: Array<{ dir: string; stores: Store[] }> = [];
afterEach(() => {
  for (const o of opened.splice(0)) {
    for (const s of o.stores) s.close();
    rmSync(o.dir, { recursive: true, force: true });
  }
});

/** Two stores on one database file: what two processes sharing a data dir see. */
function twoConnections(): [Store, Store] {
  const dir = tempDir();
  const stores: [Store, Store] = [openStore(dir), openStore(dir)];
  opened.push({ dir, stores });
  return stores;
}

describe('leases', () => {
  it('go to one taker at a time, are renewed by their owner, and lapse or are given back', async () => {
    const [a, b] = twoConnections();
    expect(await a.leases.take('quota-drain', 'A', 1000, 2000)).toBe(true);
    expect(await b.leases.take('quota-drain', 'B', 1500, 2500)).toBe(false);
    expect(await a.leases.take('quota-drain', 'A', 1500, 3000)).toBe(true);
    expect(await b.leases.take('quota-drain', 'B', 2999, 4000)).toBe(false);
    expect(await b.leases.take('quota-drain', 'B', 3000, 4000)).toBe(true);
    await b.leases.give('quota-drain', 'A');
    expect(await a.leases.take('quota-drain', 'A', 3500, 5000)).toBe(false);
    await b.leases.give('quota-drain', 'B');
    expect(await a.leases.take('quota-drain', 'A', 3500, 5000)).toBe(true);
  });

  it('say "first in this burst" once per burst, to the first of any number of callers', async () => {
    const [a, b] = twoConnections();
    expect(await a.leases.firstInBurst('held-notice user:alice', 0, 100)).toBe(true);
    expect(await a.leases.firstInBurst('held-notice user:alice', 0, 100)).toBe(false);
    expect(await b.leases.firstInBurst('held-notice user:alice', 99, 199)).toBe(false);
    expect(await b.leases.firstInBurst('held-notice user:alice', 100, 200)).toBe(true);
  });
});

describe('login attempt counters', () => {
  const counters = [{ key: 'ip 192.0.2.1', max: 2 }];
  const reserve = async (s: Store, now: number) => await s.authAttempts.reserve(counters, now, now + 60_000, (st) => (st[0]!.lockedUntil !== null || st[0]!.failures + st[0]!.inflight >= 2 ? st[0] : null));

  it('count attempts in flight on every connection, and lock at the limit of failures', async () => {
    const [a, b] = twoConnections();
    const first = await reserve(a, 0);
    const second = await reserve(b, 0);
    expect('ids' in first && 'ids' in second).toBe(true);
    expect(await reserve(a, 0)).toEqual({ refused: { key: 'ip 192.0.2.1', lockedUntil: null, failures: 0, inflight: 2 } });
    if (!('ids' in first) || !('ids' in second)) return;
    expect(await a.authAttempts.settle(first.ids, 'fail', counters, [], 10, 900_010, 900_010)).toEqual([]);
    expect(await b.authAttempts.settle(second.ids, 'fail', counters, [], 20, 900_020, 900_020)).toEqual(['ip 192.0.2.1']);
    expect(await reserve(a, 30)).toEqual({ refused: { key: 'ip 192.0.2.1', lockedUntil: 900_020, failures: 0, inflight: 0 } });
    expect(await a.authAttempts.locks(['ip 192.0.2.1', 'ip 192.0.2.2'], 30)).toEqual([{ key: 'ip 192.0.2.1', until: 900_020 }]);
    expect('ids' in (await reserve(a, 900_020))).toBe(true);
  });

  it('let a reservation of a process that died lapse with its lease', async () => {
    const [a] = twoConnections();
    expect('ids' in (await reserve(a, 0))).toBe(true);
    expect('ids' in (await reserve(a, 0))).toBe(true);
    expect('refused' in (await reserve(a, 59_999))).toBe(true);
    expect('ids' in (await reserve(a, 60_000))).toBe(true);
  });
});
