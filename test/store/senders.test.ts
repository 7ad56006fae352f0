import { rmSync } from 'node:fs';
import { sqliteHandle } from '../../src/store/index.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/index.js';
import { senderDomains } from '../../src/store/senders.js';
import { tempDir } from '../helpers/relay.js';

let dir: string;
let store: Store;
beforeEach(() => {
  dir = tempDir();
  store = openStore(dir);
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function bind(kind: 'user' | 'device', id: number, bindingKind: string, value: string, expiresAt: number | null = null) {
  sqliteHandle(store)
    .prepare('INSERT INTO bindings (principal_kind, principal_id, kind, value, position, expires_at, created_at) VALUES (?, ?, ?, ?, 0, ?, 0)')
    .run(kind, id, bindingKind, value, expiresAt);
}

describe('senderDomains', () => {
  it('lists each domain users and devices may send as once, from addresses and @domain bindings', () => {
    bind('user', 1, 'sender', '@example.com');
    bind('user', 2, 'sender', 'alice@example.com');
    bind('device', 1, 'sender', 'printer@office.example.org');
    bind('device', 1, 'recipient', 'boss@elsewhere.example');
    bind('device', 2, 'network', '192.0.2.7/32');
    expect(senderDomains(sqliteHandle(store), 1000)).toEqual(['example.com', 'office.example.org']);
  });

  it('leaves out time-limited exceptions that have expired', () => {
    bind('user', 1, 'sender', '@old.example', 500);
    bind('user', 1, 'sender', '@current.example', 2000);
    expect(senderDomains(sqliteHandle(store), 1000)).toEqual(['current.example']);
  });

  it('is empty when nothing is bound', () => {
    expect(senderDomains(sqliteHandle(store), 1000)).toEqual([]);
  });
});
