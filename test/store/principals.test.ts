import { afterEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { decideQuota } from '../../src/policy/limits.js';
import { openDb } from '../../src/store/db.js';
import { openStore, type Store } from '../../src/store/index.js';
import { migrate, readMigrations } from '../../src/store/migrate.js';
import { tempDir } from '../helpers/relay.js';

const dirs: string[] = [];
const stores: Store[] = [];
afterEach(() => {
  for (const s of stores.splice(0)) s.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function fresh(): Store {
  const dir = tempDir();
  dirs.push(dir);
  const s = openStore(dir);
  stores.push(s);
  return s;
}

const LIMITS = { messagesPerHour: 10, recipientsPerHour: 100, recipientsPerDay: 100 };
const HOUR = 3_600_000;

describe('principal identity', () => {
  it('gives a user deleted and added again under the same name none of the old one\'s quota usage, domain history, overrides or open incidents', async () => {
    const st = fresh();
    const old = await st.users.add('alice', 'hash', 1000);
    await st.limits.reserve(old.principalRef, 3, 2000, (u) => decideQuota(LIMITS, u, 3, 2000, false));
    await st.limits.setOverride(old.principalRef, { messagesPerHour: 1 }, 2000);
    await st.quarantine.addDomains(old.principalRef, ['known.example'], 2000);
    await st.incidents.record({ principalKind: 'user', principalId: old.id, principalName: 'alice', principalRef: old.principalRef, kind: 'manual' }, 2000, HOUR);
    expect((await st.limits.usage(old.principalRef, 3000)).messagesHour).toBe(1);
    expect(await st.incidents.hasOpen(old.principalRef)).toBe(true);

    expect(await st.users.delete(old.id, 4000)).toBe(true);
    const again = await st.users.add('alice', 'hash', 5000);

    expect(again.principalRef).not.toBe(old.principalRef);
    expect(await st.limits.usage(again.principalRef, 6000)).toEqual({ messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null });
    expect(await st.limits.override(again.principalRef)).toBeUndefined();
    expect(await st.quarantine.newDomains(again.principalRef, ['known.example'])).toEqual(['known.example']);
    expect(await st.incidents.hasOpen(again.principalRef)).toBe(false);
    // The old state is still there, under the old principal, for the record.
    expect((await st.limits.usage(old.principalRef, 6000)).messagesHour).toBe(1);
    expect((await st.incidents.list({ name: 'alice' })).map((i) => i.kind)).toEqual(['manual']);
  });

  it('never hands a retired number to a new user or device', async () => {
    const st = fresh();
    const a = await st.users.add('a', 'hash', 1);
    await st.users.delete(a.id, 2);
    const d = await st.devices.add('printer', false, 3);
    const b = await st.users.add('b', 'hash', 4);
    expect(new Set([a.principalRef, d.principalRef, b.principalRef]).size).toBe(3);
    expect(Math.min(d.principalRef, b.principalRef)).toBeGreaterThan(a.principalRef);
  });

  it('moves the state an older version kept under "user:alice" strings to the principal that name belongs to (migration 010)', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const db = openDb(dir);
    migrate(db, readMigrations().filter((m) => m.version <= 9));
    db.prepare("INSERT INTO users (username, password_hash, created_at, updated_at) VALUES ('alice', 'h', 1, 1)").run();
    db.prepare("INSERT INTO messages (id, state, mail_from, principal, client_ip, size, received_at) VALUES ('M1', 'waiting-quota', 'a@x.example', 'user:alice', '127.0.0.1', 1, 1)").run();
    db.prepare("INSERT INTO messages (id, state, mail_from, principal, client_ip, size, received_at) VALUES ('M2', 'held', 'b@x.example', 'user:bob', '127.0.0.1', 1, 1)").run();
    db.prepare("INSERT INTO quota_buckets (principal, minute, messages, recipients) VALUES ('user:alice', 100, 2, 5)").run();
    db.prepare("INSERT INTO principal_limits (principal, messages_per_hour, updated_at) VALUES ('user:alice', 7, 1)").run();
    db.prepare("INSERT INTO principal_domains (principal, domain, first_at) VALUES ('user:alice', 'known.example', 1)").run();
    db.prepare("INSERT INTO delivery_outcomes (principal, at, rejected) VALUES ('user:alice', 6000000, 1)").run();
    db.prepare("INSERT INTO incidents (principal_kind, principal_name, kind, created_at) VALUES ('user', 'alice', 'manual', 1)").run();
    migrate(db);
    db.close();

    const st = openStore(dir);
    stores.push(st);
    const alice = (await st.users.find('alice'))!;
    expect(alice.principalRef).toBeGreaterThan(0);
    expect((await st.limits.usage(alice.principalRef, 100 * 60_000 + 1)).messagesHour).toBe(2);
    expect(await st.limits.override(alice.principalRef)).toEqual({ messagesPerHour: 7, recipientsPerHour: null, recipientsPerDay: null });
    expect(await st.quarantine.newDomains(alice.principalRef, ['known.example'])).toEqual([]);
    expect(await st.delivery.outcomeCounts(alice.principalRef, 0)).toEqual({ total: 1, rejected: 1 });
    expect(await st.incidents.hasOpen(alice.principalRef)).toBe(true);
    expect((await st.limits.waiting(alice.principalRef)).messages).toBe(1);
    // Mail of a user deleted before the upgrade still says who sent it.
    expect((await st.queue.list()).map((m) => [m.id, m.principal])).toEqual([
      ['M1', 'user:alice'],
      ['M2', 'user:bob'],
    ]);
  });
});
