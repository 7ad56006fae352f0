import { beforeEach, describe, expect, it } from 'vitest';
import { openDb } from '../../src/store/db.js';
import { openStore } from '../../src/store/index.js';
import { verifyPassword } from '../../src/identity/passwords.js';
import { cli, writeConfig } from '../helpers/cli.js';
import { tempDir } from '../helpers/relay.js';
import path from 'node:path';

let cfg: string;
/** The least a user needs to be added: one sender and one network. */
const BIND = ['--sender', 'someone@example.com', '--network', '192.0.2.0/24'];
beforeEach(() => {
  cfg = writeConfig(tempDir());
});

async function hashOf(name: string): Promise<string> {
  const st = openStore(path.join(path.dirname(cfg), 'data'));
  try {
    return (await st.users.find(name))!.passwordHash;
  } finally {
    st.close();
  }
}

describe('postern user', () => {
  it('adds a user with a generated password printed once, stored as argon2id', async () => {
    const r = await cli(cfg, ['user', 'add', 'alice', ...BIND]);
    expect(r.code).toBe(0);
    const pw = /^user alice added; password \(shown once\): ([A-Za-z0-9_-]{24})\n$/.exec(r.out)![1]!;
    expect((await hashOf('alice'))).toMatch(/^\$argon2id\$/);
    expect(await verifyPassword((await hashOf('alice')), pw)).toBe(true);
  });

  it('takes a password on stdin and refuses a weak one', async () => {
    const bob = await cli(cfg, ['user', 'add', 'bob', '--password-stdin', '--sender', 'bob@example.com', '--network', '192.0.2.0/24', '--notify', 'bob@home.example'], 'correct horse battery\n');
    expect(bob).toEqual({ code: 0, out: 'user bob added\n', err: '' });
    expect(await verifyPassword((await hashOf('bob')), 'correct horse battery')).toBe(true);
    expect(await cli(cfg, ['user', 'add', 'carol', '--password-stdin', ...BIND], 'short\n')).toEqual({
      code: 1,
      out: '',
      err: 'postern: password must be at least 12 characters\n',
    });
  });

  it('refuses a user without a sender or a network before writing anything, so the retry with them works', async () => {
    expect(await cli(cfg, ['user', 'add', 'carol'])).toEqual({
      code: 2,
      out: '',
      err: 'postern: postern user add carol needs --sender ADDR and --network CIDR (or --country CC, --asn N): without them carol could not send\n',
    });
    expect(await cli(cfg, ['user', 'add', 'carol', '--sender', 'carol@example.com'])).toMatchObject({
      code: 2,
      err: 'postern: postern user add carol needs --network CIDR (or --country CC, --asn N): without it carol could not send\n',
    });
    expect(await cli(cfg, ['user', 'show', 'carol'])).toMatchObject({ code: 1, err: 'postern: no such user: carol (see: postern user list)\n' });
    expect(await cli(cfg, ['user', 'add', 'carol', '--sender', 'carol@example.com', '--network', '192.0.2.0/24'])).toMatchObject({ code: 0 });
  });

  it('refuses a duplicate name (case-insensitively) and a malformed one', async () => {
    await cli(cfg, ['user', 'add', 'alice', ...BIND]);
    expect(await cli(cfg, ['user', 'add', 'Alice', ...BIND])).toMatchObject({
      code: 1,
      err: 'postern: user Alice already exists (to change the password: postern user passwd Alice; to bind more senders or places: postern user allow Alice --sender ADDR --network CIDR)\n',
    });
    expect((await cli(cfg, ['user', 'add', 'a b'])).err).toBe('postern: invalid user name "a b": use letters, digits and . _ @ + - (at most 64)\n');
  });

  it('lists every user as user show describes each (fetched for all users at once)', async () => {
    for (const name of ['alice', 'bob', 'carol']) await cli(cfg, ['user', 'add', name, ...BIND]);
    expect(await cli(cfg, ['user', 'allow', 'bob', '--network', '198.51.100.0/24'])).toMatchObject({ code: 0 });
    const st = openStore(path.join(path.dirname(cfg), 'data'));
    try {
      const [alice, bob] = [(await st.users.find('alice'))!, (await st.users.find('bob'))!];
      await st.appPasswords.add(alice.id, 'phone', 'pub-phone', 'hash', 1);
      await st.appPasswords.add(alice.id, 'laptop', 'pub-laptop', 'hash', 2);
      await st.credentials.markCompromised('fp-1', 'BOB', null, 1);
      await st.incidents.record({ principalKind: 'user', principalId: bob.id, principalName: 'bob', principalRef: bob.principalRef, kind: 'manual' }, 1, null);
    } finally {
      st.close();
    }
    const list = JSON.parse((await cli(cfg, ['user', 'list', '--json'])).out) as Array<Record<string, unknown>>;
    const shown = await Promise.all(['alice', 'bob', 'carol'].map(async (n) => JSON.parse((await cli(cfg, ['user', 'show', n, '--json'])).out) as Record<string, unknown>));
    expect(list).toEqual(shown);
    expect(list.map((u) => [u.name, u.app_passwords, u.compromised_passwords, u.open_incidents, (u.networks as string[]).length])).toEqual([
      ['alice', ['phone', 'laptop'], 0, 0, 1],
      ['bob', [], 1, 1, 2],
      ['carol', [], 0, 0, 1],
    ]);
  });

  it('lists, shows, changes the password of and deletes users', async () => {
    await cli(cfg, ['user', 'add', 'alice', ...BIND]);
    await cli(cfg, ['user', 'add', 'bob', ...BIND]);
    const list = await cli(cfg, ['user', 'list', '--json']);
    expect(JSON.parse(list.out).map((u: { name: string; status: string }) => [u.name, u.status])).toEqual([['alice', 'active'], ['bob', 'active']]);
    expect((await cli(cfg, ['user', 'list'])).out).toMatch(/^NAME +STATUS +NETWORKS +COUNTRIES +ASNS +SENDERS +APP PASSWORDS +CREATED\nalice +active +1 +0 +0 +1 +0 +\d{4}-/);
    expect(JSON.parse((await cli(cfg, ['user', 'show', 'alice', '--json'])).out)).toMatchObject({ name: 'alice', status: 'active' });

    const before = (await hashOf('alice'));
    expect(await cli(cfg, ['user', 'passwd', 'alice', '--password-stdin'], 'another long password\n')).toMatchObject({ code: 0, out: 'password of alice changed\n' });
    expect((await hashOf('alice'))).not.toBe(before);
    expect(await verifyPassword((await hashOf('alice')), 'another long password')).toBe(true);

    expect(await cli(cfg, ['user', 'delete', 'bob'])).toMatchObject({ code: 0, out: 'user bob deleted\n' });
    expect(await cli(cfg, ['user', 'show', 'bob'])).toMatchObject({ code: 1, err: 'postern: no such user: bob (see: postern user list)\n' });
  });

  it('answers unknown commands and options with usage and exit status 2', async () => {
    expect((await cli(cfg, ['user', 'frobnicate'])).code).toBe(2);
    expect((await cli(cfg, ['user', 'list', '--colour'])).code).toBe(2);
    expect((await cli(cfg, ['bogus'])).err).toMatch(/^postern: unknown command: bogus\n/);
    const help = await cli(cfg, ['user', '--help']);
    expect(help).toMatchObject({ code: 0 });
    expect(help.out).toMatch(/Examples?:\n {2}postern /);
  });
});

describe('postern queue list and db migrate', () => {
  it('shows an empty queue, in JSON too', async () => {
    expect(await cli(cfg, ['queue', 'list'])).toEqual({ code: 0, out: 'queue is empty\n', err: '' });
    expect(JSON.parse((await cli(cfg, ['queue', 'list', '--json'])).out)).toEqual([]);
    expect((await cli(cfg, ['queue', 'list', '--state', 'lost'])).err).toBe('postern: unknown state lost: use one of queued, held, waiting-quota\n');
  });

  it('migrates once and reports the version after', async () => {
    const first = await cli(cfg, ['db', 'migrate']);
    expect(first.out).toMatch(/^applied migrations 1, 2(, \d+)*; schema is at version \d+\n$/);
    expect((await cli(cfg, ['db', 'migrate'])).out).toMatch(/^schema is up to date \(version \d+\)\n$/);
  });

  it('refuses to work on a database newer than the code', async () => {
    await cli(cfg, ['db', 'migrate']);
    const db = openDb(path.join(path.dirname(cfg), 'data'));
    db.prepare('INSERT INTO schema_migrations VALUES (999, ?, 0)').run('future');
    db.close();
    const r = await cli(cfg, ['user', 'list']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^postern: the database schema is version 999 but this Postern only knows up to \d+: it was used by a newer Postern/);
  });

  it('names the missing config file', async () => {
    expect(await cli('/nonexistent/postern.toml', ['user', 'list'])).toMatchObject({ code: 1, err: expect.stringMatching(/^postern: cannot read config \/nonexistent\/postern.toml: ENOENT/) });
  });
});
