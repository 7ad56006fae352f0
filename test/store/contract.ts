import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { principalLabel, type Assessment, type Device, type NewMessage, type Principal, type PrincipalRef, type QueueState, type User } from '../../src/domain/types.js';
import { DAY, HOUR, type QuotaDecision, type Usage } from '../../src/domain/limits.js';
import type { Store } from '../../src/store/index.js';
import type { AttemptRecord } from '../../src/store/delivery.js';
import type { Actor } from '../../src/store/quarantine.js';
import type { CounterSpec, CounterState } from '../../src/store/shared.js';
import type { TlsReportKey } from '../../src/store/tls-reports.js';
import { newQueueId } from '../../src/spool/message.js';
// The error classes are values, not types: callers tell these refusals apart with instanceof
// (cli/user.ts, cli/quarantine.ts, cli/queue.ts), so every engine must throw these very classes.
// None of these modules loads an engine at run time.
import { UserExistsError } from '../../src/store/users.js';
import { DeviceExistsError } from '../../src/store/devices.js';
import { AppPasswordExistsError } from '../../src/store/app-passwords.js';
import { AlreadyDecidedError, NotFoundError, NotQuarantinedError } from '../../src/store/quarantine.js';
import { ClaimLostError, MessageNotFoundError, MessageStateError } from '../../src/store/delivery.js';
import { DkimKeyExistsError, dkimStates } from '../../src/store/dkim.js';

/**
 * The key by which the limits, queue, quarantine, delivery, incidents and stats verbs name a
 * principal (its never-reused ref; "kind:name" strings before migration 010). Every place in
 * this suite that builds or compares such a key goes through here, so a change of
 * representation changes this line only.
 */
type PrincipalKey = PrincipalRef;
const principalOf = (p: Principal): PrincipalKey => p.ref;
/** How listings, stats and audit details name a principal ("user:alice"): the domain's label. */
const labelOf = (p: Principal): string => principalLabel(p);
const userPrincipal = (u: User): Principal => ({ kind: 'user', id: u.id, name: u.username, ref: u.principalRef });
const devicePrincipal = (d: Device): Principal => ({ kind: 'device', id: d.id, name: d.name, ref: d.principalRef });

/** A start on a whole minute: the quota ledger counts in one-minute buckets, so window edges land exactly. */
const T = 1_700_000_040_000;
const MINUTE = 60_000;

export interface OpenedStore {
  store: Store;
  /** Opens the same data again (after store.close()). */
  reopen: () => Promise<Store>;
  cleanup: () => Promise<void>;
}

/** The rejection of `p`; fails the test if `p` resolves. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected the verb to reject, but it resolved');
}

/** Lets the event loop run a few turns (no timers: a verb that is free to run has run by then). */
async function turns(n = 10): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

const sortIds = (ids: Iterable<string>) => [...ids].sort();

/**
 * Every repository verb of the Store interface, checked through the verbs alone, so that any
 * engine is held to the same behaviour. `open` hands out an empty, migrated store.
 */
export function storeContract(engine: string, open: () => Promise<OpenedStore>): void {
  describe(`store contract (${engine})`, () => {
    let env: OpenedStore;
    let s: Store;
    beforeEach(async () => {
      env = await open();
      s = env.store;
    });
    afterEach(async () => {
      await env.cleanup();
    });

    const addUser = async (name: string, now = T): Promise<Principal> => userPrincipal(await s.users.add(name, `hash-of-${name}`, now));
    const addDevice = async (name: string, now = T): Promise<Principal> => devicePrincipal(await s.devices.add(name, false, now));
    const body = (at: number) => `From: <alice@example.com>\r\nSubject: test ${at}\r\n\r\nHello.\r\n`;
    const message = (o: { at: number; state?: QueueState; principal?: Principal | null; from?: string; rcpts?: string[]; assessment?: Assessment }): NewMessage => ({
      id: newQueueId(o.at),
      envelope: { mailFrom: o.from ?? 'alice@example.com', rcptTo: o.rcpts ?? ['bob@example.org'] },
      principal: o.principal ?? null,
      clientIp: '192.0.2.10',
      receivedAt: o.at,
      state: o.state ?? 'queued',
      data: Buffer.from(body(o.at)),
      ...(o.assessment ? { assessment: o.assessment } : {}),
    });
    const put = async (...ms: NewMessage[]): Promise<string[]> => {
      await s.queue.insertMany(ms);
      return ms.map((m) => m.id);
    };
    const putOne = async (o: Parameters<typeof message>[0]): Promise<string> => (await put(message(o)))[0]!;
    const admin = (now: number, reason: string | null = 'checked'): Actor => ({ actor: 'admin', reason, now });

    describe('users', () => {
      it('adds an active user and returns it exactly as find, get and list then read it', async () => {
        const u = await s.users.add('alice', 'hash-1', T);
        expect(u).toEqual({
          id: expect.any(Number),
          principalRef: expect.any(Number),
          username: 'alice',
          passwordHash: 'hash-1',
          status: 'active',
          statusReason: null,
          authEpoch: 0,
          notifyAddress: null,
          suspendedAt: null,
          createdAt: T,
          updatedAt: T,
        });
        expect(await s.users.find('alice')).toEqual(u);
        expect(await s.users.get(u.id)).toEqual(u);
        expect(await s.users.list()).toEqual([u]);
      });

      it('refuses a second user of the same name, in any case, with UserExistsError and keeps the first', async () => {
        await s.users.add('alice', 'hash-1', T);
        await expect(s.users.add('alice', 'hash-2', T + 1)).rejects.toBeInstanceOf(UserExistsError);
        await expect(s.users.add('ALICE', 'hash-3', T + 2)).rejects.toBeInstanceOf(UserExistsError);
        expect((await s.users.list()).map((u) => [u.username, u.passwordHash, u.createdAt])).toEqual([['alice', 'hash-1', T]]);
      });

      it('finds a user by name whatever its case, and nothing for an unknown name or id', async () => {
        const u = await s.users.add('Alice', 'hash-1', T);
        expect(await s.users.find('alice')).toEqual(u);
        expect(await s.users.find('ALICE')).toEqual(u);
        expect(await s.users.find('bob')).toBeUndefined();
        expect(await s.users.get(u.id + 1000)).toBeUndefined();
      });

      it('adds several users at once, in the order given, or none of them when a name is taken in any case', async () => {
        const [a, b] = await s.users.addMany([{ username: 'alice', passwordHash: '', notifyAddress: 'alice@home.example' }, { username: 'Bob', passwordHash: 'h', notifyAddress: null }], T);
        expect(a).toEqual({ ...(await s.users.find('alice'))!, username: 'alice', passwordHash: '', notifyAddress: 'alice@home.example', createdAt: T, updatedAt: T });
        expect(b).toMatchObject({ username: 'Bob', passwordHash: 'h', notifyAddress: null, status: 'active' });
        expect(a!.principalRef).not.toBe(b!.principalRef);
        await expect(s.users.addMany([{ username: 'carol', passwordHash: '', notifyAddress: null }, { username: 'BOB', passwordHash: '', notifyAddress: null }], T + 1)).rejects.toBeInstanceOf(UserExistsError);
        expect((await s.users.list()).map((u) => u.username)).toEqual(['alice', 'Bob']);
        expect(await s.users.addMany([], T + 2)).toEqual([]);
      });

      it('lists users ordered by name', async () => {
        for (const n of ['carol', 'alice', 'bob']) await s.users.add(n, 'h', T);
        expect((await s.users.list()).map((u) => u.username)).toEqual(['alice', 'bob', 'carol']);
        expect(new Set((await s.users.list()).map((u) => u.id)).size).toBe(3);
      });

      it('setPassword replaces the hash and moves the auth epoch on, so cached credentials drop', async () => {
        const u = await s.users.add('alice', 'hash-1', T);
        expect(await s.users.find('alice')).toEqual(u);
        await s.users.setPassword(u.id, 'hash-2', T + 5);
        const want = { ...u, passwordHash: 'hash-2', authEpoch: u.authEpoch + 1, updatedAt: T + 5 };
        expect(await s.users.find('alice')).toEqual(want);
        expect(await s.users.get(u.id)).toEqual(want);
      });

      it('rehash replaces the hash but keeps the auth epoch', async () => {
        const u = await s.users.add('alice', 'hash-1', T);
        expect(await s.users.get(u.id)).toEqual(u);
        await s.users.rehash(u.id, 'hash-1-stronger', T + 5);
        expect(await s.users.get(u.id)).toEqual({ ...u, passwordHash: 'hash-1-stronger', updatedAt: T + 5 });
      });

      it('suspend suspends an active user once, with reason and time, and moves the auth epoch on', async () => {
        const u = await s.users.add('alice', 'hash-1', T);
        expect(await s.users.find('alice')).toEqual(u);
        expect(await s.users.suspend(u.id, 'stolen password', T + 10)).toBe(true);
        const suspended = { ...u, status: 'suspended', statusReason: 'stolen password', suspendedAt: T + 10, authEpoch: u.authEpoch + 1, updatedAt: T + 10 };
        expect(await s.users.find('alice')).toEqual(suspended);
        expect(await s.users.suspend(u.id, 'again', T + 20)).toBe(false);
        expect(await s.users.find('alice')).toEqual(suspended);
        expect(await s.users.suspend(u.id + 1000, 'nobody', T + 20)).toBe(false);
      });

      it('unsuspend reactivates a suspended user and clears reason and time; false for an active one', async () => {
        const u = await s.users.add('alice', 'hash-1', T);
        expect(await s.users.unsuspend(u.id, T + 5)).toBe(false);
        expect(await s.users.get(u.id)).toEqual(u);
        await s.users.suspend(u.id, 'stolen password', T + 10);
        expect(await s.users.unsuspend(u.id, T + 30)).toBe(true);
        expect(await s.users.get(u.id)).toEqual({ ...u, authEpoch: u.authEpoch + 2, updatedAt: T + 30 });
        expect(await s.users.unsuspend(u.id, T + 40)).toBe(false);
      });

      it('setNotifyAddress sets and clears where notices go', async () => {
        const u = await s.users.add('alice', 'hash-1', T);
        await s.users.setNotifyAddress(u.id, 'alice@home.example', T + 1);
        expect(await s.users.find('alice')).toEqual({ ...u, notifyAddress: 'alice@home.example', updatedAt: T + 1 });
        await s.users.setNotifyAddress(u.id, null, T + 2);
        expect(await s.users.find('alice')).toEqual({ ...u, notifyAddress: null, updatedAt: T + 2 });
      });

      it('delete removes the user and no other, true once and then false', async () => {
        const a = await s.users.add('alice', 'h', T);
        const b = await s.users.add('bob', 'h', T);
        expect(await s.users.find('alice')).toEqual(a);
        expect(await s.users.delete(a.id, T + 1)).toBe(true);
        expect(await s.users.find('alice')).toBeUndefined();
        expect(await s.users.get(a.id)).toBeUndefined();
        expect(await s.users.list()).toEqual([b]);
        expect(await s.users.delete(a.id, T + 2)).toBe(false);
      });
    });

    describe('devices', () => {
      it('adds an active device and returns it exactly as find, get and list then read it', async () => {
        const d = await s.devices.add('printer-3', true, T);
        expect(d).toEqual({ id: expect.any(Number), principalRef: expect.any(Number), name: 'printer-3', status: 'active', statusReason: null, suspendedAt: null, requireTls: true, createdAt: T, updatedAt: T });
        expect(await s.devices.find('printer-3')).toEqual(d);
        expect(await s.devices.find('PRINTER-3')).toEqual(d);
        expect(await s.devices.get(d.id)).toEqual(d);
        expect(await s.devices.list()).toEqual([d]);
        expect((await s.devices.add('scanner', false, T)).requireTls).toBe(false);
      });

      it('refuses a second device of the same name, in any case, and keeps the first', async () => {
        const d = await s.devices.add('printer-3', true, T);
        await expect(s.devices.add('printer-3', false, T + 1)).rejects.toBeInstanceOf(DeviceExistsError);
        await expect(s.devices.add('Printer-3', false, T + 1)).rejects.toBeInstanceOf(DeviceExistsError);
        expect(await s.devices.list()).toEqual([d]);
      });

      it('finds nothing for an unknown name or id, and lists devices ordered by name', async () => {
        const z = await s.devices.add('zebra', false, T);
        const a = await s.devices.add('alarm', false, T);
        expect(await s.devices.find('nothing')).toBeUndefined();
        expect(await s.devices.get(z.id + a.id + 1000)).toBeUndefined();
        expect(await s.devices.list()).toEqual([a, z]);
      });

      it('byAddress finds the device bound to that exact address while the binding is in force', async () => {
        const d = await s.devices.add('printer-3', false, T);
        await s.bindings.add('device', d.id, 'network', '192.0.2.7/32', T, T + 1000);
        expect(await s.devices.byAddress('192.0.2.7/32', T + 999)).toEqual(d);
        expect(await s.devices.byAddress('192.0.2.8/32', T + 999)).toBeUndefined();
        expect(await s.devices.byAddress('192.0.2.7/32', T + 1000)).toBeUndefined();
      });

      it('byAddress does not take a user bound to that address for a device', async () => {
        const u = await s.users.add('alice', 'h', T);
        await s.bindings.add('user', u.id, 'network', '192.0.2.7/32', T);
        expect(await s.devices.byAddress('192.0.2.7/32', T)).toBeUndefined();
      });

      it('suspend and unsuspend each change a device once, with reason and time', async () => {
        const d = await s.devices.add('printer-3', false, T);
        expect(await s.devices.unsuspend(d.id, T + 1)).toBe(false);
        expect(await s.devices.get(d.id)).toEqual(d);
        expect(await s.devices.suspend(d.id, 'sent as the CEO', T + 10)).toBe(true);
        const suspended = { ...d, status: 'suspended', statusReason: 'sent as the CEO', suspendedAt: T + 10, updatedAt: T + 10 };
        expect(await s.devices.get(d.id)).toEqual(suspended);
        expect(await s.devices.find('printer-3')).toEqual(suspended);
        expect(await s.devices.suspend(d.id, 'again', T + 20)).toBe(false);
        expect(await s.devices.get(d.id)).toEqual(suspended);
        expect(await s.devices.unsuspend(d.id, T + 30)).toBe(true);
        expect(await s.devices.get(d.id)).toEqual({ ...d, updatedAt: T + 30 });
        expect(await s.devices.suspend(d.id + 1000, 'nobody', T)).toBe(false);
      });

      it('delete removes the device and no other, true once and then false', async () => {
        const a = await s.devices.add('alarm', false, T);
        const b = await s.devices.add('printer', false, T);
        expect(await s.devices.get(a.id)).toEqual(a);
        expect(await s.devices.delete(a.id, T + 1)).toBe(true);
        expect(await s.devices.get(a.id)).toBeUndefined();
        expect(await s.devices.find('alarm')).toBeUndefined();
        expect(await s.devices.list()).toEqual([b]);
        expect(await s.devices.delete(a.id, T + 2)).toBe(false);
      });
    });

    describe('principals', () => {
      it('gives every user and device its own principal, never shared between them', async () => {
        const refs = [await addUser('alice'), await addUser('bob'), await addDevice('alice'), await addDevice('printer')].map(principalOf);
        expect(new Set(refs).size).toBe(4);
      });

      it('a user deleted and added again under the same name is a new principal with none of the old state', async () => {
        const old = await addUser('alice');
        const admit = (): QuotaDecision => ({ admit: true });
        await s.limits.reserve(principalOf(old), 3, T, admit);
        await s.limits.setOverride(principalOf(old), { messagesPerHour: 5 }, T);
        await s.quarantine.addDomains(principalOf(old), ['example.org'], T);
        const incident = { principalKind: 'user' as const, principalId: old.id, principalName: 'alice', kind: 'foreign-network' };
        expect((await s.incidents.record({ ...incident, principalRef: principalOf(old) }, T, HOUR)).notify).toBe(true);
        expect(await s.users.delete(old.id, T + 10)).toBe(true);
        const again = await addUser('alice', T + 20);
        expect(principalOf(again)).not.toBe(principalOf(old));
        expect(await s.limits.usage(principalOf(again), T + 30)).toEqual({ messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null });
        expect(await s.limits.override(principalOf(again))).toBeUndefined();
        expect(await s.quarantine.newDomains(principalOf(again), ['example.org'])).toEqual(['example.org']);
        expect(await s.incidents.hasOpen(principalOf(again))).toBe(false);
        expect((await s.incidents.record({ ...incident, principalId: again.id, principalRef: principalOf(again) }, T + 30, HOUR)).notify).toBe(true);
        // The old principal's state is still its own.
        expect((await s.limits.usage(principalOf(old), T + 30)).recipientsHour).toBe(3);
      });

      it('mail that a deleted user or device left still names who submitted it', async () => {
        const a = await addUser('alice');
        const d = await addDevice('printer');
        const [m, n] = await put(message({ at: T, state: 'held', principal: a }), message({ at: T + 1, state: 'held', principal: d }));
        await s.users.delete(a.id, T + 10);
        await s.devices.delete(d.id, T + 10);
        expect(await s.queue.get(m!)).toMatchObject({ principal: labelOf(a), principalRef: principalOf(a) });
        expect((await s.quarantine.get(n!))?.principal).toBe(labelOf(d));
        expect(await s.quarantine.delete(m!, admin(T + 20))).toMatchObject({ principal: labelOf(a), principalRef: principalOf(a) });
      });
    });

    describe('bindings', () => {
      it('sets the permanent bindings of each kind named: others go, exceptions stay, a listed exception becomes permanent', async () => {
        const u = await addUser('alice');
        const v = await addUser('bob');
        for (const n of ['192.0.2.0/24', '198.51.100.0/24']) await s.bindings.add('user', u.id, 'network', n, T);
        await s.bindings.add('user', u.id, 'network', '203.0.113.0/24', T, T + 1000);
        await s.bindings.add('user', u.id, 'country', 'PT', T, T + 1000);
        await s.bindings.add('user', u.id, 'sender', 'alice@example.com', T);
        await s.bindings.add('user', v.id, 'sender', 'bob@example.com', T);
        await s.bindings.setPermanent('user', [
          { id: u.id, kind: 'network', values: ['198.51.100.0/24', '10.0.0.0/8', '10.0.0.0/8'] },
          { id: u.id, kind: 'country', values: ['PT', 'DE'] },
          { id: u.id, kind: 'asn', values: [] },
          { id: v.id, kind: 'sender', values: [] },
        ], T + 1);
        expect(await s.bindings.list('user', u.id, T + 2)).toEqual([
          { kind: 'country', value: 'PT', expiresAt: null },
          { kind: 'country', value: 'DE', expiresAt: null },
          { kind: 'network', value: '198.51.100.0/24', expiresAt: null },
          { kind: 'network', value: '203.0.113.0/24', expiresAt: T + 1000 },
          { kind: 'network', value: '10.0.0.0/8', expiresAt: null },
          { kind: 'sender', value: 'alice@example.com', expiresAt: null },
        ]);
        expect(await s.bindings.list('user', v.id, T + 2)).toEqual([]);
        await s.bindings.setPermanent('user', [], T + 3);
        // Read back through listMany, for several principals at once (one without any binding).
        const many = await s.bindings.listMany('user', [u.id, v.id], T + 2000);
        expect([...many.keys()]).toEqual([u.id, v.id]);
        expect(many.get(u.id)).toEqual((await s.bindings.list('user', u.id, T + 2000)));
        expect(many.get(u.id)).not.toContainEqual(expect.objectContaining({ value: '203.0.113.0/24' }));
        expect(many.get(v.id)).toEqual([]);
      });

      it('adds a binding once: true when new, false when it is already there', async () => {
        const u = await addUser('alice');
        expect(await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T)).toBe(true);
        expect(await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T + 1)).toBe(false);
        expect(await s.bindings.list('user', u.id, T + 2)).toEqual([{ kind: 'network', value: '192.0.2.0/24', expiresAt: null }]);
      });

      it('lists the bindings of one kind in the order they were added, and every kind without one', async () => {
        const u = await addUser('alice');
        await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T);
        for (const v of ['zed@example.com', 'amy@example.com', '@example.org']) await s.bindings.add('user', u.id, 'sender', v, T);
        expect(await s.bindings.values('user', u.id, 'sender', T)).toEqual(['zed@example.com', 'amy@example.com', '@example.org']);
        expect(await s.bindings.list('user', u.id, T, 'sender')).toEqual([
          { kind: 'sender', value: 'zed@example.com', expiresAt: null },
          { kind: 'sender', value: 'amy@example.com', expiresAt: null },
          { kind: 'sender', value: '@example.org', expiresAt: null },
        ]);
        expect(await s.bindings.list('user', u.id, T)).toEqual([
          { kind: 'network', value: '192.0.2.0/24', expiresAt: null },
          { kind: 'sender', value: 'zed@example.com', expiresAt: null },
          { kind: 'sender', value: 'amy@example.com', expiresAt: null },
          { kind: 'sender', value: '@example.org', expiresAt: null },
        ]);
        expect(await s.bindings.values('user', u.id, 'recipient', T)).toEqual([]);
      });

      it('keeps the bindings of each principal apart, a device from a user', async () => {
        const u = await addUser('alice');
        const d = await addDevice('printer');
        await s.bindings.add('user', u.id, 'sender', 'alice@example.com', T);
        await s.bindings.add('device', d.id, 'sender', 'printer@example.com', T);
        await s.bindings.add('device', d.id, 'recipient', 'boss@example.com', T);
        expect(await s.bindings.values('user', u.id, 'sender', T)).toEqual(['alice@example.com']);
        expect(await s.bindings.values('device', d.id, 'sender', T)).toEqual(['printer@example.com']);
        expect(await s.bindings.values('user', u.id, 'recipient', T)).toEqual([]);
      });

      it('stops returning a time-limited binding once it lapses', async () => {
        const u = await addUser('alice');
        await s.bindings.add('user', u.id, 'sender', 'temp@example.com', T, T + 1000);
        expect(await s.bindings.list('user', u.id, T + 999)).toEqual([{ kind: 'sender', value: 'temp@example.com', expiresAt: T + 1000 }]);
        expect(await s.bindings.values('user', u.id, 'sender', T + 999)).toEqual(['temp@example.com']);
        expect(await s.bindings.list('user', u.id, T + 1000)).toEqual([]);
        expect(await s.bindings.values('user', u.id, 'sender', T + 1000)).toEqual([]);
      });

      it('refreshing a time-limited binding replaces its expiry in place, and a permanent one stays permanent', async () => {
        const u = await addUser('alice');
        expect(await s.bindings.add('user', u.id, 'sender', 'temp@example.com', T, T + 1000)).toBe(true);
        await s.bindings.add('user', u.id, 'sender', 'perm@example.com', T);
        expect(await s.bindings.add('user', u.id, 'sender', 'temp@example.com', T + 1, T + 5000)).toBe(false);
        expect(await s.bindings.list('user', u.id, T + 2000, 'sender')).toEqual([
          { kind: 'sender', value: 'temp@example.com', expiresAt: T + 5000 },
          { kind: 'sender', value: 'perm@example.com', expiresAt: null },
        ]);
        expect(await s.bindings.add('user', u.id, 'sender', 'perm@example.com', T + 2, T + 10)).toBe(false);
        expect(await s.bindings.list('user', u.id, T + 20, 'sender')).toContainEqual({ kind: 'sender', value: 'perm@example.com', expiresAt: null });
        expect(await s.bindings.add('user', u.id, 'sender', 'temp@example.com', T + 3, null)).toBe(false);
        expect(await s.bindings.list('user', u.id, T + 10_000, 'sender')).toEqual([
          { kind: 'sender', value: 'temp@example.com', expiresAt: null },
          { kind: 'sender', value: 'perm@example.com', expiresAt: null },
        ]);
      });

      it('a change is seen by the very next read', async () => {
        const u = await addUser('alice');
        expect(await s.bindings.values('user', u.id, 'network', T)).toEqual([]);
        await s.bindings.add('user', u.id, 'network', '198.51.100.0/24', T);
        expect(await s.bindings.values('user', u.id, 'network', T)).toEqual(['198.51.100.0/24']);
        await s.bindings.remove('user', u.id, 'network', '198.51.100.0/24');
        expect(await s.bindings.values('user', u.id, 'network', T)).toEqual([]);
      });

      it('remove deletes one binding, true once and then false, and a later add goes to the end', async () => {
        const u = await addUser('alice');
        for (const v of ['a@example.com', 'b@example.com']) await s.bindings.add('user', u.id, 'sender', v, T);
        expect(await s.bindings.remove('user', u.id, 'sender', 'a@example.com')).toBe(true);
        expect(await s.bindings.remove('user', u.id, 'sender', 'a@example.com')).toBe(false);
        expect(await s.bindings.remove('user', u.id, 'network', 'b@example.com')).toBe(false);
        expect(await s.bindings.values('user', u.id, 'sender', T)).toEqual(['b@example.com']);
        await s.bindings.add('user', u.id, 'sender', 'a@example.com', T);
        expect(await s.bindings.values('user', u.id, 'sender', T)).toEqual(['b@example.com', 'a@example.com']);
      });

      it('removeAll deletes every binding of one principal and no other', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        await s.bindings.add('user', a.id, 'sender', 'alice@example.com', T);
        await s.bindings.add('user', a.id, 'network', '192.0.2.0/24', T, T + 1000);
        await s.bindings.add('user', b.id, 'sender', 'bob@example.com', T);
        await s.bindings.removeAll('user', a.id);
        expect(await s.bindings.list('user', a.id, T)).toEqual([]);
        expect(await s.bindings.list('user', b.id, T)).toEqual([{ kind: 'sender', value: 'bob@example.com', expiresAt: null }]);
      });

      it('sweepLapsed deletes and returns the exceptions lapsed by then, and nothing else', async () => {
        const u = await addUser('alice');
        const d = await addDevice('printer');
        await s.bindings.add('user', u.id, 'sender', 'old@example.com', T, T + 100);
        await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T, T + 200);
        await s.bindings.add('user', u.id, 'sender', 'later@example.com', T, T + 201);
        await s.bindings.add('user', u.id, 'sender', 'perm@example.com', T);
        await s.bindings.add('device', d.id, 'recipient', 'boss@example.com', T, T + 150);
        const swept = await s.bindings.sweepLapsed(T + 200);
        expect([...swept].sort((x, y) => x.value.localeCompare(y.value))).toEqual([
          { pk: 'user', id: u.id, kind: 'network', value: '192.0.2.0/24', expiresAt: T + 200 },
          { pk: 'device', id: d.id, kind: 'recipient', value: 'boss@example.com', expiresAt: T + 150 },
          { pk: 'user', id: u.id, kind: 'sender', value: 'old@example.com', expiresAt: T + 100 },
        ]);
        // Read at a time before they lapsed: they are gone, not merely filtered out.
        expect(await s.bindings.list('user', u.id, T)).toEqual([
          { kind: 'sender', value: 'later@example.com', expiresAt: T + 201 },
          { kind: 'sender', value: 'perm@example.com', expiresAt: null },
        ]);
        expect(await s.bindings.list('device', d.id, T)).toEqual([]);
        expect(await s.bindings.sweepLapsed(T + 200)).toEqual([]);
      });

      it('keeps country and ASN bindings beside networks, for users and for app passwords alike', async () => {
        const u = await addUser('alice');
        const phone = await s.appPasswords.add(u.id, 'phone', 'pub-phone', 'hash-phone', T);
        await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T);
        await s.bindings.add('user', u.id, 'country', 'DE', T);
        await s.bindings.add('user', u.id, 'asn', '3320', T);
        await s.bindings.add('user', u.id, 'country', 'AT', T, T + 1000);
        expect(await s.bindings.add('user', u.id, 'country', 'DE', T + 1)).toBe(false);
        await s.bindings.add('app-password', phone.id, 'country', 'PT', T);
        await s.bindings.add('app-password', phone.id, 'asn', '16276', T);
        expect(await s.bindings.values('user', u.id, 'country', T)).toEqual(['DE', 'AT']);
        expect(await s.bindings.values('user', u.id, 'asn', T)).toEqual(['3320']);
        expect(await s.bindings.values('user', u.id, 'country', T + 1000)).toEqual(['DE']);
        expect(await s.bindings.list('user', u.id, T)).toEqual([
          { kind: 'asn', value: '3320', expiresAt: null },
          { kind: 'country', value: 'DE', expiresAt: null },
          { kind: 'country', value: 'AT', expiresAt: T + 1000 },
          { kind: 'network', value: '192.0.2.0/24', expiresAt: null },
        ]);
        // The same number as owner id means another principal for another owner kind.
        expect(await s.bindings.list('app-password', phone.id, T)).toEqual([
          { kind: 'asn', value: '16276', expiresAt: null },
          { kind: 'country', value: 'PT', expiresAt: null },
        ]);
        expect(await s.bindings.remove('app-password', phone.id, 'country', 'PT')).toBe(true);
        expect(await s.bindings.remove('user', u.id, 'country', 'PT')).toBe(false);
        expect(await s.bindings.values('app-password', phone.id, 'country', T)).toEqual([]);
        await s.bindings.removeAll('app-password', phone.id);
        expect(await s.bindings.list('app-password', phone.id, T)).toEqual([]);
        expect((await s.bindings.list('user', u.id, T)).length).toBe(4);
      });

      it('refuses country and ASN values not in their one written form, and sender or recipient bindings of an app password', async () => {
        const u = await addUser('alice');
        const phone = await s.appPasswords.add(u.id, 'phone', 'pub-phone', 'hash-phone', T);
        for (const v of ['de', 'DEU', 'D', '', 'D1']) expect(await rejection(s.bindings.add('user', u.id, 'country', v, T))).toBeInstanceOf(Error);
        for (const v of ['AS3320', '03320', '-1', '3320.5', '', '12345678901']) expect(await rejection(s.bindings.add('user', u.id, 'asn', v, T))).toBeInstanceOf(Error);
        expect(await rejection(s.bindings.add('app-password', phone.id, 'sender', 'alice@example.com', T))).toBeInstanceOf(Error);
        expect(await rejection(s.bindings.add('app-password', phone.id, 'recipient', 'bob@example.com', T))).toBeInstanceOf(Error);
        expect(await s.bindings.list('user', u.id, T)).toEqual([]);
        expect(await s.bindings.list('app-password', phone.id, T)).toEqual([]);
        // The widest forms still pass: AS 0 and the largest 32-bit number.
        await s.bindings.add('user', u.id, 'asn', '0', T);
        await s.bindings.add('user', u.id, 'asn', '4294967295', T);
        expect(await s.bindings.values('user', u.id, 'asn', T)).toEqual(['0', '4294967295']);
      });

      it('sweepLapsed returns lapsed country, ASN and app-password exceptions with their owner', async () => {
        const u = await addUser('alice');
        const phone = await s.appPasswords.add(u.id, 'phone', 'pub-phone', 'hash-phone', T);
        await s.bindings.add('user', u.id, 'country', 'PT', T, T + 100);
        await s.bindings.add('user', u.id, 'asn', '3320', T);
        await s.bindings.add('app-password', phone.id, 'asn', '16276', T, T + 100);
        await s.bindings.add('app-password', phone.id, 'country', 'FR', T, T + 101);
        const swept = await s.bindings.sweepLapsed(T + 100);
        expect([...swept].sort((x, y) => x.value.localeCompare(y.value))).toEqual([
          { pk: 'app-password', id: phone.id, kind: 'asn', value: '16276', expiresAt: T + 100 },
          { pk: 'user', id: u.id, kind: 'country', value: 'PT', expiresAt: T + 100 },
        ]);
        expect(await s.bindings.list('app-password', phone.id, T)).toEqual([{ kind: 'country', value: 'FR', expiresAt: T + 101 }]);
        expect(await s.bindings.list('user', u.id, T)).toEqual([{ kind: 'asn', value: '3320', expiresAt: null }]);
      });

      it('hasGeoBindings is true exactly while some binding names a country or an ASN, whoever owns it', async () => {
        const u = await addUser('alice');
        expect(await s.bindings.hasGeoBindings()).toBe(false);
        await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T);
        await s.bindings.add('user', u.id, 'sender', 'alice@example.com', T);
        expect(await s.bindings.hasGeoBindings()).toBe(false);
        await s.bindings.add('user', u.id, 'country', 'DE', T);
        expect(await s.bindings.hasGeoBindings()).toBe(true);
        await s.bindings.remove('user', u.id, 'country', 'DE');
        expect(await s.bindings.hasGeoBindings()).toBe(false);
        const phone = await s.appPasswords.add(u.id, 'phone', 'pub-phone', 'hash-phone', T);
        await s.bindings.add('app-password', phone.id, 'asn', '3320', T);
        expect(await s.bindings.hasGeoBindings()).toBe(true);
        // Its bindings go with a revoked app password, and the answer follows.
        await s.appPasswords.revoke(phone.id, T + 1);
        expect(await s.bindings.hasGeoBindings()).toBe(false);
      });
    });

    describe('mtaSts', () => {
      it('keeps one policy per domain, whatever the letter case, and replaces it on put', async () => {
        const p = { domain: 'Dest.Example', id: '1', mode: 'enforce' as const, mx: ['mx.dest.example', '*.dest.example'], maxAge: 86_400, text: ['version: STSv1', 'mode: enforce'], fetchedAt: T, expiresAt: T + 86_400_000 };
        expect(await s.mtaSts.get('dest.example')).toBeUndefined();
        await s.mtaSts.put(p);
        expect(await s.mtaSts.get('DEST.example')).toEqual({ ...p, domain: 'dest.example' });
        await s.mtaSts.put({ ...p, id: '2', mode: 'testing', mx: ['mx2.dest.example'], text: [], fetchedAt: T + 5 });
        expect(await s.mtaSts.get('dest.example')).toEqual({ ...p, domain: 'dest.example', id: '2', mode: 'testing', mx: ['mx2.dest.example'], text: [], fetchedAt: T + 5 });
      });
    });

    describe('tlsTickets', () => {
      const key = (startsAt: number, fill: number) => ({ startsAt, name: Buffer.alloc(16, fill), secret: Buffer.alloc(32, fill + 1) });
      it('keeps the first key claimed for a period: every later claimant gets that one', async () => {
        expect(await s.tlsTickets.claim(key(3_600_000, 1), T)).toEqual(key(3_600_000, 1));
        expect(await s.tlsTickets.claim(key(3_600_000, 7), T + 1)).toEqual(key(3_600_000, 1));
        expect(await s.tlsTickets.claim(key(7_200_000, 9), T + 2)).toEqual(key(7_200_000, 9));
      });

      it('lists the keys of the periods from a start, newest first, and prunes the older ones', async () => {
        for (const [i, start] of [0, 3_600_000, 7_200_000].entries()) await s.tlsTickets.claim(key(start, i * 3), T);
        expect((await s.tlsTickets.since(3_600_000)).map((k) => k.startsAt)).toEqual([7_200_000, 3_600_000]);
        expect(await s.tlsTickets.prune(3_600_000)).toBe(1);
        expect(await s.tlsTickets.since(0)).toEqual([key(7_200_000, 6), key(3_600_000, 3)]);
      });
    });

    describe('credentials', () => {
      it('makes a store-wide secret once: the first value asked with is kept and every later caller gets it', async () => {
        expect(await s.credentials.secret('password-fingerprint', 'first', T)).toBe('first');
        expect(await s.credentials.secret('password-fingerprint', 'second', T + 1)).toBe('first');
        expect(await s.credentials.secret('other', 'x', T)).toBe('x');
      });

      it('records compromised fingerprints once each, by account, and keeps them when the user is deleted', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        expect(await s.credentials.markCompromised('fp-1', 'alice', a.id, T)).toBe(true);
        expect(await s.credentials.markCompromised('fp-1', 'alice', a.id, T + 1)).toBe(false);
        expect(await s.credentials.markCompromised('fp-2', 'Alice@Example.com', a.id, T)).toBe(true);
        expect(await s.credentials.isCompromised('fp-1')).toBe(true);
        expect(await s.credentials.isCompromised('fp-3')).toBe(false);
        expect(await s.credentials.countCompromised(a.id, 'alice')).toBe(2);
        expect(await s.credentials.countCompromised(b.id, 'bob')).toBe(0);
        // Found by the account's name too, in any case: a user deleted and added again.
        expect(await s.credentials.markCompromised('fp-4', 'bob', b.id, T)).toBe(true);
        expect(await s.users.delete(b.id, T)).toBe(true);
        expect(await s.credentials.isCompromised('fp-4')).toBe(true);
        const b2 = await addUser('bob');
        expect(await s.credentials.countCompromised(b2.id, 'BOB')).toBe(1);
        expect(await s.credentials.forgetCompromised(b2.id, 'Bob')).toBe(1);
        expect(await s.credentials.isCompromised('fp-4')).toBe(false);
        expect(await s.credentials.forgetCompromised(a.id, 'alice')).toBe(2);
        expect(await s.credentials.isCompromised('fp-1')).toBe(false);
      });

      it('countCompromisedMany counts for several users in one call as countCompromised does with each name', async () => {
        const a = await addUser('alice');
        const b = await addUser('Bob');
        const c = await addUser('carol');
        await s.credentials.markCompromised('fp-1', 'alice', a.id, T);
        await s.credentials.markCompromised('fp-2', 'alice@example.com', a.id, T);
        // By the account's name alone, in another case (a user deleted and added again).
        await s.credentials.markCompromised('fp-3', 'BOB', null, T);
        const many = await s.credentials.countCompromisedMany([a.id, b.id, c.id]);
        expect([...many]).toEqual([[a.id, 2], [b.id, 1], [c.id, 0]]);
        for (const u of [a, b, c]) expect(many.get(u.id)).toBe(await s.credentials.countCompromised(u.id, u.name));
        expect(await s.credentials.countCompromisedMany([])).toEqual(new Map());
      });

      it('commits a fingerprint with the suspension of its transaction, or neither', async () => {
        const a = await addUser('alice');
        await expect(
          s.tx(async (t) => {
            await t.users.suspend(a.id, 'foreign-network', T);
            await t.credentials.markCompromised('fp-1', 'alice', a.id, T);
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect((await s.users.get(a.id))!.status).toBe('active');
        expect(await s.credentials.isCompromised('fp-1')).toBe(false);
      });
    });

    describe('tlsReports', () => {
      const sts = ['version: STSv1', 'mode: enforce', 'mx: mx.example.org', 'max_age: 86400'].join('\n');
      const entry = (o: Partial<TlsReportKey> = {}): TlsReportKey => ({
        day: '2026-11-22',
        policyDomain: 'example.org',
        policyType: 'sts',
        policyString: sts,
        mxHost: 'mx.example.org',
        result: 'success',
        sendingIp: '',
        receivingIp: '',
        ...o,
      });

      it('counts each kind of session of a day on its own row, adding to it (n at a time when asked)', async () => {
        await s.tlsReports.add(entry());
        await s.tlsReports.add(entry());
        await s.tlsReports.add(entry({ result: 'certificate-host-mismatch', sendingIp: '192.0.2.1', receivingIp: '198.51.100.7' }), 3);
        await s.tlsReports.add(entry({ policyDomain: 'example.net', policyType: 'no-policy-found', policyString: '', mxHost: '' }));
        await s.tlsReports.add(entry({ policyString: sts.replace('enforce', 'testing') }));
        await s.tlsReports.add(entry({ day: '2026-11-23' }), 5);
        expect(await s.tlsReports.entries('2026-11-22')).toEqual([
          { ...entry({ policyDomain: 'example.net', policyType: 'no-policy-found', policyString: '', mxHost: '' }), count: 1 },
          { ...entry({ result: 'certificate-host-mismatch', sendingIp: '192.0.2.1', receivingIp: '198.51.100.7' }), count: 3 },
          { ...entry(), count: 2 },
          { ...entry({ policyString: sts.replace('enforce', 'testing') }), count: 1 },
        ]);
        expect(await s.tlsReports.entries('2026-11-23')).toEqual([{ ...entry({ day: '2026-11-23' }), count: 5 }]);
        expect(await s.tlsReports.entries('2026-11-21')).toEqual([]);
      });

      it('daysBefore lists each day with counts strictly before the one given, oldest first', async () => {
        for (const day of ['2026-11-23', '2026-11-21', '2026-11-22', '2026-11-21']) await s.tlsReports.add(entry({ day }));
        expect(await s.tlsReports.daysBefore('2026-11-23')).toEqual(['2026-11-21', '2026-11-22']);
        expect(await s.tlsReports.daysBefore('2026-11-21')).toEqual([]);
        expect(await s.tlsReports.daysBefore('2027-01-01')).toEqual(['2026-11-21', '2026-11-22', '2026-11-23']);
      });

      it('clear forgets one policy domain of one day only', async () => {
        await s.tlsReports.add(entry());
        await s.tlsReports.add(entry({ result: 'starttls-not-supported' }));
        await s.tlsReports.add(entry({ policyDomain: 'example.net' }));
        await s.tlsReports.add(entry({ day: '2026-11-23' }));
        expect(await s.tlsReports.clear('2026-11-22', 'example.org')).toBe(2);
        expect(await s.tlsReports.clear('2026-11-22', 'example.org')).toBe(0);
        expect(await s.tlsReports.entries('2026-11-22')).toEqual([{ ...entry({ policyDomain: 'example.net' }), count: 1 }]);
        expect(await s.tlsReports.entries('2026-11-23')).toEqual([{ ...entry({ day: '2026-11-23' }), count: 1 }]);
      });

      it('counts every session when several processes add to the same row at once', async () => {
        const other = await env.reopen();
        await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? other : s).tlsReports.add(entry())));
        expect(await s.tlsReports.entries('2026-11-22')).toEqual([{ ...entry(), count: 20 }]);
      });

      it('keeps a policy of the largest size MTA-STS allows (64 KB) as one row', async () => {
        const big = ['version: STSv1', 'mode: enforce', ...Array.from({ length: 2500 }, (_, i) => `mx: mx${i}.example.org`), 'max_age: 86400'].join('\n');
        expect(big.length).toBeGreaterThan(50_000);
        await s.tlsReports.add(entry({ policyString: big }));
        await s.tlsReports.add(entry({ policyString: big }), 2);
        expect(await s.tlsReports.entries('2026-11-22')).toEqual([{ ...entry({ policyString: big }), count: 3 }]);
      });
    });

    describe('appPasswords', () => {
      const addPhone = (userId: number, label = 'phone', now = T) => s.appPasswords.add(userId, label, `pub-${userId}-${label}`, `hash-${label}`, now);

      it('adds an app password and returns it exactly as get, byPublicId, find and list then read it', async () => {
        const u = await addUser('alice');
        const p = await s.appPasswords.add(u.id, 'Phone', 'pub-1', 'hash-1', T);
        expect(p).toEqual({ id: expect.any(Number), userId: u.id, label: 'Phone', publicId: 'pub-1', passwordHash: 'hash-1', createdAt: T, lastUsedAt: null });
        expect(await s.appPasswords.get(p.id)).toEqual(p);
        expect(await s.appPasswords.byPublicId('pub-1')).toEqual(p);
        expect(await s.appPasswords.find(u.id, 'Phone')).toEqual(p);
        expect(await s.appPasswords.find(u.id, 'pHONE')).toEqual(p);
        expect(await s.appPasswords.list(u.id)).toEqual([p]);
        expect(await s.appPasswords.get(p.id + 1000)).toBeUndefined();
        expect(await s.appPasswords.byPublicId('PUB-1')).toBeUndefined();
        expect(await s.appPasswords.find(u.id, 'laptop')).toBeUndefined();
        expect(await s.appPasswords.find(u.id + 1000, 'Phone')).toBeUndefined();
      });

      it('refuses a second label of the same user, in any case, with AppPasswordExistsError; another user may use it', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const p = await s.appPasswords.add(a.id, 'phone', 'pub-1', 'hash-1', T);
        expect(await rejection(s.appPasswords.add(a.id, 'phone', 'pub-2', 'hash-2', T + 1))).toBeInstanceOf(AppPasswordExistsError);
        expect(await rejection(s.appPasswords.add(a.id, 'PHONE', 'pub-3', 'hash-3', T + 2))).toBeInstanceOf(AppPasswordExistsError);
        const q = await s.appPasswords.add(b.id, 'Phone', 'pub-4', 'hash-4', T + 3);
        expect(await s.appPasswords.list(a.id)).toEqual([p]);
        expect(await s.appPasswords.list(b.id)).toEqual([q]);
        // A public id is unique across users; that is not a label clash.
        const clash = await rejection(s.appPasswords.add(b.id, 'laptop', 'pub-1', 'hash-5', T + 4));
        expect(clash).toBeInstanceOf(Error);
        expect(clash).not.toBeInstanceOf(AppPasswordExistsError);
        expect(await s.appPasswords.list(b.id)).toEqual([q]);
      });

      it('listMany gives several users\' app passwords in one call, each as list gives them', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const c = await addUser('carol');
        await addPhone(a.id, 'laptop', T + 10);
        await addPhone(a.id, 'phone', T + 5);
        await addPhone(b.id, 'phone', T);
        const many = await s.appPasswords.listMany([a.id, b.id, c.id]);
        expect([...many.keys()]).toEqual([a.id, b.id, c.id]);
        for (const u of [a, b, c]) expect(many.get(u.id)).toEqual(await s.appPasswords.list(u.id));
        expect(many.get(a.id)!.map((p) => p.label)).toEqual(['phone', 'laptop']);
        expect(await s.appPasswords.listMany([])).toEqual(new Map());
      });

      it("list gives one user's app passwords, oldest first", async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const laptop = await addPhone(a.id, 'laptop', T + 10);
        const phone = await addPhone(a.id, 'phone', T + 5);
        const tablet = await addPhone(a.id, 'tablet', T + 10);
        await addPhone(b.id, 'phone', T);
        expect((await s.appPasswords.list(a.id)).map((p) => p.id)).toEqual([phone.id, laptop.id, tablet.id]);
        expect(await s.appPasswords.list(a.id + b.id + 1000)).toEqual([]);
      });

      it('touch records a use at most once a minute, and only on the one app password', async () => {
        const u = await addUser('alice');
        const phone = await addPhone(u.id, 'phone');
        const laptop = await addPhone(u.id, 'laptop');
        await s.appPasswords.touch(phone.id, T + 1000);
        expect((await s.appPasswords.find(u.id, 'phone'))!.lastUsedAt).toBe(T + 1000);
        await s.appPasswords.touch(phone.id, T + 1000 + MINUTE);
        expect((await s.appPasswords.find(u.id, 'phone'))!.lastUsedAt).toBe(T + 1000);
        await s.appPasswords.touch(phone.id, T + 1001 + MINUTE);
        expect((await s.appPasswords.find(u.id, 'phone'))!.lastUsedAt).toBe(T + 1001 + MINUTE);
        expect(await s.appPasswords.find(u.id, 'laptop')).toEqual(laptop);
        expect(await s.users.get(u.id)).toMatchObject({ authEpoch: 0, updatedAt: T });
        await s.appPasswords.touch(phone.id + laptop.id + 1000, T);
      });

      it("revoke deletes one app password and its bindings and bumps its user's auth epoch; the rest stays", async () => {
        const a = await s.users.add('alice', 'hash', T);
        const b = await s.users.add('bob', 'hash', T);
        const phone = await addPhone(a.id, 'phone');
        const laptop = await addPhone(a.id, 'laptop');
        const bobs = await addPhone(b.id, 'phone');
        for (const [pk, id] of [['user', a.id], ['user', b.id], ['app-password', phone.id], ['app-password', laptop.id], ['app-password', bobs.id]] as const) {
          await s.bindings.add(pk, id, 'country', 'DE', T);
          await s.bindings.add(pk, id, 'network', '192.0.2.0/24', T);
        }
        // Read through the cache before: the revocation must be seen by the next read.
        expect(await s.appPasswords.byPublicId(phone.publicId)).toEqual(phone);
        expect(await s.appPasswords.list(a.id)).toEqual([phone, laptop]);
        expect(await s.bindings.values('app-password', phone.id, 'country', T)).toEqual(['DE']);

        expect(await s.appPasswords.revoke(phone.id, T + 50)).toBe(true);
        expect(await s.appPasswords.get(phone.id)).toBeUndefined();
        expect(await s.appPasswords.byPublicId(phone.publicId)).toBeUndefined();
        expect(await s.appPasswords.find(a.id, 'phone')).toBeUndefined();
        expect(await s.appPasswords.list(a.id)).toEqual([laptop]);
        expect(await s.bindings.list('app-password', phone.id, T)).toEqual([]);
        expect(await s.users.get(a.id)).toEqual({ ...a, authEpoch: a.authEpoch + 1, updatedAt: T + 50 });

        const both = [{ kind: 'country', value: 'DE', expiresAt: null }, { kind: 'network', value: '192.0.2.0/24', expiresAt: null }];
        for (const [pk, id] of [['user', a.id], ['user', b.id], ['app-password', laptop.id], ['app-password', bobs.id]] as const) expect(await s.bindings.list(pk, id, T)).toEqual(both);
        expect(await s.appPasswords.list(b.id)).toEqual([bobs]);
        expect(await s.users.get(b.id)).toEqual(b);

        expect(await s.appPasswords.revoke(phone.id, T + 60)).toBe(false);
        expect((await s.users.get(a.id))!.authEpoch).toBe(a.authEpoch + 1);
      });

      it("revokeAll revokes every app password of one user, bumps its epoch once and says how many", async () => {
        const a = await s.users.add('alice', 'hash', T);
        const b = await s.users.add('bob', 'hash', T);
        const phone = await addPhone(a.id, 'phone');
        const laptop = await addPhone(a.id, 'laptop');
        const bobs = await addPhone(b.id, 'phone');
        for (const p of [phone, laptop, bobs]) await s.bindings.add('app-password', p.id, 'asn', '3320', T);
        await s.bindings.add('user', a.id, 'asn', '3320', T);
        expect(await s.appPasswords.list(a.id)).toEqual([phone, laptop]);

        expect(await s.appPasswords.revokeAll(a.id, T + 50)).toBe(2);
        expect(await s.appPasswords.list(a.id)).toEqual([]);
        expect(await s.appPasswords.byPublicId(laptop.publicId)).toBeUndefined();
        for (const p of [phone, laptop]) expect(await s.bindings.list('app-password', p.id, T)).toEqual([]);
        expect(await s.users.get(a.id)).toEqual({ ...a, authEpoch: a.authEpoch + 1, updatedAt: T + 50 });
        expect(await s.bindings.values('user', a.id, 'asn', T)).toEqual(['3320']);
        expect(await s.appPasswords.list(b.id)).toEqual([bobs]);
        expect(await s.bindings.values('app-password', bobs.id, 'asn', T)).toEqual(['3320']);
        expect(await s.users.get(b.id)).toEqual(b);

        expect(await s.appPasswords.revokeAll(a.id, T + 60)).toBe(0);
        expect(await s.users.get(a.id)).toEqual({ ...a, authEpoch: a.authEpoch + 1, updatedAt: T + 50 });
      });

      it("deleting a user deletes its app passwords and their bindings, and no one else's", async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const phone = await addPhone(a.id, 'phone');
        const bobs = await addPhone(b.id, 'phone');
        await s.bindings.add('app-password', phone.id, 'country', 'DE', T);
        await s.bindings.add('app-password', bobs.id, 'country', 'DE', T);
        expect(await s.appPasswords.byPublicId(phone.publicId)).toEqual(phone);
        expect(await s.users.delete(a.id, T + 1)).toBe(true);
        expect(await s.appPasswords.byPublicId(phone.publicId)).toBeUndefined();
        expect(await s.appPasswords.get(phone.id)).toBeUndefined();
        expect(await s.appPasswords.list(a.id)).toEqual([]);
        expect(await s.bindings.list('app-password', phone.id, T)).toEqual([]);
        expect(await s.appPasswords.list(b.id)).toEqual([bobs]);
        expect(await s.bindings.values('app-password', bobs.id, 'country', T)).toEqual(['DE']);
      });

      it('an app password added in a transaction that fails is not there', async () => {
        const u = await addUser('alice');
        await expect(
          s.tx(async (t) => {
            const p = await t.appPasswords.add(u.id, 'phone', 'pub-1', 'hash-1', T);
            await t.bindings.add('app-password', p.id, 'country', 'DE', T);
            throw new Error('abort');
          }),
        ).rejects.toThrow('abort');
        expect(await s.appPasswords.list(u.id)).toEqual([]);
        expect(await s.appPasswords.byPublicId('pub-1')).toBeUndefined();
        expect(await s.bindings.hasGeoBindings()).toBe(false);
      });
    });

    describe('senderDomains', () => {
      it('lists each domain users and devices may send as once, lower-cased and sorted', async () => {
        const u = await addUser('alice');
        const d = await addDevice('printer');
        await s.bindings.add('user', u.id, 'sender', 'alice@Example.COM', T);
        await s.bindings.add('user', u.id, 'sender', '@example.com', T);
        await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', T);
        await s.bindings.add('device', d.id, 'sender', 'printer@office.example.org', T);
        await s.bindings.add('device', d.id, 'recipient', 'boss@elsewhere.example', T);
        expect(await s.senderDomains(T)).toEqual(['example.com', 'office.example.org']);
      });

      it('leaves out exceptions that have lapsed', async () => {
        const u = await addUser('alice');
        await s.bindings.add('user', u.id, 'sender', '@old.example', T, T + 100);
        await s.bindings.add('user', u.id, 'sender', '@current.example', T, T + 200);
        expect(await s.senderDomains(T + 99)).toEqual(['current.example', 'old.example']);
        expect(await s.senderDomains(T + 100)).toEqual(['current.example']);
      });

      it('is empty when nothing is bound', async () => {
        expect(await s.senderDomains(T)).toEqual([]);
      });
    });

    describe('incidents', () => {
      const report = (p: Principal, kind = 'foreign-network') => ({
        principalKind: p.kind,
        principalId: p.id,
        principalName: p.name,
        principalRef: principalOf(p),
        kind,
        clientIp: '203.0.113.9',
      });

      it('counts the open incidents of several principals in one call, as list gives them one by one', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const c = await addUser('carol');
        const first = await s.incidents.record(report(a, 'foreign-network'), T, null);
        await s.incidents.record(report(a, 'foreign-sender'), T + 1, null);
        await s.incidents.record(report(b), T, null);
        expect(await s.incidents.resolve(first.incident!.id, { actor: 'helpdesk', reason: null, now: T + 2 })).toBe('resolved');
        const refs = [a, b, c].map(principalOf);
        const many = await s.incidents.countOpenMany(refs);
        expect([...many]).toEqual([[refs[0], 1], [refs[1], 1], [refs[2], 0]]);
        for (const p of [a, b, c]) expect(many.get(principalOf(p))).toBe((await s.incidents.list({ principal: principalOf(p), open: true })).length);
        expect(await s.incidents.countOpenMany([])).toEqual(new Map());
      });

      it('records an incident with every field and reads it back by id', async () => {
        const a = await addUser('alice');
        const d = await addDevice('printer');
        const r = await s.incidents.record({ ...report(a, 'foreign-sender'), sender: 'ceo@example.com', detail: 'tried it' }, T, 15 * MINUTE);
        const want = {
          id: expect.any(Number),
          principalKind: 'user',
          principalId: a.id,
          principalName: 'alice',
          kind: 'foreign-sender',
          clientIp: '203.0.113.9',
          sender: 'ceo@example.com',
          detail: 'tried it',
          createdAt: T,
          resolvedAt: null,
          resolvedBy: null,
          notified: true,
        };
        expect(r).toEqual({ incident: want, notify: true });
        expect(await s.incidents.get(r.incident.id)).toEqual(r.incident);
        expect(await s.incidents.get(r.incident.id + 1000)).toBeUndefined();
        const bare = await s.incidents.record({ principalKind: 'device', principalId: null, principalName: 'printer', principalRef: principalOf(d), kind: 'manual' }, T + 1, null);
        expect(bare.incident).toEqual({ ...want, principalKind: 'device', principalId: null, principalName: 'printer', kind: 'manual', clientIp: null, sender: null, detail: null, createdAt: T + 1, notified: false });
        expect(bare.incident.id).not.toBe(r.incident.id);
      });

      it('notifies the first incident of a burst only, and opens a new burst once the window has passed', async () => {
        const a = await addUser('alice');
        const burst = 15 * MINUTE;
        expect((await s.incidents.record(report(a), T, burst)).notify).toBe(true);
        const second = await s.incidents.record(report(a), T + 1, burst);
        expect(second.notify).toBe(false);
        expect(second.incident.notified).toBe(false);
        expect((await s.incidents.record(report(a, 'foreign-sender'), T + burst - 1, burst)).notify).toBe(false);
        expect((await s.incidents.record(report(a), T + burst, burst)).notify).toBe(true);
      });

      it('keeps bursts apart per principal, a device from a user of the same name', async () => {
        const burst = 15 * MINUTE;
        const a = await addUser('alice');
        const b = await addUser('bob');
        const d = await addDevice('alice');
        expect((await s.incidents.record(report(a), T, burst)).notify).toBe(true);
        expect((await s.incidents.record(report(b), T + 1, burst)).notify).toBe(true);
        expect((await s.incidents.record(report(d), T + 2, burst)).notify).toBe(true);
        expect((await s.incidents.record(report(a), T + 3, burst)).notify).toBe(false);
      });

      it('an incident recorded without a burst window neither notifies nor opens a burst', async () => {
        const a = await addUser('alice');
        const r = await s.incidents.record(report(a), T, null);
        expect(r.notify).toBe(false);
        expect(r.incident.notified).toBe(false);
        expect((await s.incidents.record(report(a), T + 1, 15 * MINUTE)).notify).toBe(true);
      });

      it('lists incidents newest first, filtered by kind of principal, name in any case, openness and limit', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const d = await addDevice('printer');
        const a1 = (await s.incidents.record(report(a), T, null)).incident;
        const b1 = (await s.incidents.record(report(b), T + 1, null)).incident;
        const d1 = (await s.incidents.record(report(d, 'foreign-recipient'), T + 2, null)).incident;
        const a2 = (await s.incidents.record(report(a, 'rate-limit'), T + 3, null)).incident;
        expect(await s.incidents.list()).toEqual([a2, d1, b1, a1]);
        expect(await s.incidents.list({ principalKind: 'device' })).toEqual([d1]);
        expect(await s.incidents.list({ name: 'ALICE' })).toEqual([a2, a1]);
        expect(await s.incidents.list({ limit: 2 })).toEqual([a2, d1]);
        await s.incidents.resolveOpen(principalOf(b), 'admin', T + 10);
        expect(await s.incidents.list({ open: true })).toEqual([a2, d1, a1]);
        expect(await s.incidents.list({ principalKind: 'user', name: 'alice', open: true, limit: 1 })).toEqual([a2]);
      });

      it('lists incidents of the same time in the order they were recorded, newest first', async () => {
        const a = await addUser('alice');
        const first = (await s.incidents.record(report(a), T, null)).incident;
        const second = (await s.incidents.record(report(a), T, null)).incident;
        expect(await s.incidents.list()).toEqual([second, first]);
      });

      it('hasOpen says whether a principal has an unresolved incident, optionally of one kind since a time', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const d = await addDevice('alice');
        expect(await s.incidents.hasOpen(principalOf(a))).toBe(false);
        await s.incidents.record(report(a, 'foreign-network'), T, null);
        expect(await s.incidents.hasOpen(principalOf(a))).toBe(true);
        expect(await s.incidents.hasOpen(principalOf(d))).toBe(false);
        expect(await s.incidents.hasOpen(principalOf(b))).toBe(false);
        expect(await s.incidents.hasOpen(principalOf(a), { kind: 'foreign-network', since: T - 1 })).toBe(true);
        expect(await s.incidents.hasOpen(principalOf(a), { kind: 'foreign-network', since: T + 1 })).toBe(false);
        expect(await s.incidents.hasOpen(principalOf(a), { kind: 'rate-limit', since: 0 })).toBe(false);
      });

      it('recordUnlessOpen records one incident of a kind while one is open since the time given, even when asked twice at once', async () => {
        const a = await addUser('alice');
        const both = await Promise.all([
          s.incidents.recordUnlessOpen(report(a, 'remote-rejections'), T, null, T - HOUR),
          s.incidents.recordUnlessOpen(report(a, 'remote-rejections'), T, null, T - HOUR),
        ]);
        expect(both.filter((r) => r !== null)).toHaveLength(1);
        expect(await s.incidents.recordUnlessOpen(report(a, 'rate-limit'), T, null, T - HOUR)).not.toBeNull();
        // One opened before `since` does not count.
        expect(await s.incidents.recordUnlessOpen(report(a, 'remote-rejections'), T + 2 * HOUR, null, T + HOUR)).not.toBeNull();
        expect((await s.incidents.list({ principal: principalOf(a) })).map((i) => i.kind).sort()).toEqual(['rate-limit', 'remote-rejections', 'remote-rejections']);
      });

      it('lists by principal only that principal, where by name it lists every principal that had the name', async () => {
        const old = await addUser('alice');
        await s.incidents.record(report(old), T, null);
        await s.users.delete(old.id, T + 1);
        const now = await addUser('alice');
        await s.incidents.record(report(now, 'manual'), T + 2, null);
        expect((await s.incidents.list({ principal: principalOf(now) })).map((i) => i.kind)).toEqual(['manual']);
        expect((await s.incidents.list({ name: 'alice' })).map((i) => i.kind)).toEqual(['manual', 'foreign-network']);
      });

      it('resolveOpen resolves every open incident of one principal, with who and when, and says how many', async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const a1 = (await s.incidents.record(report(a), T, null)).incident;
        const a2 = (await s.incidents.record(report(a, 'foreign-sender'), T + 1, null)).incident;
        const b1 = (await s.incidents.record(report(b), T + 2, null)).incident;
        expect(await s.incidents.resolveOpen(principalOf(a), 'admin', T + 10)).toBe(2);
        expect(await s.incidents.get(a1.id)).toEqual({ ...a1, resolvedAt: T + 10, resolvedBy: 'admin' });
        expect(await s.incidents.get(a2.id)).toEqual({ ...a2, resolvedAt: T + 10, resolvedBy: 'admin' });
        expect(await s.incidents.get(b1.id)).toEqual(b1);
        expect(await s.incidents.hasOpen(principalOf(a))).toBe(false);
        expect(await s.incidents.hasOpen(principalOf(b))).toBe(true);
        expect(await s.incidents.resolveOpen(principalOf(a), 'someone else', T + 20)).toBe(0);
        expect((await s.incidents.get(a1.id))?.resolvedBy).toBe('admin');
      });

      it('resolve closes one incident by id, audited with who, why and what it was, and says when there was nothing to close', async () => {
        const a = await addUser('alice');
        const a1 = (await s.incidents.record(report(a, 'rate-limit'), T, null)).incident;
        const a2 = (await s.incidents.record(report(a), T + 1, null)).incident;
        expect(await s.incidents.resolve(a1.id, { actor: 'helpdesk-bob', reason: 'newsletter by hand', now: T + 10 })).toBe('resolved');
        expect(await s.incidents.get(a1.id)).toEqual({ ...a1, resolvedAt: T + 10, resolvedBy: 'helpdesk-bob' });
        expect(await s.incidents.get(a2.id)).toEqual(a2);
        expect(await s.incidents.hasOpen(principalOf(a))).toBe(true);
        expect(await s.audit.list({ target: `incident:${a1.id}` })).toEqual([
          { id: expect.any(Number), at: T + 10, actor: 'helpdesk-bob', action: 'incident.resolve', target: `incident:${a1.id}`, detail: { principal: 'alice', principal_kind: 'user', kind: 'rate-limit' }, reason: 'newsletter by hand' },
        ]);
        expect(await s.incidents.resolve(a1.id, { actor: 'someone else', reason: null, now: T + 20 })).toBe('already-resolved');
        expect((await s.incidents.get(a1.id))?.resolvedBy).toBe('helpdesk-bob');
        expect(await s.incidents.resolve(a2.id + 1000, { actor: 'x', reason: null, now: T + 20 })).toBe('not-found');
        expect(await s.audit.list({ target: `incident:${a1.id}` })).toHaveLength(1);
        expect(await s.incidents.resolve(a2.id, { actor: 'helpdesk-bob', reason: null, now: T + 30 })).toBe('resolved');
        expect(await s.incidents.hasOpen(principalOf(a))).toBe(false);
      });
    });

    describe('audit', () => {
      const entry = (at: number, target: string, action = 'user.suspend') => ({ at, actor: 'admin', action, target, detail: { n: at - T }, reason: 'because' });

      it('lists entries newest first, exactly as recorded', async () => {
        await s.audit.record(entry(T, 'message:A1'));
        await s.audit.record(entry(T + 2, 'message:A2'));
        await s.audit.record({ ...entry(T + 1, 'message:A3'), detail: null, reason: null });
        expect(await s.audit.list()).toEqual([
          { id: expect.any(Number), ...entry(T + 2, 'message:A2') },
          { id: expect.any(Number), ...entry(T + 1, 'message:A3'), detail: null, reason: null },
          { id: expect.any(Number), ...entry(T, 'message:A1') },
        ]);
      });

      it('records several entries at once, in the order given', async () => {
        await s.audit.recordMany([entry(T, 'user:a', 'user.import'), { ...entry(T, 'user:b', 'user.import'), detail: null, reason: null }]);
        await s.audit.recordMany([]);
        const rows = await s.audit.list();
        expect(rows).toEqual([
          { id: expect.any(Number), ...entry(T, 'user:b', 'user.import'), detail: null, reason: null },
          { id: expect.any(Number), ...entry(T, 'user:a', 'user.import') },
        ]);
        expect(rows[0]!.id).toBeGreaterThan(rows[1]!.id);
      });

      it('gives every detail back as an object: JSON text as its object, words as {"text": ...}', async () => {
        await s.audit.record({ ...entry(T, 'user:a'), detail: '{"senders":["a@example.com"]}' });
        await s.audit.record({ ...entry(T + 1, 'user:a'), detail: 'network 192.0.2.0/24' });
        await s.audit.record({ ...entry(T + 2, 'user:a'), detail: '["not", "an object"]' });
        expect((await s.audit.list()).map((e) => e.detail)).toEqual([{ text: '["not", "an object"]' }, { text: 'network 192.0.2.0/24' }, { senders: ['a@example.com'] }]);
      });

      it('gives a follower the entries after its cursor, oldest first, and moves the cursor only from where it stands', async () => {
        await s.audit.record(entry(T, 'message:old'));
        // A follower seen for the first time starts at the newest entry: the past is in postern audit.
        const start = await s.audit.cursor('log');
        expect((await s.audit.after(start, 10)).map((e) => e.target)).toEqual([]);
        for (const t of ['message:B1', 'message:B2', 'message:B3']) await s.audit.record(entry(T + 1, t));
        const rows = await s.audit.after(start, 2);
        expect(rows).toEqual([
          { id: start + 1, ...entry(T + 1, 'message:B1') },
          { id: start + 2, ...entry(T + 1, 'message:B2') },
        ]);
        expect(await s.audit.cursor('log')).toBe(start);
        expect(await s.audit.advanceCursor('log', start, start + 2)).toBe(true);
        // A second process that read the same entries does not move it again.
        expect(await s.audit.advanceCursor('log', start, start + 2)).toBe(false);
        expect(await s.audit.cursor('log')).toBe(start + 2);
        expect((await s.audit.after(start + 2, 10)).map((e) => e.target)).toEqual(['message:B3']);
        expect(await s.audit.cursor('another')).toBe(start + 3);
      });

      it('lists entries of the same time in the order they were recorded, newest first', async () => {
        await s.audit.record(entry(T, 'message:first'));
        await s.audit.record(entry(T, 'message:second'));
        expect((await s.audit.list()).map((e) => e.target)).toEqual(['message:second', 'message:first']);
      });

      it('filters by target whatever its case, and honours the limit', async () => {
        for (let i = 0; i < 3; i++) await s.audit.record(entry(T + i, 'message:A1'));
        await s.audit.record(entry(T + 5, 'message:B2'));
        expect((await s.audit.list({ target: 'MESSAGE:a1' })).map((e) => e.at)).toEqual([T + 2, T + 1, T]);
        expect((await s.audit.list({ target: 'message:A1', limit: 2 })).map((e) => e.at)).toEqual([T + 2, T + 1]);
        expect((await s.audit.list({ limit: 1 })).map((e) => e.target)).toEqual(['message:B2']);
        expect(await s.audit.list({ target: 'message:none' })).toEqual([]);
      });
    });

    describe('limits', () => {
      const admitUpTo =
        (max: number) =>
        (u: Usage): QuotaDecision =>
          u.messagesHour < max ? { admit: true } : { admit: false, retryAt: (u.oldestHourAt ?? 0) + HOUR };
      const empty: Usage = { messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null };

      it('usage of a principal that never sent is zero', async () => {
        const p = await addUser('alice');
        expect(await s.limits.usage(principalOf(p), T)).toEqual(empty);
      });

      it('reserve hands decide the current usage and records one message when it admits', async () => {
        const p = principalOf(await addUser('alice'));
        const seen: Usage[] = [];
        const decide = (u: Usage): QuotaDecision => {
          seen.push(u);
          return { admit: true };
        };
        expect(await s.limits.reserve(p, 3, T, decide)).toEqual({ admit: true });
        expect(await s.limits.reserve(p, 2, T + 2 * MINUTE, decide)).toEqual({ admit: true });
        expect(seen).toEqual([empty, { messagesHour: 1, recipientsHour: 3, recipientsDay: 3, lastAt: T, oldestHourAt: T }]);
        expect(await s.limits.usage(p, T + 2 * MINUTE)).toEqual({ messagesHour: 2, recipientsHour: 5, recipientsDay: 5, lastAt: T + 2 * MINUTE, oldestHourAt: T });
      });

      it('reserve records nothing when decide refuses, and returns the refusal', async () => {
        const p = principalOf(await addUser('alice'));
        expect(await s.limits.reserve(p, 1, T, admitUpTo(1))).toEqual({ admit: true });
        expect(await s.limits.reserve(p, 4, T + MINUTE, admitUpTo(1))).toEqual({ admit: false, retryAt: T + HOUR });
        expect(await s.limits.usage(p, T + MINUTE)).toEqual({ messagesHour: 1, recipientsHour: 1, recipientsDay: 1, lastAt: T, oldestHourAt: T });
      });

      it('reserve counts each principal apart', async () => {
        const a = principalOf(await addUser('alice'));
        const b = principalOf(await addUser('bob'));
        await s.limits.reserve(a, 2, T, admitUpTo(1));
        expect(await s.limits.reserve(b, 1, T, admitUpTo(1))).toEqual({ admit: true });
        expect((await s.limits.usage(a, T)).recipientsHour).toBe(2);
        expect((await s.limits.usage(b, T)).recipientsHour).toBe(1);
      });

      it('of many reservations at once, no more are admitted than the limit allows', async () => {
        const p = principalOf(await addUser('alice'));
        const results = await Promise.all(Array.from({ length: 6 }, (_, i) => s.limits.reserve(p, 1, T + i, admitUpTo(3))));
        expect(results.filter((r) => r.admit)).toHaveLength(3);
        expect((await s.limits.usage(p, T + 10)).messagesHour).toBe(3);
      });

      it('usage leaves the hour window an hour after it was reserved, and the day window a day after', async () => {
        const p = principalOf(await addUser('alice'));
        await s.limits.reserve(p, 2, T, admitUpTo(10));
        await s.limits.reserve(p, 3, T + 2 * MINUTE, admitUpTo(10));
        const last = T + 2 * MINUTE;
        expect(await s.limits.usage(p, T + HOUR - 1)).toEqual({ messagesHour: 2, recipientsHour: 5, recipientsDay: 5, lastAt: last, oldestHourAt: T });
        expect(await s.limits.usage(p, T + HOUR)).toEqual({ messagesHour: 1, recipientsHour: 3, recipientsDay: 5, lastAt: last, oldestHourAt: last });
        expect(await s.limits.usage(p, last + HOUR)).toEqual({ messagesHour: 0, recipientsHour: 0, recipientsDay: 5, lastAt: last, oldestHourAt: null });
        expect(await s.limits.usage(p, T + DAY)).toEqual({ messagesHour: 0, recipientsHour: 0, recipientsDay: 3, lastAt: last, oldestHourAt: null });
        expect(await s.limits.usage(p, last + DAY)).toEqual(empty);
      });

      it('purge drops ledger rows older than a day, says how many, and keeps recent usage', async () => {
        const a = await addUser('alice');
        const p = principalOf(a);
        await s.limits.reserve(p, 1, T, admitUpTo(10));
        await s.limits.reserve(p, 1, T + MINUTE, admitUpTo(10));
        await s.limits.reserve(p, 4, T + DAY + 2 * MINUTE, admitUpTo(10));
        expect((await s.stats.since(T - 1)).map((r) => r.messages)).toEqual([3]);
        expect(await s.limits.purge(T + DAY + 2 * MINUTE)).toBe(2);
        expect((await s.stats.since(T - 1)).map((r) => r.messages)).toEqual([1]);
        expect(await s.limits.usage(p, T + DAY + 2 * MINUTE)).toEqual({ messagesHour: 1, recipientsHour: 4, recipientsDay: 4, lastAt: T + DAY + 2 * MINUTE, oldestHourAt: T + DAY + 2 * MINUTE });
        expect(await s.limits.purge(T + DAY + 2 * MINUTE)).toBe(0);
      });

      it('override is undefined until set; setOverride changes only the figures given', async () => {
        const p = principalOf(await addUser('alice'));
        const other = principalOf(await addUser('bob'));
        expect(await s.limits.override(p)).toBeUndefined();
        await s.limits.setOverride(p, { messagesPerHour: 50 }, T);
        expect(await s.limits.override(p)).toEqual({ messagesPerHour: 50, recipientsPerHour: null, recipientsPerDay: null });
        await s.limits.setOverride(p, { recipientsPerDay: 900 }, T + 1);
        expect(await s.limits.override(p)).toEqual({ messagesPerHour: 50, recipientsPerHour: null, recipientsPerDay: 900 });
        await s.limits.setOverride(p, { messagesPerHour: null, recipientsPerHour: 200 }, T + 2);
        expect(await s.limits.override(p)).toEqual({ messagesPerHour: null, recipientsPerHour: 200, recipientsPerDay: 900 });
        expect(await s.limits.override(other)).toBeUndefined();
      });

      describe('mail waiting for quota', () => {
        it("waiting counts one principal's messages and recipients waiting for quota, nothing else", async () => {
          const a = await addUser('alice');
          const b = await addUser('bob');
          const c = await addUser('carol');
          await put(
            message({ at: T, state: 'waiting-quota', principal: a, rcpts: ['x@example.org', 'y@example.org'] }),
            message({ at: T + 1, state: 'waiting-quota', principal: a }),
            message({ at: T + 2, state: 'held', principal: a }),
            message({ at: T + 3, state: 'queued', principal: a }),
            message({ at: T + 4, state: 'waiting-quota', principal: b }),
          );
          expect(await s.limits.waiting(principalOf(a))).toEqual({ messages: 2, recipients: 3 });
          expect(await s.limits.waiting(principalOf(b))).toEqual({ messages: 1, recipients: 1 });
          expect(await s.limits.waiting(principalOf(c))).toEqual({ messages: 0, recipients: 0 });
        });

        it('oldestWaiting names the message that has waited longest, with its recipients', async () => {
          const a = await addUser('alice');
          const b = await addUser('bob');
          await putOne({ at: T + 10, state: 'waiting-quota', principal: a });
          const oldest = await putOne({ at: T, state: 'waiting-quota', principal: a, rcpts: ['x@example.org', 'y@example.net'] });
          await putOne({ at: T - 10, state: 'held', principal: a });
          await putOne({ at: T - 10, state: 'queued', principal: a });
          const got = await s.limits.oldestWaiting(principalOf(a));
          expect(got && { id: got.id, rcpts: [...got.rcpts].sort() }).toEqual({ id: oldest, rcpts: ['x@example.org', 'y@example.net'] });
          expect(await s.limits.oldestWaiting(principalOf(b))).toBeUndefined();
        });

        it('promote hands a waiting message to delivery, due at once, exactly once', async () => {
          const a = await addUser('alice');
          const [w, h] = await put(message({ at: T, state: 'waiting-quota', principal: a }), message({ at: T + 1, state: 'held', principal: a }));
          expect(await s.limits.promote(w!, T + 100)).toBe(true);
          expect(await s.queue.get(w!)).toMatchObject({ state: 'queued', nextAttemptAt: T + 100, attempts: 0 });
          expect((await s.quarantine.get(w!))?.heldAt).toBeNull();
          expect(await s.limits.waiting(principalOf(a))).toEqual({ messages: 0, recipients: 0 });
          expect(await s.limits.promote(w!, T + 200)).toBe(false);
          expect((await s.queue.get(w!))?.nextAttemptAt).toBe(T + 100);
          expect(await s.limits.promote(h!, T + 100)).toBe(false);
          expect((await s.queue.get(h!))?.state).toBe('held');
          expect(await s.delivery.claimDue('worker', T + 100, T + 200, 10)).toEqual([w]);
        });

        it('principalsWaiting lists active principals with waiting mail, each once', async () => {
          const a = await addUser('alice');
          const b = await addUser('bob');
          const c = await addUser('carol');
          const d = await addDevice('printer');
          await put(
            message({ at: T, state: 'waiting-quota', principal: a }),
            message({ at: T + 1, state: 'waiting-quota', principal: a }),
            message({ at: T + 2, state: 'held', principal: b }),
            message({ at: T + 3, state: 'queued', principal: b }),
            message({ at: T + 4, state: 'waiting-quota', principal: c }),
            message({ at: T + 5, state: 'waiting-quota', principal: d }),
            message({ at: T + 6, state: 'waiting-quota', principal: null }),
          );
          await s.users.suspend(c.id, 'stolen', T + 10);
          // In no particular order: sorted here by name (alice, printer).
          const waiting = async () => [...(await s.limits.principalsWaiting())].sort((x, y) => x.name.localeCompare(y.name));
          const named = (p: Principal) => ({ ref: principalOf(p), kind: p.kind, name: p.name });
          expect(await waiting()).toEqual([named(a), named(d)]);
          await s.devices.suspend(d.id, 'stolen', T + 10);
          expect(await waiting()).toEqual([named(a)]);
        });

        it('holdOne moves one waiting message to held with an over-limits reason', async () => {
          const a = await addUser('alice');
          const [w, q] = await put(message({ at: T, state: 'waiting-quota', principal: a }), message({ at: T + 1, state: 'queued', principal: a }));
          expect(await s.limits.holdOne(w!, 'over 100 recipients/day', T + 50)).toBe(true);
          expect(await s.quarantine.get(w!)).toMatchObject({
            state: 'held',
            heldAt: T + 50,
            score: 0,
            reasons: [{ id: 'over_limits', weight: 0, detail: 'over 100 recipients/day' }],
          });
          expect(await s.limits.holdOne(w!, 'again', T + 60)).toBe(false);
          expect((await s.quarantine.get(w!))?.heldAt).toBe(T + 50);
          expect(await s.limits.holdOne(q!, 'queued', T + 60)).toBe(false);
          expect(await s.queue.get(q!)).toMatchObject({ state: 'queued', nextAttemptAt: T + 1 });
        });

        it("holdWaiting moves all of one principal's waiting mail to held and says how many", async () => {
          const a = await addUser('alice');
          const b = await addUser('bob');
          const [w1, w2, q, bw] = await put(
            message({ at: T, state: 'waiting-quota', principal: a }),
            message({ at: T + 1, state: 'waiting-quota', principal: a, assessment: { state: 'waiting-quota', score: 2, reasons: [] } }),
            message({ at: T + 2, state: 'queued', principal: a }),
            message({ at: T + 3, state: 'waiting-quota', principal: b }),
          );
          expect(await s.limits.holdWaiting(principalOf(a), 'suspended: stolen', T + 60)).toBe(2);
          const reasons = [{ id: 'principal_suspended', weight: 0, detail: 'suspended: stolen' }];
          expect((await s.quarantine.list({ principal: principalOf(a) })).map((m) => [m.id, m.state, m.heldAt, m.score, m.reasons])).toEqual([
            [w1, 'held', T + 60, 0, reasons],
            [w2, 'held', T + 60, 2, reasons],
          ]);
          expect((await s.queue.get(q!))?.state).toBe('queued');
          expect((await s.queue.get(bw!))?.state).toBe('waiting-quota');
          expect(await s.limits.holdWaiting(principalOf(a), 'again', T + 70)).toBe(0);
        });
      });
    });

    describe('queue', () => {
      it('insertMany stores each message as the spool accepted it, and get reads it back exactly', async () => {
        const a = await addUser('alice');
        const m = { ...message({ at: T, principal: a, from: 'alice@example.com', rcpts: ['b@example.org', 'a@example.net'] }), acceptedBy: 'node-a' };
        const h = message({ at: T + 1, state: 'held', principal: null });
        await s.queue.insertMany([m, h]);
        expect(await s.queue.get(m.id)).toEqual({
          id: m.id,
          state: 'queued',
          mailFrom: 'alice@example.com',
          rcptTo: ['b@example.org', 'a@example.net'],
          principal: labelOf(a),
          principalRef: principalOf(a),
          clientIp: '192.0.2.10',
          size: m.data.length,
          receivedAt: T,
          attempts: 0,
          nextAttemptAt: T,
          acceptedBy: 'node-a',
          claimOwner: null,
          claimUntil: null,
        });
        expect(await s.queue.get(h.id)).toEqual({
          id: h.id,
          state: 'held',
          mailFrom: 'alice@example.com',
          rcptTo: ['bob@example.org'],
          principal: null,
          principalRef: null,
          clientIp: '192.0.2.10',
          size: h.data.length,
          receivedAt: T + 1,
          attempts: 0,
          nextAttemptAt: null,
          acceptedBy: null,
          claimOwner: null,
          claimUntil: null,
        });
        expect(await s.queue.get('NOSUCHMESSAGE')).toBeUndefined();
      });

      it('body returns the exact bytes accepted, and nothing for an unknown id', async () => {
        const m = message({ at: T });
        m.data = Buffer.from([0x46, 0x72, 0x6f, 0x6d, 0x3a, 0x20, 0xff, 0x00, 0x0d, 0x0a, 0x0d, 0x0a, 0x80]);
        await s.queue.insertMany([m]);
        expect(await s.queue.body(m.id)).toEqual(m.data);
        expect(await s.queue.body('NOSUCHMESSAGE')).toBeUndefined();
      });

      it('insertMany writes nothing of a batch when one message in it fails', async () => {
        const first = message({ at: T });
        await s.queue.insertMany([first]);
        const fresh = message({ at: T + 1 });
        await expect(s.queue.insertMany([fresh, { ...message({ at: T + 2 }), id: first.id }])).rejects.toThrow();
        expect(await s.queue.get(fresh.id)).toBeUndefined();
        expect(await s.queue.body(fresh.id)).toBeUndefined();
        expect(await s.queue.count()).toBe(1);
        expect((await s.queue.get(first.id))?.receivedAt).toBe(T);
      });

      it('lists messages oldest first, all of them or those in one state', async () => {
        const ids = await put(
          message({ at: T + 2, state: 'held' }),
          message({ at: T, state: 'queued' }),
          message({ at: T + 1, state: 'waiting-quota' }),
          message({ at: T + 3, state: 'queued' }),
        );
        expect((await s.queue.list()).map((m) => m.id)).toEqual([ids[1], ids[2], ids[0], ids[3]]);
        expect((await s.queue.list('queued')).map((m) => m.id)).toEqual([ids[1], ids[3]]);
        expect((await s.queue.list('held')).map((m) => m.id)).toEqual([ids[0]]);
        expect(await s.queue.list('waiting-quota')).toEqual([await s.queue.get(ids[2]!)]);
      });

      it('count and depth say how many messages there are, in all and per state', async () => {
        expect(await s.queue.count()).toBe(0);
        expect(await s.queue.depth()).toEqual({});
        await put(message({ at: T }), message({ at: T + 1 }), message({ at: T + 2, state: 'held' }), message({ at: T + 3, state: 'waiting-quota' }));
        expect(await s.queue.count()).toBe(4);
        expect(await s.queue.depth()).toEqual({ queued: 2, held: 1, 'waiting-quota': 1 });
      });

      it('writable says an open store can commit', async () => {
        expect(await s.queue.writable(T)).toBe(true);
        expect(await s.queue.writable(T + 1)).toBe(true);
      });
    });

    describe('quarantine', () => {
      const assessment: Assessment = { state: 'held', score: 7.5, reasons: [{ id: 'new_domain', weight: 5, detail: 'example.net' }, { id: 'bulk', weight: 2.5 }] };
      const header = (at: number) => Buffer.from(`From: <alice@example.com>\r\nSubject: test ${at}\r\n`);

      it('lists held messages oldest first, with why and since when they are held', async () => {
        const a = await addUser('alice');
        const [h1, h2] = await put(
          message({ at: T + 10, state: 'held', principal: a, rcpts: ['x@example.net', 'y@example.net'], assessment }),
          message({ at: T, state: 'held', principal: null }),
          message({ at: T + 5, state: 'waiting-quota', principal: a }),
          message({ at: T + 1, state: 'queued', principal: a }),
        );
        const first = { id: h2, state: 'held', mailFrom: 'alice@example.com', principal: null, rcptTo: ['bob@example.org'], size: Buffer.byteLength(body(T)), receivedAt: T, heldAt: T, score: null, reasons: [], header: header(T) };
        const second = {
          id: h1,
          state: 'held',
          mailFrom: 'alice@example.com',
          principal: labelOf(a),
          rcptTo: ['x@example.net', 'y@example.net'],
          size: Buffer.byteLength(body(T + 10)),
          receivedAt: T + 10,
          heldAt: T + 10,
          score: 7.5,
          reasons: assessment.reasons,
          header: header(T + 10),
        };
        expect(await s.quarantine.list()).toEqual([first, second]);
        expect((await s.quarantine.list({ states: ['held', 'waiting-quota'] })).map((m) => [m.state, m.receivedAt])).toEqual([
          ['held', T],
          ['waiting-quota', T + 5],
          ['held', T + 10],
        ]);
        expect((await s.quarantine.list({ states: ['held', 'waiting-quota'], principal: principalOf(a) })).map((m) => m.receivedAt)).toEqual([T + 5, T + 10]);
      });

      it('get reads one message in any state, and nothing for an unknown id', async () => {
        const [q] = await put(message({ at: T, state: 'queued' }));
        expect(await s.quarantine.get(q!)).toMatchObject({ id: q, state: 'queued', heldAt: null, header: header(T) });
        expect(await s.quarantine.get('NOSUCHMESSAGE')).toBeUndefined();
      });

      it('release queues a held message due at once, leaves its body alone, and records the decision and an audit row', async () => {
        const a = await addUser('alice');
        const m = message({ at: T, state: 'held', principal: a, rcpts: ['x@example.net', 'y@example.org'], assessment });
        await s.queue.insertMany([m]);
        expect(await s.quarantine.release(m.id, admin(T + 100, 'known customer'))).toEqual({
          id: m.id,
          state: 'held',
          mailFrom: 'alice@example.com',
          principal: labelOf(a),
          principalRef: principalOf(a),
          recipients: 2,
          score: 7.5,
        });
        expect(await s.queue.get(m.id)).toMatchObject({ state: 'queued', nextAttemptAt: T + 100, attempts: 0 });
        expect((await s.quarantine.get(m.id))?.heldAt).toBeNull();
        expect(await s.queue.body(m.id)).toEqual(m.data);
        expect(await s.quarantine.decision(m.id)).toEqual({ messageId: m.id, action: 'released', at: T + 100, actor: 'admin', reason: 'known customer' });
        const audit = await s.audit.list({ target: `message:${m.id}` });
        expect(audit).toEqual([
          {
            id: expect.any(Number),
            at: T + 100,
            actor: 'admin',
            action: 'quarantine.release',
            target: `message:${m.id}`,
            detail: { state: 'held', from: 'alice@example.com', principal: a.name, principal_kind: 'user', recipients: 2, score: 7.5 },
            reason: 'known customer',
          },
        ]);
        expect(await s.delivery.claimDue('worker', T + 100, T + 200, 10)).toEqual([m.id]);
      });

      it('release teaches the principal the domains of the released recipients', async () => {
        const a = await addUser('alice');
        const p = principalOf(a);
        const [h] = await put(message({ at: T, state: 'held', principal: a, rcpts: ['x@New.Example', 'y@other.example'] }));
        expect(await s.quarantine.newDomains(p, ['new.example', 'other.example', 'third.example'])).toEqual(['new.example', 'other.example', 'third.example']);
        await s.quarantine.release(h!, admin(T + 1));
        expect(await s.quarantine.newDomains(p, ['new.example', 'other.example', 'third.example'])).toEqual(['third.example']);
      });

      it('release also frees a message waiting for quota', async () => {
        const [w] = await put(message({ at: T, state: 'waiting-quota' }));
        expect((await s.quarantine.release(w!, admin(T + 5))).state).toBe('waiting-quota');
        expect(await s.queue.get(w!)).toMatchObject({ state: 'queued', nextAttemptAt: T + 5 });
      });

      it('a second release or delete is refused with AlreadyDecidedError saying by whom and when', async () => {
        const [h] = await put(message({ at: T, state: 'held' }));
        await s.quarantine.release(h!, admin(T + 100, 'ok'));
        const decision = { messageId: h, action: 'released', at: T + 100, actor: 'admin', reason: 'ok' };
        const again = await rejection(s.quarantine.release(h!, { actor: 'other', reason: null, now: T + 200 }));
        expect(again).toBeInstanceOf(AlreadyDecidedError);
        expect((again as AlreadyDecidedError).decision).toEqual(decision);
        const del = await rejection(s.quarantine.delete(h!, admin(T + 300)));
        expect(del).toBeInstanceOf(AlreadyDecidedError);
        expect((del as AlreadyDecidedError).decision).toEqual(decision);
        expect(await s.queue.get(h!)).toMatchObject({ state: 'queued', nextAttemptAt: T + 100 });
        expect(await s.quarantine.decision(h!)).toEqual(decision);
        expect(await s.audit.list({ target: `message:${h}` })).toHaveLength(1);
      });

      it('release and delete refuse a queued message with NotQuarantinedError and record nothing', async () => {
        const [q] = await put(message({ at: T, state: 'queued' }));
        const verbs = [(id: string, by: Actor) => s.quarantine.release(id, by), (id: string, by: Actor) => s.quarantine.delete(id, by)];
        for (const verb of verbs) {
          const e = await rejection(verb(q!, admin(T + 1)));
          expect(e).toBeInstanceOf(NotQuarantinedError);
          expect(e).toMatchObject({ id: q, state: 'queued' });
        }
        expect(await s.queue.get(q!)).toMatchObject({ state: 'queued', nextAttemptAt: T });
        expect(await s.quarantine.decision(q!)).toBeUndefined();
        expect(await s.audit.list()).toEqual([]);
      });

      it('release and delete refuse an unknown message with NotFoundError and record nothing', async () => {
        await expect(s.quarantine.release('NOSUCHMESSAGE', admin(T))).rejects.toBeInstanceOf(NotFoundError);
        await expect(s.quarantine.delete('NOSUCHMESSAGE', admin(T))).rejects.toBeInstanceOf(NotFoundError);
        expect(await s.quarantine.decision('NOSUCHMESSAGE')).toBeUndefined();
        expect(await s.audit.list()).toEqual([]);
      });

      it('delete removes a held message with its body and records the decision and an audit row', async () => {
        const a = await addUser('alice');
        const [h, other] = await put(message({ at: T, state: 'held', principal: a, assessment }), message({ at: T + 1, state: 'held' }));
        expect(await s.quarantine.delete(h!, admin(T + 100, 'phishing'))).toEqual({ id: h, state: 'held', mailFrom: 'alice@example.com', principal: labelOf(a), principalRef: principalOf(a), recipients: 1, score: 7.5 });
        expect(await s.queue.get(h!)).toBeUndefined();
        expect(await s.queue.body(h!)).toBeUndefined();
        expect(await s.quarantine.get(h!)).toBeUndefined();
        expect(await s.quarantine.decision(h!)).toEqual({ messageId: h, action: 'deleted', at: T + 100, actor: 'admin', reason: 'phishing' });
        expect((await s.audit.list()).map((e) => [e.action, e.target, e.reason])).toEqual([['quarantine.delete', `message:${h}`, 'phishing']]);
        expect((await s.quarantine.list()).map((m) => m.id)).toEqual([other]);
        expect(await s.quarantine.newDomains(principalOf(a), ['example.org'])).toEqual(['example.org']);
      });

      it('expire deletes the messages held before the cut-off, oldest first, and leaves the rest', async () => {
        // Held exactly at the cut-off is left out on purpose: the SQLite engine expires it, the name says "before".
        const [late, early, mid, w] = await put(
          message({ at: T + 20, state: 'held' }),
          message({ at: T, state: 'held' }),
          message({ at: T + 9, state: 'held' }),
          message({ at: T + 5, state: 'waiting-quota' }),
        );
        const by = { actor: 'retention', reason: 'held 30 days', now: T + 1000 };
        const expired = await s.quarantine.expire(T + 10, by);
        expect(expired.map((m) => [m.id, m.state])).toEqual([
          [early, 'held'],
          [mid, 'held'],
        ]);
        expect(await s.queue.get(early!)).toBeUndefined();
        expect(await s.queue.get(mid!)).toBeUndefined();
        expect((await s.queue.get(late!))?.state).toBe('held');
        expect((await s.queue.get(w!))?.state).toBe('waiting-quota');
        expect(await s.quarantine.decision(early!)).toEqual({ messageId: early, action: 'expired', at: T + 1000, actor: 'retention', reason: 'held 30 days' });
        expect((await s.audit.list()).map((e) => [e.action, e.target]).sort()).toEqual([
          ['quarantine.expire', `message:${early}`],
          ['quarantine.expire', `message:${mid}`],
        ].sort());
        expect(await s.quarantine.expire(T + 10, by)).toEqual([]);
      });

      it('decision is undefined for a message never decided', async () => {
        const [h] = await put(message({ at: T, state: 'held' }));
        expect(await s.quarantine.decision(h!)).toBeUndefined();
      });

      it('pruneDecisions forgets the decisions made before the cut-off and says how many', async () => {
        const [a, b] = await put(message({ at: T, state: 'held' }), message({ at: T + 1, state: 'held' }));
        await s.quarantine.release(a!, admin(T + 10));
        await s.quarantine.delete(b!, admin(T + 20));
        expect(await s.quarantine.pruneDecisions(T + 20)).toBe(1);
        expect(await s.quarantine.decision(a!)).toBeUndefined();
        expect(await s.quarantine.decision(b!)).toMatchObject({ action: 'deleted', at: T + 20 });
        // Without its tombstone the released message is judged by its state again.
        await expect(s.quarantine.release(a!, admin(T + 30))).rejects.toBeInstanceOf(NotQuarantinedError);
        expect(await s.quarantine.pruneDecisions(T + 20)).toBe(0);
      });

      it('newDomains names the domains a principal never sent to, lower-cased and once each; addDomains records them', async () => {
        const a = principalOf(await addUser('alice'));
        const b = principalOf(await addUser('bob'));
        await s.quarantine.addDomains(a, ['Example.ORG', 'example.org', 'second.example'], T);
        expect(await s.quarantine.newDomains(a, ['EXAMPLE.org', 'New.Example', 'new.example', 'second.example', 'third.example'])).toEqual(['new.example', 'third.example']);
        expect(await s.quarantine.newDomains(b, ['example.org'])).toEqual(['example.org']);
        await s.quarantine.addDomains(a, ['new.example'], T + 1);
        expect(await s.quarantine.newDomains(a, ['new.example', 'third.example'])).toEqual(['third.example']);
      });
    });

    describe('delivery', () => {
      const pending = (position: number, address: string) => ({
        position,
        address,
        status: 'pending',
        attempts: 0,
        lastAttemptAt: null,
        lastError: null,
        statusCode: null,
        remoteMta: null,
        lastTls: null,
        dsnDone: false,
      });

      it('job reads a queued message with its recipients, and nothing for a held or unknown one', async () => {
        const a = await addUser('alice');
        const [q, h] = await put(message({ at: T, principal: a, rcpts: ['x@example.org', 'y@example.net'] }), message({ at: T + 1, state: 'held' }));
        expect(await s.delivery.job(q!)).toEqual({
          id: q,
          mailFrom: 'alice@example.com',
          principal: { ref: principalOf(a), kind: 'user', name: 'alice' },
          receivedAt: T,
          attempts: 0,
          nextAttemptAt: T,
          recipients: [pending(0, 'x@example.org'), pending(1, 'y@example.net')],
        });
        expect(await s.delivery.job(h!)).toBeUndefined();
        expect(await s.delivery.job('NOSUCHMESSAGE')).toBeUndefined();
      });

      it('recipients reads the recipients of a message in any state, and none of an unknown one', async () => {
        const [h] = await put(message({ at: T, state: 'held', rcpts: ['x@example.org', 'y@example.net'] }));
        expect(await s.delivery.recipients(h!)).toEqual([pending(0, 'x@example.org'), pending(1, 'y@example.net')]);
        expect(await s.delivery.recipients('NOSUCHMESSAGE')).toEqual([]);
      });

      it('a claim shows in the queue listing with its owner and expiry, and stats.nodes counts live claims under the owner\'s node', async () => {
        const [a, b] = await put({ ...message({ at: T }), acceptedBy: 'node-a' }, { ...message({ at: T + 1 }), acceptedBy: 'node-b' });
        await put(message({ at: T + 2, state: 'held' }));
        expect(await s.delivery.claimDue('node-b:4242:abcdef', T + 10, T + MINUTE, 1)).toEqual([a]);
        expect(await s.queue.get(a!)).toMatchObject({ acceptedBy: 'node-a', claimOwner: 'node-b:4242:abcdef', claimUntil: T + MINUTE });
        expect(await s.queue.get(b!)).toMatchObject({ acceptedBy: 'node-b', claimOwner: null, claimUntil: null });
        expect(await s.stats.nodes(T + 20)).toEqual([
          { node: 'node-a', queued: 1, held: 0, waiting: 0, delivering: 0 },
          { node: 'node-b', queued: 1, held: 0, waiting: 0, delivering: 1 },
          { node: null, queued: 0, held: 1, waiting: 0, delivering: 0 },
        ]);
        // A lapsed claim is nobody's delivery.
        expect((await s.stats.nodes(T + MINUTE)).find((n) => n.node === 'node-b')).toEqual({ node: 'node-b', queued: 1, held: 0, waiting: 0, delivering: 0 });
      });

      it('claimDue claims due queued messages only, never held or waiting ones, up to the limit, earliest first', async () => {
        const [q1, , , q2, q3, later] = await put(
          message({ at: T }),
          message({ at: T + 1, state: 'held' }),
          message({ at: T + 2, state: 'waiting-quota' }),
          message({ at: T + 3 }),
          message({ at: T + 4 }),
          message({ at: T + 100 }),
        );
        expect(sortIds(await s.delivery.claimDue('w1', T + 50, T + MINUTE, 2))).toEqual(sortIds([q1!, q2!]));
        expect(await s.delivery.claimDue('w1', T + 50, T + MINUTE, 10)).toEqual([q3]);
        expect(await s.delivery.claimDue('w2', T + 50, T + MINUTE, 10)).toEqual([]);
        expect(await s.delivery.claimDue('w2', T + 100, T + MINUTE, 10)).toEqual([later]);
      });

      it('claimDue never returns a message claimed by a live owner, and takes one over once the claim lapses', async () => {
        const [m] = await put(message({ at: T }));
        expect(await s.delivery.claimDue('w1', T, T + MINUTE, 10)).toEqual([m]);
        expect(await s.delivery.claimDue('w2', T + MINUTE - 1, T + 2 * MINUTE, 10)).toEqual([]);
        expect(await s.delivery.claimDue('w1', T + MINUTE - 1, T + 2 * MINUTE, 10)).toEqual([]);
        expect(await s.delivery.claimDue('w2', T + MINUTE, T + 2 * MINUTE, 10)).toEqual([m]);
        expect(await s.delivery.claimDue('w1', T + MINUTE + 1, T + 3 * MINUTE, 10)).toEqual([]);
      });

      it('of two owners claiming at once, each message goes to exactly one', async () => {
        const ids = await put(...Array.from({ length: 10 }, (_, i) => message({ at: T + i })));
        const [a, b] = await Promise.all([s.delivery.claimDue('w1', T + 10, T + MINUTE, 6), s.delivery.claimDue('w2', T + 10, T + MINUTE, 6)]);
        expect(a.filter((id) => b.includes(id))).toEqual([]);
        expect(sortIds([...a, ...b])).toEqual(sortIds(ids));
      });

      it("renewClaims extends its owner's claims and no one else's", async () => {
        const [m, n] = await put(message({ at: T }), message({ at: T + 1 }));
        expect(sortIds(await s.delivery.claimDue('w1', T + 1, T + MINUTE, 1))).toEqual([m]);
        expect(await s.delivery.claimDue('w2', T + 1, T + MINUTE, 1)).toEqual([n]);
        await s.delivery.renewClaims([m!, n!], 'w1', T + 5 * MINUTE);
        expect(await s.delivery.claimDue('w3', T + MINUTE, T + 6 * MINUTE, 10)).toEqual([n]);
        expect(await s.delivery.claimDue('w3', T + 5 * MINUTE - 1, T + 6 * MINUTE, 10)).toEqual([]);
        expect(await s.delivery.claimDue('w4', T + 5 * MINUTE, T + 7 * MINUTE, 10)).toEqual([m]);
        expect(await s.delivery.claimDue('w5', T + 6 * MINUTE, T + 8 * MINUTE, 10)).toEqual([n]);
      });

      it('releaseClaim gives a claim back for another owner to take at once, only when its owner asks', async () => {
        const [m] = await put(message({ at: T }));
        await s.delivery.claimDue('w1', T, T + MINUTE, 10);
        await s.delivery.releaseClaim(m!, 'w2');
        expect(await s.delivery.claimDue('w3', T + 1, T + MINUTE, 10)).toEqual([]);
        await s.delivery.releaseClaim(m!, 'w1');
        expect(await s.delivery.claimDue('w3', T + 1, T + MINUTE, 10)).toEqual([m]);
      });

      it('nextDueAt is when the earliest queued message is due, counting a claim as due when it lapses', async () => {
        expect(await s.delivery.nextDueAt()).toBeNull();
        await put(message({ at: T, state: 'held' }), message({ at: T + 1, state: 'waiting-quota' }));
        expect(await s.delivery.nextDueAt()).toBeNull();
        const [m] = await put(message({ at: T + 10 }), message({ at: T + 5000 }));
        expect(await s.delivery.nextDueAt()).toBe(T + 10);
        expect(await s.delivery.claimDue('w1', T + 10, T + HOUR, 1)).toEqual([m]);
        expect(await s.delivery.nextDueAt()).toBe(T + 5000);
        await s.delivery.postpone(m!, T + 2 * HOUR);
        await s.delivery.releaseClaim(m!, 'w1');
        await s.delivery.retry('all', T + 3 * HOUR);
        expect(await s.delivery.nextDueAt()).toBe(T + 3 * HOUR);
      });

      it("postpone moves a queued message's next attempt without counting one, and leaves held mail alone", async () => {
        const [q, h] = await put(message({ at: T }), message({ at: T + 1, state: 'held' }));
        await s.delivery.postpone(q!, T + HOUR);
        expect(await s.queue.get(q!)).toMatchObject({ state: 'queued', attempts: 0, nextAttemptAt: T + HOUR });
        expect(await s.delivery.claimDue('w1', T + HOUR - 1, T + 2 * HOUR, 10)).toEqual([]);
        await s.delivery.postpone(h!, T + HOUR);
        expect(await s.queue.get(h!)).toMatchObject({ state: 'held', nextAttemptAt: null });
      });

      it('retry makes the named queued messages, or all of them, due now and says how many', async () => {
        const [a, b, h] = await put(message({ at: T }), message({ at: T + 1 }), message({ at: T + 2, state: 'held' }));
        await s.delivery.postpone(a!, T + HOUR);
        await s.delivery.postpone(b!, T + HOUR);
        expect(await s.delivery.retry([a!, h!, 'NOSUCHMESSAGE'], T + 10)).toBe(1);
        expect((await s.queue.get(a!))?.nextAttemptAt).toBe(T + 10);
        expect((await s.queue.get(b!))?.nextAttemptAt).toBe(T + HOUR);
        expect(await s.queue.get(h!)).toMatchObject({ state: 'held', nextAttemptAt: null });
        expect(await s.delivery.retry('all', T + 20)).toBe(2);
        expect((await s.queue.list('queued')).map((m) => m.nextAttemptAt)).toEqual([T + 20, T + 20]);
        expect((await s.queue.get(h!))?.state).toBe('held');
      });

      it("recordAttempts writes each recipient's outcome, counts the attempt, ends the claim, and keeps a message with work left", async () => {
        const a = await addUser('alice');
        const [m] = await put(message({ at: T, principal: a, rcpts: ['x@example.org', 'y@example.net'] }));
        expect(await s.delivery.claimDue('w1', T, T + HOUR, 10)).toEqual([m]);
        const attempt: AttemptRecord = {
          id: m!,
          now: T + 1000,
          nextAttemptAt: T + 2000,
          principal: principalOf(a),
          updates: [
            { position: 0, status: 'delivered', error: null, statusCode: '2.0.0', remoteMta: 'dns; mx.example.org', tls: { version: 'TLSv1.3', verified: true, policy: 'mta-sts' }, remoteVerdict: 'accepted' },
            { position: 1, status: 'pending', error: '451 4.7.1 try later', statusCode: '4.7.1', remoteMta: 'dns; mx.example.net' },
          ],
        };
        expect([...(await s.delivery.recordAttempts([attempt]))]).toEqual([]);
        const rcpts = await s.delivery.recipients(m!);
        expect(rcpts[0]).toEqual({ position: 0, address: 'x@example.org', status: 'delivered', attempts: 1, lastAttemptAt: T + 1000, lastError: null, statusCode: '2.0.0', remoteMta: 'dns; mx.example.org', lastTls: { version: 'TLSv1.3', verified: true, policy: 'mta-sts' }, dsnDone: true });
        expect(rcpts[1]).toMatchObject({ position: 1, address: 'y@example.net', status: 'pending', attempts: 1, lastAttemptAt: T + 1000, lastError: '451 4.7.1 try later', statusCode: '4.7.1', remoteMta: 'dns; mx.example.net', lastTls: null });
        expect(await s.delivery.job(m!)).toMatchObject({ attempts: 1, nextAttemptAt: T + 2000 });
        expect(await s.delivery.outcomeCounts(principalOf(a), T)).toEqual({ total: 1, rejected: 0 });
        // The claim (until T + HOUR) ended with the outcome: another owner takes the retry when due.
        expect(await s.delivery.claimDue('w2', T + 2000, T + HOUR, 10)).toEqual([m]);
      });

      it('recordAttempts refuses, writing nothing, the late outcome of a claimant whose claim another owner took over', async () => {
        const [m] = await put(message({ at: T, rcpts: ['x@example.org'] }));
        expect(await s.delivery.claimDue('w1', T, T + 1000, 10)).toEqual([m]);
        // w1's claim lapses; w2 takes the message and delivers it.
        expect(await s.delivery.claimDue('w2', T + 1000, T + HOUR, 10)).toEqual([m]);
        const late: AttemptRecord = {
          id: m!,
          now: T + 1500,
          nextAttemptAt: T + 5000,
          principal: null,
          owner: 'w1',
          updates: [{ position: 0, status: 'pending', error: '451 4.4.1 timed out', statusCode: '4.4.1', remoteMta: null }],
        };
        expect(await rejection(s.delivery.recordAttempts([late]))).toBeInstanceOf(ClaimLostError);
        expect((await s.delivery.recipients(m!))[0]).toMatchObject({ status: 'pending', attempts: 0, lastError: null });
        expect(await s.delivery.claimDue('w3', T + 2000, T + HOUR, 10)).toEqual([]);
        // The owner's own outcome is written.
        expect([...(await s.delivery.recordAttempts([{ ...late, owner: 'w2', updates: [{ ...late.updates[0]!, status: 'delivered', error: null, statusCode: '2.0.0' }] }]))]).toEqual([m]);
      });

      it('recordAttempts removes the messages left with nothing to do and returns their ids', async () => {
        const [done, open] = await put(message({ at: T }), message({ at: T + 1 }));
        const delivered = (id: string): AttemptRecord => ({
          id,
          now: T + 10,
          nextAttemptAt: null,
          principal: null,
          updates: [{ position: 0, status: 'delivered', error: null, statusCode: '2.0.0', remoteMta: 'dns; mx.example.org' }],
        });
        const deferred: AttemptRecord = { ...delivered(open!), nextAttemptAt: T + 600, updates: [{ position: 0, status: 'pending', error: '421', statusCode: '4.4.2', remoteMta: null }] };
        const removed = await s.delivery.recordAttempts([delivered(done!), deferred]);
        expect([...removed]).toEqual([done]);
        expect(await s.queue.get(done!)).toBeUndefined();
        expect(await s.queue.body(done!)).toBeUndefined();
        expect(await s.delivery.recipients(done!)).toEqual([]);
        expect(await s.queue.get(open!)).toMatchObject({ attempts: 1, nextAttemptAt: T + 600 });
      });

      it('a failed recipient keeps its message until finish reports it, then finish removes the message', async () => {
        const a = await addUser('alice');
        const p = principalOf(a);
        const [m] = await put(message({ at: T, principal: a, rcpts: ['x@example.org', 'y@example.net', 'z@example.com'] }));
        const removed = await s.delivery.recordAttempts([
          {
            id: m!,
            now: T + 10,
            nextAttemptAt: null,
            principal: p,
            updates: [
              { position: 0, status: 'delivered', error: null, statusCode: '2.0.0', remoteMta: 'dns; mx.example.org', remoteVerdict: 'accepted' },
              { position: 1, status: 'failed', error: '550 5.1.1 no such user', statusCode: '5.1.1', remoteMta: 'dns; mx.example.net', remoteVerdict: 'rejected' },
              { position: 2, status: 'failed', error: '554 5.7.1 refused', statusCode: '5.7.1', remoteMta: 'dns; mx.example.com', remoteVerdict: 'rejected' },
            ],
          },
        ]);
        expect([...removed]).toEqual([]);
        expect((await s.delivery.recipients(m!)).map((r) => [r.status, r.dsnDone])).toEqual([
          ['delivered', true],
          ['failed', false],
          ['failed', false],
        ]);
        expect(await s.delivery.outcomeCounts(p, T)).toEqual({ total: 3, rejected: 2 });
        expect(await s.delivery.finish(m!, [1])).toBe(false);
        expect((await s.delivery.recipients(m!)).map((r) => r.dsnDone)).toEqual([true, true, false]);
        expect((await s.queue.get(m!))?.id).toBe(m);
        expect(await s.delivery.finish(m!, [2])).toBe(true);
        expect(await s.queue.get(m!)).toBeUndefined();
        expect(await s.delivery.recipients(m!)).toEqual([]);
      });

      it('finish keeps a message that still has a recipient pending', async () => {
        const [m] = await put(message({ at: T, rcpts: ['x@example.org', 'y@example.net'] }));
        await s.delivery.recordAttempts([
          { id: m!, now: T + 10, nextAttemptAt: T + 600, principal: null, updates: [{ position: 0, status: 'failed', error: '550', statusCode: '5.0.0', remoteMta: null }] },
        ]);
        expect(await s.delivery.finish(m!, [0])).toBe(false);
        expect(await s.delivery.recipients(m!)).toMatchObject([{ status: 'failed', dsnDone: true }, { status: 'pending', attempts: 0 }]);
        expect((await s.queue.get(m!))?.state).toBe('queued');
      });

      it("outcomeCounts counts one principal's final remote verdicts since a time; pruneOutcomes forgets older ones", async () => {
        const a = await addUser('alice');
        const b = await addUser('bob');
        const [m1, m2, m3] = await put(message({ at: T, principal: a }), message({ at: T + 1, principal: a }), message({ at: T + 2, principal: b }));
        const verdict = (id: string, p: Principal, now: number, v: 'accepted' | 'rejected'): AttemptRecord => ({
          id,
          now,
          nextAttemptAt: null,
          principal: principalOf(p),
          updates: [{ position: 0, status: v === 'accepted' ? 'delivered' : 'failed', error: null, statusCode: null, remoteMta: null, remoteVerdict: v }],
        });
        await s.delivery.recordAttempts([verdict(m1!, a, T + 1000, 'rejected'), verdict(m2!, a, T + 2000, 'accepted'), verdict(m3!, b, T + 2000, 'rejected')]);
        expect(await s.delivery.outcomeCounts(principalOf(a), T + 999)).toEqual({ total: 2, rejected: 1 });
        expect(await s.delivery.outcomeCounts(principalOf(a), T + 1001)).toEqual({ total: 1, rejected: 0 });
        expect(await s.delivery.outcomeCounts(principalOf(b), 0)).toEqual({ total: 1, rejected: 1 });
        expect(await s.delivery.outcomeCounts(principalOf(a), T + 2001)).toEqual({ total: 0, rejected: 0 });
        await s.delivery.pruneOutcomes(T + 2000);
        expect(await s.delivery.outcomeCounts(principalOf(a), 0)).toEqual({ total: 1, rejected: 0 });
        expect(await s.delivery.outcomeCounts(principalOf(b), 0)).toEqual({ total: 1, rejected: 1 });
      });

      it('deleteAudited removes a message in any state and writes the audit row; an unknown id is MessageNotFoundError', async () => {
        const [q, h] = await put(message({ at: T, rcpts: ['x@example.org', 'y@example.net'] }), message({ at: T + 1, state: 'held' }));
        await s.delivery.deleteAudited(q!, { actor: 'admin', reason: 'loop', now: T + 100 });
        await s.delivery.deleteAudited(h!, { actor: 'admin', reason: null, now: T + 101 });
        expect(await s.queue.count()).toBe(0);
        expect(await s.queue.body(q!)).toBeUndefined();
        const audit = await s.audit.list({ target: `message:${q}` });
        expect(audit).toEqual([
          { id: expect.any(Number), at: T + 100, actor: 'admin', action: 'queue.delete', target: `message:${q}`, detail: { state: 'queued', from: 'alice@example.com', recipients: 2 }, reason: 'loop' },
        ]);
        expect((await s.audit.list({ target: `message:${h}` })).map((e) => [e.action, e.reason])).toEqual([['queue.delete', null]]);
        await expect(s.delivery.deleteAudited('NOSUCHMESSAGE', { actor: 'admin', reason: null, now: T + 200 })).rejects.toBeInstanceOf(MessageNotFoundError);
        expect(await s.audit.list()).toHaveLength(2);
      });

      it('deleteAll removes every message in any state, oldest first, with an audit row each', async () => {
        const [q, h, w] = await put(message({ at: T, rcpts: ['x@example.org', 'y@example.net'] }), message({ at: T + 1, state: 'held' }), message({ at: T + 2, state: 'waiting-quota' }));
        expect(await s.delivery.deleteAll({ actor: 'admin', reason: 'spam run', now: T + 100 })).toEqual([q, h, w]);
        expect(await s.queue.count()).toBe(0);
        expect(await s.queue.body(h!)).toBeUndefined();
        expect((await s.audit.list()).map((e) => [e.action, e.target, e.actor, e.reason, e.detail])).toEqual([
          ['queue.delete', `message:${w}`, 'admin', 'spam run', { state: 'waiting-quota', from: 'alice@example.com', recipients: 1 }],
          ['queue.delete', `message:${h}`, 'admin', 'spam run', { state: 'held', from: 'alice@example.com', recipients: 1 }],
          ['queue.delete', `message:${q}`, 'admin', 'spam run', { state: 'queued', from: 'alice@example.com', recipients: 2 }],
        ]);
        expect(await s.delivery.deleteAll({ actor: 'admin', reason: null, now: T + 200 })).toEqual([]);
        expect(await s.audit.list()).toHaveLength(3);
      });

      it('hold moves a queued or waiting message to held with the admin-hold reason, audited, out of delivery', async () => {
        const a = await addUser('alice');
        const [q, w] = await put(message({ at: T, principal: a, rcpts: ['x@example.org', 'y@example.net'] }), message({ at: T + 1, state: 'waiting-quota' }));
        expect(await s.delivery.hold(q!, admin(T + 100, 'looks like phishing'))).toEqual({
          id: q,
          state: 'queued',
          mailFrom: 'alice@example.com',
          principal: labelOf(a),
          recipients: 2,
          claimOwner: null,
          claimUntil: null,
        });
        expect(await s.queue.get(q!)).toMatchObject({ state: 'held', nextAttemptAt: null });
        expect(await s.quarantine.get(q!)).toMatchObject({ state: 'held', heldAt: T + 100, reasons: [{ id: 'admin-hold', weight: 0, detail: 'by admin: looks like phishing' }] });
        expect((await s.delivery.hold(w!, { actor: 'ops', reason: null, now: T + 101 })).state).toBe('waiting-quota');
        expect((await s.quarantine.get(w!))?.reasons).toEqual([{ id: 'admin-hold', weight: 0, detail: 'by ops' }]);
        expect((await s.quarantine.list()).map((m) => m.id)).toEqual([q, w]);
        expect(await s.delivery.claimDue('w1', T + HOUR, T + 2 * HOUR, 10)).toEqual([]);
        expect(await s.delivery.nextDueAt()).toBeNull();
        expect((await s.audit.list({ target: `message:${q}` })).map((e) => [e.action, e.actor, e.reason, e.detail])).toEqual([
          ['queue.hold', 'admin', 'looks like phishing', { state: 'queued', from: 'alice@example.com', principal: 'alice', principal_kind: 'user', recipients: 2 }],
        ]);
        expect((await s.audit.list({ target: `message:${w}` }))[0]?.detail).toEqual({ state: 'waiting-quota', from: 'alice@example.com', principal: null, principal_kind: null, recipients: 1 });
      });

      it('hold refuses a held message with MessageStateError and an unknown one with MessageNotFoundError, recording nothing', async () => {
        const [h] = await put(message({ at: T, state: 'held', assessment: { state: 'held', score: 12, reasons: [{ id: 'bulk', weight: 12 }] } }));
        const held = await rejection(s.delivery.hold(h!, admin(T + 1)));
        expect(held).toBeInstanceOf(MessageStateError);
        expect(held).toMatchObject({ id: h, state: 'held' });
        expect(await rejection(s.delivery.hold('NOSUCHMESSAGE', admin(T + 1)))).toBeInstanceOf(MessageNotFoundError);
        expect((await s.quarantine.get(h!))?.reasons).toEqual([{ id: 'bulk', weight: 12 }]);
        expect(await s.audit.list()).toEqual([]);
      });

      it('a held message is released by quarantine release, also when it was released from quarantine before', async () => {
        const [h] = await put(message({ at: T, state: 'held' }));
        await s.quarantine.release(h!, admin(T + 10));
        await s.delivery.hold(h!, admin(T + 20, 'wrong recipient?'));
        // The earlier release's tombstone went with the new hold: this release is a new decision.
        expect(await s.quarantine.decision(h!)).toBeUndefined();
        expect((await s.quarantine.release(h!, admin(T + 30, 'checked'))).state).toBe('held');
        expect(await s.queue.get(h!)).toMatchObject({ state: 'queued', nextAttemptAt: T + 30 });
        expect(await s.delivery.claimDue('w1', T + 30, T + HOUR, 10)).toEqual([h]);
        expect((await s.audit.list({ target: `message:${h}` })).map((e) => e.action)).toEqual(['quarantine.release', 'queue.hold', 'quarantine.release']);
      });

      it('hold of a message in delivery keeps the claim: the attempt under way records its outcome, and the message stays held without a next attempt', async () => {
        const [m, n] = await put(message({ at: T, rcpts: ['x@example.org', 'y@example.net'] }), message({ at: T + 1 }));
        expect(sortIds(await s.delivery.claimDue('w1', T + 5, T + MINUTE, 10))).toEqual(sortIds([m!, n!]));
        expect(await s.delivery.hold(m!, admin(T + 6))).toMatchObject({ state: 'queued', claimOwner: 'w1', claimUntil: T + MINUTE });
        await s.delivery.hold(n!, admin(T + 6));
        const attempt = (id: string, status: 'delivered' | 'pending', position = 0): AttemptRecord => ({
          id,
          now: T + 10,
          nextAttemptAt: status === 'pending' ? T + 600 : null,
          principal: null,
          owner: 'w1',
          updates: [{ position, status, error: status === 'pending' ? '451 4.7.1 later' : null, statusCode: status === 'pending' ? '4.7.1' : '2.0.0', remoteMta: null }],
        });
        // m: one recipient delivered, one deferred; n: delivered, nothing left to do.
        const removed = await s.delivery.recordAttempts([{ ...attempt(m!, 'delivered'), updates: [...attempt(m!, 'delivered').updates, ...attempt(m!, 'pending', 1).updates] }, attempt(n!, 'delivered')]);
        expect([...removed]).toEqual([n]);
        expect(await s.queue.get(m!)).toMatchObject({ state: 'held', attempts: 1, nextAttemptAt: null, claimOwner: null });
        expect((await s.delivery.recipients(m!)).map((r) => r.status)).toEqual(['delivered', 'pending']);
        expect(await s.delivery.nextDueAt()).toBeNull();
      });

      it('ignoreQuota hands a waiting message to delivery now, audited, and refuses any other', async () => {
        const a = await addUser('alice');
        const [w, q, h] = await put(message({ at: T, state: 'waiting-quota', principal: a }), message({ at: T + 1 }), message({ at: T + 2, state: 'held' }));
        expect(await s.delivery.ignoreQuota(w!, admin(T + 100, 'board meeting mail'))).toMatchObject({ id: w, state: 'waiting-quota', principal: labelOf(a), recipients: 1 });
        expect(await s.queue.get(w!)).toMatchObject({ state: 'queued', nextAttemptAt: T + 100 });
        expect(sortIds(await s.delivery.claimDue('w1', T + 100, T + HOUR, 10))).toEqual(sortIds([w!, q!]));
        expect((await s.audit.list()).map((e) => [e.action, e.target, e.reason, e.detail])).toEqual([
          ['queue.ignore-quota', `message:${w}`, 'board meeting mail', { state: 'waiting-quota', from: 'alice@example.com', principal: 'alice', principal_kind: 'user', recipients: 1 }],
        ]);
        // Not counted in the ledger: the rate limit was set aside for this message.
        expect((await s.limits.usage(principalOf(a), T + 100)).messagesHour).toBe(0);
        for (const id of [q!, h!]) expect(await rejection(s.delivery.ignoreQuota(id, admin(T + 200)))).toBeInstanceOf(MessageStateError);
        expect(await rejection(s.delivery.ignoreQuota('NOSUCHMESSAGE', admin(T + 200)))).toBeInstanceOf(MessageNotFoundError);
        expect(await s.queue.get(h!)).toMatchObject({ state: 'held' });
        expect(await s.audit.list()).toHaveLength(1);
      });
    });

    describe('stats', () => {
      it("since gives each principal's figures in the window, sorted by principal, or one principal's", async () => {
        const a = await addUser('alice');
        const d = await addDevice('printer');
        const admit = (): QuotaDecision => ({ admit: true });
        await s.limits.reserve(principalOf(a), 1, T, admit);
        await s.limits.reserve(principalOf(a), 1, T + MINUTE, admit);
        const [, , m] = await put(
          message({ at: T + 1000, state: 'held', principal: a }),
          message({ at: T + 1001, state: 'queued', principal: a }),
          message({ at: T + 1002, principal: a, rcpts: ['x@example.org', 'y@example.net'] }),
          message({ at: T + 1003, state: 'held', principal: null }),
        );
        await s.delivery.recordAttempts([
          {
            id: m!,
            now: T + 3000,
            nextAttemptAt: null,
            principal: principalOf(a),
            updates: [
              { position: 0, status: 'delivered', error: null, statusCode: null, remoteMta: null, remoteVerdict: 'accepted' },
              { position: 1, status: 'failed', error: '550', statusCode: '5.0.0', remoteMta: null, remoteVerdict: 'rejected' },
            ],
          },
        ]);
        await s.incidents.record({ principalKind: 'device', principalId: d.id, principalName: d.name, principalRef: principalOf(d), kind: 'device-foreign-sender' }, T + 2000, null);
        const alice = { principal: labelOf(a), messages: 2, delivered: 1, rejected: 1, held: 1, incidents: 0 };
        const printer = { principal: labelOf(d), messages: 0, delivered: 0, rejected: 0, held: 0, incidents: 1 };
        const sorted = <R extends { principal: string }>(rows: R[]) => [...rows].sort((x, y) => (x.principal < y.principal ? -1 : 1));
        expect(await s.stats.since(T - 1)).toEqual(sorted([alice, printer]));
        expect(await s.stats.since(T - 1, principalOf(d))).toEqual([printer]);
        expect(await s.stats.since(T - 1, principalOf(a))).toEqual([alice]);
        // Reserved at T and T + 1 min, held at T + 1 s: only the later reservation, the outcomes and the incident count.
        expect(await s.stats.since(T + 1500)).toEqual(sorted([{ ...alice, messages: 1, held: 0 }, printer]));
        expect(await s.stats.since(T + MINUTE + 1)).toEqual([]);
      });

      it('since is empty when nothing happened', async () => {
        await addUser('alice');
        expect(await s.stats.since(0)).toEqual([]);
      });

      it('quarantineDecisions counts every release, deletion and expiry ever made', async () => {
        expect(await s.stats.quarantineDecisions()).toEqual({});
        const [a, b, c, d] = await put(message({ at: T, state: 'held' }), message({ at: T + 1, state: 'held' }), message({ at: T + 2, state: 'held' }), message({ at: T + 3, state: 'held' }));
        await s.quarantine.release(a!, admin(T + 10));
        await s.quarantine.release(b!, admin(T + 11));
        await s.quarantine.delete(c!, admin(T + 12));
        await s.audit.record({ at: T + 13, actor: 'admin', action: 'user.suspend', target: 'message:unrelated', detail: null, reason: null });
        expect(await s.stats.quarantineDecisions()).toEqual({ released: 2, deleted: 1 });
        expect((await s.quarantine.expire(T + 3, admin(T + 20))).map((m) => m.id)).toEqual([d]);
        expect(await s.stats.quarantineDecisions()).toEqual({ released: 2, deleted: 1, expired: 1 });
      });
    });

    describe('authAttempts', () => {
      const ip: CounterSpec = { key: 'ip:203.0.113.9', max: 2 };
      const login: CounterSpec = { key: 'login:alice', max: 5 };
      const fresh = (key: string): CounterState => ({ key, lockedUntil: null, failures: 0, inflight: 0 });
      /** The counters as the next reservation would see them at `now` (reserving nothing). */
      const look = async (now: number, counters = [ip, login]): Promise<CounterState[]> => {
        let seen: CounterState[] = [];
        const r = await s.authAttempts.reserve(counters, now, now + 1, (st) => {
          seen = st;
          return 'just looking';
        });
        expect(r).toEqual({ refused: 'just looking' });
        return seen;
      };
      const allow = () => null;

      it("reserve hands decide every counter's state and reserves one attempt on each when nothing refuses", async () => {
        let seen: CounterState[] = [];
        const r = await s.authAttempts.reserve([ip, login], T, T + 30_000, (st) => {
          seen = st;
          return null;
        });
        expect(seen).toEqual([fresh(ip.key), fresh(login.key)]);
        expect(r).toEqual({ ids: [expect.any(Number), expect.any(Number)] });
        const ids = (r as { ids: number[] }).ids;
        expect(ids[0]).not.toBe(ids[1]);
        expect(await look(T + 1)).toEqual([
          { ...fresh(ip.key), inflight: 1 },
          { ...fresh(login.key), inflight: 1 },
        ]);
      });

      it('reserve reserves nothing when decide refuses, and returns what it said', async () => {
        expect(await s.authAttempts.reserve([ip], T, T + 30_000, () => ({ reason: 'locked' }))).toEqual({ refused: { reason: 'locked' } });
        expect(await look(T + 1)).toEqual([fresh(ip.key), fresh(login.key)]);
      });

      it('an attempt in flight stops counting when its lease lapses', async () => {
        await s.authAttempts.reserve([ip], T, T + 30_000, allow);
        expect((await look(T + 29_999))[0]).toEqual({ ...fresh(ip.key), inflight: 1 });
        expect((await look(T + 30_000))[0]).toEqual(fresh(ip.key));
      });

      it('of many reservations at once, no more get through than decide allows', async () => {
        const results = await Promise.all(Array.from({ length: 6 }, (_, i) => s.authAttempts.reserve([ip], T + i, T + 30_000, (st) => (st[0]!.inflight >= 3 ? 'busy' : null))));
        expect(results.filter((r) => 'ids' in r)).toHaveLength(3);
        expect(results.filter((r) => 'refused' in r)).toEqual(Array(3).fill({ refused: 'busy' }));
      });

      it('settle fail counts a failure until the window ends, and locks a counter that reaches its max', async () => {
        const first = await s.authAttempts.reserve([ip, login], T, T + 30_000, allow);
        expect(await s.authAttempts.settle((first as { ids: number[] }).ids, 'fail', [ip, login], [], T + 10, T + HOUR, T + 15 * MINUTE)).toEqual([]);
        expect(await look(T + 20)).toEqual([
          { ...fresh(ip.key), failures: 1 },
          { ...fresh(login.key), failures: 1 },
        ]);
        const second = await s.authAttempts.reserve([ip, login], T + 30, T + 30_000, allow);
        expect(await s.authAttempts.settle((second as { ids: number[] }).ids, 'fail', [ip, login], [], T + 40, T + HOUR, T + 15 * MINUTE)).toEqual([ip.key]);
        // The lock replaces the failures that caused it.
        expect(await look(T + 50)).toEqual([
          { ...fresh(ip.key), lockedUntil: T + 15 * MINUTE },
          { ...fresh(login.key), failures: 2 },
        ]);
        expect(await s.authAttempts.locks([ip.key, login.key], T + 50)).toEqual([{ key: ip.key, until: T + 15 * MINUTE }]);
        expect(await s.authAttempts.locks([ip.key, login.key], T + 15 * MINUTE)).toEqual([]);
        expect(await look(T + HOUR)).toEqual([fresh(ip.key), fresh(login.key)]);
      });

      it('settle ok drops the reservation and clears the failures of the counters named, and only those', async () => {
        const r1 = await s.authAttempts.reserve([ip, login], T, T + 30_000, allow);
        await s.authAttempts.settle((r1 as { ids: number[] }).ids, 'fail', [ip, login], [], T + 1, T + HOUR, T + HOUR);
        const r2 = await s.authAttempts.reserve([ip, login], T + 2, T + 30_000, allow);
        expect(await s.authAttempts.settle((r2 as { ids: number[] }).ids, 'ok', [ip, login], [login.key], T + 3, T + HOUR, T + HOUR)).toEqual([]);
        expect(await look(T + 4)).toEqual([{ ...fresh(ip.key), failures: 1 }, fresh(login.key)]);
      });

      it('settle void drops the reservation and keeps every failure', async () => {
        const r1 = await s.authAttempts.reserve([ip, login], T, T + 30_000, allow);
        await s.authAttempts.settle((r1 as { ids: number[] }).ids, 'fail', [ip, login], [], T + 1, T + HOUR, T + HOUR);
        const r2 = await s.authAttempts.reserve([ip, login], T + 2, T + 30_000, allow);
        expect(await s.authAttempts.settle((r2 as { ids: number[] }).ids, 'void', [ip, login], [login.key], T + 3, T + HOUR, T + HOUR)).toEqual([]);
        expect(await look(T + 4)).toEqual([
          { ...fresh(ip.key), failures: 1 },
          { ...fresh(login.key), failures: 1 },
        ]);
      });

      it('locks is empty for counters never locked', async () => {
        expect(await s.authAttempts.locks([ip.key, login.key], T)).toEqual([]);
      });

      it('prune keeps the failures, reservations and locks still in force', async () => {
        const r1 = await s.authAttempts.reserve([ip, login], T, T + 30_000, allow);
        await s.authAttempts.settle((r1 as { ids: number[] }).ids, 'fail', [ip, login], [], T + 1, T + HOUR, T + 15 * MINUTE);
        const r2 = await s.authAttempts.reserve([ip, login], T + 2, T + 30_000, allow);
        await s.authAttempts.settle((r2 as { ids: number[] }).ids, 'fail', [ip], [], T + 3, T + HOUR, T + 15 * MINUTE);
        await s.authAttempts.reserve([login], T + 4, T + 30_000, allow);
        await s.authAttempts.prune(T + 5);
        expect(await s.authAttempts.locks([ip.key], T + 6)).toEqual([{ key: ip.key, until: T + 15 * MINUTE }]);
        expect(await look(T + 6)).toEqual([
          { ...fresh(ip.key), lockedUntil: T + 15 * MINUTE },
          { ...fresh(login.key), failures: 2, inflight: 1 },
        ]);
      });
    });

    describe('leases', () => {
      it('take gives a free lease to its first taker and refuses everyone else until it lapses', async () => {
        expect(await s.leases.take('drain', 'a', T, T + 1000)).toBe(true);
        expect(await s.leases.take('drain', 'b', T + 999, T + 2000)).toBe(false);
        expect(await s.leases.take('drain', 'b', T + 1000, T + 2000)).toBe(true);
        expect(await s.leases.take('drain', 'a', T + 1500, T + 3000)).toBe(false);
      });

      it('take renews the lease for its holder', async () => {
        expect(await s.leases.take('drain', 'a', T, T + 1000)).toBe(true);
        expect(await s.leases.take('drain', 'a', T + 500, T + 5000)).toBe(true);
        expect(await s.leases.take('drain', 'b', T + 1000, T + 6000)).toBe(false);
        expect(await s.leases.take('drain', 'b', T + 5000, T + 6000)).toBe(true);
      });

      it('give frees the lease only when its holder gives it', async () => {
        await s.leases.take('drain', 'a', T, T + 1000);
        await s.leases.give('drain', 'b');
        expect(await s.leases.take('drain', 'b', T + 1, T + 1000)).toBe(false);
        await s.leases.give('drain', 'a');
        expect(await s.leases.take('drain', 'b', T + 1, T + 1000)).toBe(true);
      });

      it('leases of different names are independent', async () => {
        expect(await s.leases.take('drain', 'a', T, T + 1000)).toBe(true);
        expect(await s.leases.take('sweep', 'b', T, T + 1000)).toBe(true);
      });

      it('of several takers asking at once, exactly one gets the lease', async () => {
        const got = await Promise.all(['a', 'b', 'c', 'd'].map((o) => s.leases.take('drain', o, T, T + 1000)));
        expect(got.filter(Boolean)).toHaveLength(1);
      });

      it('firstInBurst is true for the first caller of a burst only, and again once the burst is over', async () => {
        expect(await s.leases.firstInBurst('notice:alice', T, T + 1000)).toBe(true);
        expect(await s.leases.firstInBurst('notice:alice', T + 1, T + 1001)).toBe(false);
        expect(await s.leases.firstInBurst('notice:alice', T + 999, T + 1999)).toBe(false);
        expect(await s.leases.firstInBurst('notice:bob', T + 1, T + 1001)).toBe(true);
        expect(await s.leases.firstInBurst('notice:alice', T + 1000, T + 2000)).toBe(true);
      });

      it('of several callers at once, exactly one is first in the burst', async () => {
        const got = await Promise.all(Array.from({ length: 4 }, () => s.leases.firstInBurst('notice:alice', T, T + 1000)));
        expect(got.filter(Boolean)).toHaveLength(1);
      });
    });

    describe('dkim', () => {
      /** A key as a file import makes it (activated when made), or inactive as keygen makes it (activatedAt null). */
      const key = (domain: string, selector: string, createdAt: number, pem = `-----BEGIN PRIVATE KEY-----\n${selector}\n-----END PRIVATE KEY-----\n`, activatedAt: number | null = createdAt) => ({
        domain,
        selector,
        privateKeyPem: pem,
        createdAt,
        activatedAt,
      });
      const inactive = (domain: string, selector: string, createdAt: number) => key(domain, selector, createdAt, undefined, null);
      const by = (now: number, forced = false) => ({ actor: 'admin', reason: 'rotation', now, forced });

      it('add stores a key, lower-cased, and signing returns the key activated last (then the newest, then the first selector by name), never an inactive one', async () => {
        expect(await s.dkim.signing('example.com')).toBeNull();
        await s.dkim.add(key('Example.COM', 'Old', T));
        await s.dkim.add(key('example.com', 'new', T + 1000));
        await s.dkim.add(key('example.com', 'b-tie', T + 1000));
        await s.dkim.add(inactive('example.com', 'staged', T + 9000));
        await s.dkim.add(key('other.example', 'x', T + 5000));
        await s.dkim.add(inactive('only-staged.example', 'y', T));
        expect(await s.dkim.signing('EXAMPLE.com')).toEqual(key('example.com', 'b-tie', T + 1000));
        expect(await s.dkim.signing('example.org')).toBeNull();
        expect(await s.dkim.signing('only-staged.example')).toBeNull();
        const list = await s.dkim.list();
        expect(list.map((k) => [k.domain, k.selector, k.createdAt, k.activatedAt])).toEqual([
          ['example.com', 'staged', T + 9000, null],
          ['example.com', 'b-tie', T + 1000, T + 1000],
          ['example.com', 'new', T + 1000, T + 1000],
          ['example.com', 'old', T, T],
          ['only-staged.example', 'y', T, null],
          ['other.example', 'x', T + 5000, T + 5000],
        ]);
        expect(dkimStates(list)).toEqual(['inactive', 'signing', 'retired', 'retired', 'inactive', 'signing']);
        expect(list[3]!.privateKeyPem).toBe(key('x', 'Old', T).privateKeyPem);
      });

      it('activate makes a key sign and audits it; activating a retired key rolls back; the signing key and an unknown selector change nothing', async () => {
        await s.dkim.add(key('example.com', 's1', T));
        await s.dkim.add(inactive('example.com', 's2', T + 1000));
        expect(await s.dkim.activate('Example.COM', 'S2', by(T + 2000))).toEqual({ outcome: 'activated', previous: 's1', at: T + 2000 });
        expect(await s.dkim.signing('example.com')).toEqual(key('example.com', 's2', T + 1000, undefined, T + 2000));
        expect(await s.dkim.activate('example.com', 's2', by(T + 3000))).toEqual({ outcome: 'already-signing' });
        expect(await s.dkim.activate('example.com', 'nope', by(T + 3000))).toEqual({ outcome: 'not-found' });
        expect(await s.dkim.activate('other.example', 's1', by(T + 3000))).toEqual({ outcome: 'not-found' });
        // A rollback from a node whose clock is behind still lands after the last activation.
        expect(await s.dkim.activate('example.com', 's1', by(T + 1500, true))).toEqual({ outcome: 'activated', previous: 's2', at: T + 2001 });
        expect((await s.dkim.signing('example.com'))?.selector).toBe('s1');
        expect(dkimStates(await s.dkim.list())).toEqual(['retired', 'signing']);
        expect((await s.audit.list({ target: 'dkim:example.com' })).map((e) => [e.at, e.actor, e.action, e.detail, e.reason])).toEqual([
          [T + 2000, 'admin', 'dkim.activate', { selector: 's2', previous: 's1', forced: false }, 'rotation'],
          [T + 1500, 'admin', 'dkim.activate', { selector: 's1', previous: 's2', forced: true }, 'rotation'],
        ]);
        expect(await s.audit.list()).toHaveLength(2);
      });

      it('activates a domain\'s first key, and of two activations at once the later one signs, following the first', async () => {
        await s.dkim.add(inactive('example.com', 'a', T));
        await s.dkim.add(inactive('example.com', 'b', T));
        await s.dkim.add(inactive('example.com', 'c', T));
        expect(await s.dkim.activate('example.com', 'a', by(T + 10))).toEqual({ outcome: 'activated', previous: null, at: T + 10 });
        const both = await Promise.all(['b', 'c'].map((sel) => s.dkim.activate('example.com', sel, by(T + 20))));
        const [first, second] = both[0]!.outcome === 'activated' && both[0]!.previous === 'a' ? ['b', 'c'] : ['c', 'b'];
        expect(both[first === 'b' ? 0 : 1]).toEqual({ outcome: 'activated', previous: 'a', at: T + 20 });
        expect(both[first === 'b' ? 1 : 0]).toEqual({ outcome: 'activated', previous: first, at: T + 21 });
        expect((await s.dkim.signing('example.com'))?.selector).toBe(second);
      });

      it('add refuses a selector the domain already has, whatever its case, and keeps the first key', async () => {
        await s.dkim.add(key('example.com', 'pst1', T));
        await expect(s.dkim.add(key('EXAMPLE.com', 'PST1', T + 1, 'other'))).rejects.toBeInstanceOf(DkimKeyExistsError);
        expect(await s.dkim.list()).toEqual([key('example.com', 'pst1', T)]);
      });

      it('importKey adds a new name, and reports a name already taken as the same or a different key without replacing it', async () => {
        expect(await s.dkim.importKey(key('example.com', 'pst1', T))).toBe('added');
        expect(await s.dkim.importKey(key('example.com', 'pst1', T + 5))).toBe('same');
        expect(await s.dkim.importKey(key('example.com', 'pst1', T + 5, 'another key'))).toBe('different');
        expect(await s.dkim.list()).toEqual([key('example.com', 'pst1', T)]);
      });
    });

    describe('tx', () => {
      it('commits everything done through the transaction and returns what the callback returned', async () => {
        const result = await s.tx(async (t) => {
          const u = await t.users.add('alice', 'h', T);
          await t.bindings.add('user', u.id, 'sender', 'alice@example.com', T);
          await t.audit.record({ at: T, actor: 'admin', action: 'user.add', target: 'message:none', detail: null, reason: null });
          await t.queue.insertMany([message({ at: T, state: 'held' })]);
          return u.id;
        });
        const u = await s.users.find('alice');
        expect(u?.id).toBe(result);
        expect(await s.bindings.values('user', result, 'sender', T)).toEqual(['alice@example.com']);
        expect(await s.audit.list()).toHaveLength(1);
        expect(await s.queue.count()).toBe(1);
      });

      it('rolls back everything when the callback throws, and rejects with its error', async () => {
        const bob = await s.users.add('bob', 'h', T);
        const [h] = await put(message({ at: T, state: 'held' }));
        const boom = new Error('boom');
        let alice: Principal | undefined;
        const err = await rejection(
          s.tx(async (t) => {
            const u = await t.users.add('alice', 'h', T);
            alice = userPrincipal(u);
            await t.bindings.add('user', u.id, 'sender', 'alice@example.com', T);
            await t.users.suspend(bob.id, 'x', T + 1);
            await t.audit.record({ at: T, actor: 'admin', action: 'user.add', target: 'message:none', detail: null, reason: null });
            await t.queue.insertMany([message({ at: T + 1 })]);
            await t.quarantine.release(h!, admin(T + 2));
            await t.limits.setOverride(principalOf(alice), { messagesPerHour: 5 }, T);
            throw boom;
          }),
        );
        expect(err).toBe(boom);
        expect(await s.users.list()).toEqual([bob]);
        expect(await s.bindings.list('user', alice!.id, T)).toEqual([]);
        expect(await s.senderDomains(T)).toEqual([]);
        expect(await s.audit.list()).toEqual([]);
        expect(await s.queue.count()).toBe(1);
        expect((await s.queue.get(h!))?.state).toBe('held');
        expect(await s.quarantine.decision(h!)).toBeUndefined();
        expect(await s.limits.override(principalOf(alice!))).toBeUndefined();
        // The store is usable again afterwards.
        await s.tx(async (t) => {
          await t.users.add('carol', 'h', T);
        });
        expect((await s.users.list()).map((u) => u.username)).toEqual(['bob', 'carol']);
      });

      it('rolls back the earlier writes when a verb inside it fails and the error propagates', async () => {
        await s.users.add('alice', 'h', T);
        await expect(
          s.tx(async (t) => {
            await t.users.add('bob', 'h', T);
            await t.users.add('alice', 'h', T);
          }),
        ).rejects.toBeInstanceOf(UserExistsError);
        expect((await s.users.list()).map((u) => u.username)).toEqual(['alice']);
      });

      it('sees its own writes before it commits', async () => {
        await s.tx(async (t) => {
          const u = await t.users.add('alice', 'h', T);
          expect(await t.users.find('alice')).toEqual(u);
          await t.users.suspend(u.id, 'x', T + 1);
          expect((await t.users.get(u.id))?.status).toBe('suspended');
        });
      });

      it('a verb called on the store itself from inside the callback is part of the transaction', async () => {
        // cli/user.ts calls ctx.store() inside tx(), not the handle it is given.
        await expect(
          s.tx(async () => {
            await s.users.add('alice', 'h', T);
            throw new Error('undo');
          }),
        ).rejects.toThrow('undo');
        expect(await s.users.find('alice')).toBeUndefined();
      });

      it('a transaction opened inside another is part of it', async () => {
        await expect(
          s.tx(async (t) => {
            await t.tx(async (inner) => {
              await inner.users.add('alice', 'h', T);
            });
            throw new Error('undo');
          }),
        ).rejects.toThrow('undo');
        expect(await s.users.find('alice')).toBeUndefined();
      });

      /**
       * Opens a transaction that adds alice and then waits; `outside` runs meanwhile. An
       * engine may make it wait for the transaction (SQLite: one writer) or run it beside the
       * transaction (PostgreSQL); either way it is never part of it. `early`: whether it was
       * answered before finish() let the transaction end (commit, or roll back with `undo`).
       */
      async function whileOpen<R>(outside: () => Promise<R>, undo: boolean) {
        let inside!: () => void;
        const entered = new Promise<void>((r) => (inside = r));
        let finish!: () => void;
        const held = new Promise<void>((r) => (finish = r));
        const done = s.tx(async (t) => {
          await t.users.add('alice', 'h', T);
          inside();
          await held;
          if (undo) throw new Error('undo');
        });
        await entered;
        let answered = false;
        const result = outside().then((r) => {
          answered = true;
          return r;
        });
        await turns();
        const early = answered;
        finish();
        return { done, result, early };
      }

      it('a read from outside never sees what an open transaction wrote; after the commit it does', async () => {
        const { done, result, early } = await whileOpen(() => s.users.find('alice'), false);
        await done;
        // Answered while the transaction was open: it saw nothing of it. Answered later, it saw
        // the commit (an engine that made it wait) or the state before it (an engine that ran
        // it beside the transaction, whose answer was merely slow): never anything else.
        const seen = (await result)?.username;
        if (early) expect(seen).toBeUndefined();
        // SQLite has one writer: a read that waited, waited for the commit.
        else if (engine === 'sqlite') expect(seen).toBe('alice');
        else expect([undefined, 'alice']).toContain(seen);
        expect((await s.users.find('alice'))?.username).toBe('alice');
      });

      it('a write from outside is not part of an open transaction: it stays when the transaction rolls back', async () => {
        const { done, result } = await whileOpen(() => s.users.add('bob', 'h', T), true);
        await expect(done).rejects.toThrow('undo');
        await result;
        expect((await s.users.list()).map((u) => [u.username, u.createdAt])).toEqual([['bob', T]]);
        expect(await s.users.find('alice')).toBeUndefined();
      });

      it('what a rolled-back transaction wrote is never read back afterwards, cached or not', async () => {
        // A row read (and so remembered) inside the transaction must not outlive its rollback,
        // even when a later write brings the store's change counter back to the same value.
        await expect(
          s.tx(async (t) => {
            const u = await t.users.add('alice', 'hash-alice', T);
            expect(await t.users.find('alice')).toEqual(u);
            throw new Error('undo');
          }),
        ).rejects.toThrow('undo');
        const bob = await s.users.add('bob', 'hash-bob', T + 1);
        expect([bob.username, bob.passwordHash]).toEqual(['bob', 'hash-bob']);
        expect(await s.users.get(bob.id)).toEqual(bob);
        expect(await s.users.find('alice')).toBeUndefined();
      });

      it('a lease or counter verb inside a transaction is refused at once or rolled back with it, never half kept', async () => {
        // SQLite writes leases on a second connection, which cannot commit while the
        // transaction holds the file: it refuses at once. PostgreSQL makes it part of the transaction.
        const started = performance.now();
        const err = await rejection(
          s.tx(async (t) => {
            await t.users.add('alice', 'h', T);
            await t.leases.take('drain', 'a', T, T + 1);
            throw new Error('undo');
          }),
        );
        expect((err as Error).message).toMatch(/^undo$|cannot run inside store\.tx/);
        expect(performance.now() - started).toBeLessThan(1000);
        expect(await s.users.find('alice')).toBeUndefined();
        expect(await s.leases.take('drain', 'b', T, T + 1)).toBe(true);
      });

      it('two transactions from different callers each commit whole, whatever the engine interleaves', async () => {
        const one = s.tx(async (t) => {
          await t.users.add('alice', 'h', T);
          await turns(3);
          await t.users.setNotifyAddress((await t.users.find('alice'))!.id, 'a@home.example', T);
        });
        const two = s.tx(async (t) => {
          await t.users.add('bob', 'h', T);
          await t.users.setNotifyAddress((await t.users.find('bob'))!.id, 'b@home.example', T);
        });
        await Promise.all([one, two]);
        expect((await s.users.list()).map((u) => [u.username, u.notifyAddress])).toEqual([
          ['alice', 'a@home.example'],
          ['bob', 'b@home.example'],
        ]);
      });
    });

    describe('open and close', () => {
      it('is open until closed', async () => {
        expect(s.open).toBe(true);
        expect(await s.queue.writable(T)).toBe(true);
        s.close();
        expect(s.open).toBe(false);
      });

      it('refuses verbs once closed, and says the spool cannot commit', async () => {
        s.close();
        await expect(s.users.list()).rejects.toThrow();
        await expect(s.users.add('alice', 'h', T)).rejects.toThrow();
        await expect(s.leases.take('drain', 'a', T, T + 1)).rejects.toThrow();
        expect(await s.queue.writable(T)).toBe(false);
      });

      it('keeps everything committed across close and reopen', async () => {
        const u = await s.users.add('alice', 'h', T);
        const m = message({ at: T, state: 'held', principal: userPrincipal(u) });
        await s.queue.insertMany([m]);
        await s.leases.take('drain', 'a', T, T + 1000);
        await s.limits.reserve(principalOf(userPrincipal(u)), 2, T, () => ({ admit: true }));
        s.close();
        const again = await env.reopen();
        expect(again.open).toBe(true);
        expect(await again.users.find('alice')).toEqual(u);
        expect(await again.queue.body(m.id)).toEqual(m.data);
        expect((await again.quarantine.list()).map((x) => x.id)).toEqual([m.id]);
        expect(await again.leases.take('drain', 'b', T + 1, T + 1000)).toBe(false);
        expect((await again.limits.usage(principalOf(userPrincipal(u)), T)).recipientsHour).toBe(2);
      });
    });
  });
}
