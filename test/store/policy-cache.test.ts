import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/index.js';

const stores: Store[] = [];
afterEach(() => stores.splice(0).forEach((s) => s.close()));
const open = (dir: string) => {
  const s = openStore(dir);
  stores.push(s);
  return s;
};

describe('policy rows kept in memory', () => {
  it('sees a change made through another connection at the very next lookup', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-cache-'));
    const server = open(dir);
    const cli = open(dir);
    const u = await server.users.add('alice', 'hash', 1);
    await server.bindings.add('user', u.id, 'sender', 'alice@corp.example', 1);
    expect((await server.users.get(u.id))!.status).toBe('active');
    expect(await server.users.get(u.id)).toBe(await server.users.get(u.id)); // the second read is the cached row
    expect(await server.bindings.values('user', u.id, 'sender', 2)).toEqual(['alice@corp.example']);
    expect(await server.limits.override(u.principalRef)).toBeUndefined();

    await cli.users.suspend(u.id, 'test', 3);
    await cli.bindings.add('user', u.id, 'sender', 'bob@corp.example', 3);
    await cli.limits.setOverride(u.principalRef, { messagesPerHour: 5 }, 3);
    expect((await server.users.get(u.id))!.status).toBe('suspended');
    expect(await server.bindings.values('user', u.id, 'sender', 4)).toEqual(['alice@corp.example', 'bob@corp.example']);
    expect(await server.limits.override(u.principalRef)).toEqual({ messagesPerHour: 5, recipientsPerHour: null, recipientsPerDay: null });

    // An admin's raw SQL moves the generation too (triggers, not application code).
    const raw = new Database(path.join(dir, 'postern.db'));
    raw.prepare(`UPDATE users SET status = 'active' WHERE id = ?`).run(u.id);
    raw.prepare('DELETE FROM bindings').run();
    raw.close();
    expect((await server.users.get(u.id))!.status).toBe('active');
    expect(await server.bindings.values('user', u.id, 'sender', 5)).toEqual([]);
  });

  it('still lets a cached exception lapse by time alone', async () => {
    const s = open(mkdtempSync(path.join(os.tmpdir(), 'postern-cache-')));
    const u = await s.users.add('alice', 'hash', 1);
    await s.bindings.add('user', u.id, 'network', '192.0.2.0/24', 1, 1_000);
    expect(await s.bindings.values('user', u.id, 'network', 999)).toEqual(['192.0.2.0/24']);
    expect(await s.bindings.values('user', u.id, 'network', 1_000)).toEqual([]);
  });

  it('keeps cached app passwords when another process records a use, and drops them when one changes or goes', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-cache-'));
    const server = open(dir);
    const cli = open(dir);
    const u = await server.users.add('alice', 'hash', 1);
    const p = await server.appPasswords.add(u.id, 'phone', 'pub-1', 'hash-1', 1);
    const cached = (await server.appPasswords.byPublicId('pub-1'))!;
    expect(await server.appPasswords.byPublicId('pub-1')).toBe(cached);

    // A login's touch, once a minute per app password, must not empty every process's memory.
    await cli.appPasswords.touch(p.id, 100_000);
    expect((await cli.appPasswords.find(u.id, 'phone'))!.lastUsedAt).toBe(100_000);
    expect(await server.appPasswords.byPublicId('pub-1')).toBe(cached);

    const raw = new Database(path.join(dir, 'postern.db'));
    raw.prepare(`UPDATE app_passwords SET password_hash = 'other' WHERE id = ?`).run(p.id);
    raw.close();
    expect((await server.appPasswords.byPublicId('pub-1'))!.passwordHash).toBe('other');
    await server.appPasswords.list(u.id);
    await cli.appPasswords.revoke(p.id, 2);
    expect(await server.appPasswords.byPublicId('pub-1')).toBeUndefined();
    expect(await server.appPasswords.list(u.id)).toEqual([]);
  });

  it('hands out frozen rows, so no caller can change what the next one reads', async () => {
    const s = open(mkdtempSync(path.join(os.tmpdir(), 'postern-cache-')));
    const u = await s.users.add('alice', 'hash', 1);
    const row = (await s.users.get(u.id))!;
    expect(() => Object.assign(row, { status: 'active' })).toThrow(TypeError);
  });
});
