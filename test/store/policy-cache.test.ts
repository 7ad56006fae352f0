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
  it('sees a change made through another connection at the very next lookup', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'postern-cache-'));
    const server = open(dir);
    const cli = open(dir);
    const u = server.users.add('alice', 'hash', 1);
    server.bindings.add('user', u.id, 'sender', 'alice@corp.example', 1);
    expect(server.users.get(u.id)!.status).toBe('active');
    expect(server.users.get(u.id)).toBe(server.users.get(u.id)); // the second read is the cached row
    expect(server.bindings.values('user', u.id, 'sender', 2)).toEqual(['alice@corp.example']);
    expect(server.limits.override('user:alice')).toBeUndefined();

    cli.users.suspend(u.id, 'test', 3);
    cli.bindings.add('user', u.id, 'sender', 'bob@corp.example', 3);
    cli.limits.setOverride('user:alice', { messagesPerHour: 5 }, 3);
    expect(server.users.get(u.id)!.status).toBe('suspended');
    expect(server.bindings.values('user', u.id, 'sender', 4)).toEqual(['alice@corp.example', 'bob@corp.example']);
    expect(server.limits.override('user:alice')).toEqual({ messagesPerHour: 5, recipientsPerHour: null, recipientsPerDay: null });

    // An admin's raw SQL moves the generation too (triggers, not application code).
    const raw = new Database(path.join(dir, 'postern.db'));
    raw.prepare(`UPDATE users SET status = 'active' WHERE id = ?`).run(u.id);
    raw.prepare('DELETE FROM bindings').run();
    raw.close();
    expect(server.users.get(u.id)!.status).toBe('active');
    expect(server.bindings.values('user', u.id, 'sender', 5)).toEqual([]);
  });

  it('still lets a cached exception lapse by time alone', () => {
    const s = open(mkdtempSync(path.join(os.tmpdir(), 'postern-cache-')));
    const u = s.users.add('alice', 'hash', 1);
    s.bindings.add('user', u.id, 'network', '192.0.2.0/24', 1, 1_000);
    expect(s.bindings.values('user', u.id, 'network', 999)).toEqual(['192.0.2.0/24']);
    expect(s.bindings.values('user', u.id, 'network', 1_000)).toEqual([]);
  });

  it('hands out frozen rows, so no caller can change what the next one reads', () => {
    const s = open(mkdtempSync(path.join(os.tmpdir(), 'postern-cache-')));
    const u = s.users.add('alice', 'hash', 1);
    const row = s.users.get(u.id)!;
    expect(() => Object.assign(row, { status: 'active' })).toThrow(TypeError);
  });
});
