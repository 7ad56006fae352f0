import { afterEach, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/identity/passwords.js';
import { sqliteHandle } from '../../src/store/index.js';
import { startTestRelay, TEST_ARGON2, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
let t: TestRelay | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

describe('a login that fails after the password was proven', () => {
  it('leaves the session anonymous: 451 4.3.0 for the AUTH, then 530 5.7.0 for MAIL, and nothing queued', async () => {
    t = await startTestRelay({ limits: { auth_failure_delay_ms: 0 } });
    const id = await t.addUser('alice', PASS);
    // A hash made with weaker parameters than the config's is rehashed after the login is
    // accepted; here that write fails, as a store error would.
    const weaker = await hashPassword(PASS, { ...TEST_ARGON2, memoryCost: TEST_ARGON2.memoryCost / 2 });
    const db = sqliteHandle(t.relay.store);
    db.prepare('UPDATE users SET password_hash = ? WHERE id = ?').run(weaker, id);
    db.exec(`CREATE TRIGGER no_rehash BEFORE UPDATE OF password_hash ON users BEGIN SELECT RAISE(ABORT, 'store refused the rehash'); END`);

    const c = await SmtpClient.connect(t.port);
    expect(await c.login('alice', PASS)).toBe('451 4.3.0 Temporary local problem, please try again later');
    expect(await c.cmd('MAIL FROM:<alice@example.com>')).toBe('530 5.7.0 Authentication required');
    await c.quit();
    expect(await t.relay.store.queue.list()).toEqual([]);
    expect(t.logs.events('auth.error')).toHaveLength(1);
  });

  it('answers a right password from a foreign network with the usual 535 when the incident cannot be written', async () => {
    t = await startTestRelay({ limits: { auth_failure_delay_ms: 0 } });
    await t.addUser('alice', PASS, { networks: ['127.0.0.1/32'] });
    sqliteHandle(t.relay.store).exec(`CREATE TRIGGER no_incidents BEFORE INSERT ON incidents BEGIN SELECT RAISE(ABORT, 'store refused the incident'); END`);
    const c = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    // A 451 here would tell a thief the password was right.
    expect(await c.login('alice', PASS)).toBe('535 5.7.8 Authentication credentials invalid');
    await c.quit();
    expect(t.logs.events('incident.error')).toMatchObject([{ reason: 'AUTH_FOREIGN_NETWORK' }]);
    // The suspension committed before the incident was tried.
    expect((await t.relay.store.users.find('alice'))?.status).toBe('suspended');
  });
});
