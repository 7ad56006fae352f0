import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { ManualClock } from '../../src/domain/clock.js';
import { Authenticator } from '../../src/identity/authenticator.js';
import { hashPassword } from '../../src/identity/passwords.js';
import { openStore, type Store } from '../../src/store/index.js';
import { TEST_ARGON2, tempDir } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';
let dir: string;
let store: Store;
let clock: ManualClock;

function auth(opts: Partial<ConstructorParameters<typeof Authenticator>[1]> = {}) {
  return new Authenticator(store.users, { params: TEST_ARGON2, maxConcurrent: 2, maxQueued: 100, cacheTtlMs: 60_000, clock, ...opts });
}

beforeEach(async () => {
  dir = tempDir();
  store = openStore(dir);
  clock = new ManualClock();
  await store.users.add('alice', await hashPassword(PASS, TEST_ARGON2), clock.now());
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Authenticator', () => {
  it('accepts the right password and refuses a wrong one or an unknown user alike', async () => {
    const a = auth();
    expect(await a.verify('alice', PASS)).toMatchObject({ kind: 'ok', cached: false });
    expect(await a.verify('ALICE', PASS)).toMatchObject({ kind: 'ok' });
    expect(await a.verify('alice', 'nope')).toEqual({ kind: 'invalid' });
    expect(await a.verify('nobody', PASS)).toEqual({ kind: 'invalid' });
  });

  it('serves a repeated login from the cache until the TTL runs out, once a login was accepted', async () => {
    const a = auth();
    const first = await a.verify('alice', PASS);
    // Verified but not yet accepted (the caller still judges the network): nothing cached.
    expect(await a.verify('alice', PASS)).toMatchObject({ kind: 'ok', cached: false });
    if (first.kind === 'ok') await a.accepted(first.user, 'alice', PASS);
    expect(await a.verify('alice', PASS)).toMatchObject({ kind: 'ok', cached: true });
    clock.advance(60_001);
    expect(await a.verify('alice', PASS)).toMatchObject({ kind: 'ok', cached: false });
  });

  it('drops cached credentials when the password changes in another process', async () => {
    const a = auth();
    const first = await a.verify('alice', PASS);
    if (first.kind === 'ok') await a.accepted(first.user, 'alice', PASS);
    expect(await a.verify('alice', PASS)).toMatchObject({ kind: 'ok', cached: true });
    // What `postern user passwd` does, through its own connection to the database.
    const cli = openStore(dir);
    const alice = (await cli.users.find('alice'))!;
    await cli.users.setPassword(alice.id, await hashPassword('a brand new password', TEST_ARGON2), clock.now());
    cli.close();
    expect(await a.verify('alice', PASS)).toEqual({ kind: 'invalid' });
    expect(await a.verify('alice', 'a brand new password')).toMatchObject({ kind: 'ok', cached: false });
  });

  it('rehashes at login when the configured parameters changed, keeping the password', async () => {
    const stronger = { memoryCost: 2048, timeCost: 2, parallelism: 1 };
    const a = auth({ params: stronger });
    expect((await store.users.find('alice'))!.passwordHash).toMatch(/^\$argon2id\$v=19\$m=1024,p=1,t=1\$/);
    const out = await a.verify('alice', PASS);
    expect(out).toMatchObject({ kind: 'ok' });
    // A verified password is rehashed only once the login is accepted.
    expect((await store.users.find('alice'))!.passwordHash).toMatch(/^\$argon2id\$v=19\$m=1024,p=1,t=1\$/);
    if (out.kind === 'ok') await a.accepted(out.user, 'alice', PASS);
    expect((await store.users.find('alice'))!.passwordHash).toMatch(/^\$argon2id\$v=19\$m=2048,p=1,t=2\$/);
    expect(await auth({ params: stronger, cacheTtlMs: 0 }).verify('alice', PASS)).toMatchObject({ kind: 'ok' });
  });

  it('queues a login storm behind a bounded number of verifications and sheds the excess', async () => {
    // One running, one waiting: the third and later are refused at once, not queued.
    const a = auth({ params: { memoryCost: 8192, timeCost: 3, parallelism: 1 }, maxConcurrent: 1, maxQueued: 1, cacheTtlMs: 0 });
    await store.users.rehash((await store.users.find('alice'))!.id, await hashPassword(PASS, { memoryCost: 8192, timeCost: 3, parallelism: 1 }), clock.now());
    const outcomes = await Promise.all(Array.from({ length: 6 }, () => a.verify('alice', PASS)));
    const kinds = outcomes.map((o) => o.kind);
    expect(kinds.filter((k) => k === 'ok')).toHaveLength(2);
    expect(kinds.filter((k) => k === 'busy')).toHaveLength(4);
  });
});
