import { afterEach, describe, expect, it } from 'vitest';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;

let t: TestRelay;
afterEach(() => t?.stop());

describe('monitor mode', () => {
  it('logs a would-be suspension for a foreign network and a foreign sender, and suspends nobody', async () => {
    t = await startTestRelay({ binding: { network: { mode: 'monitor' }, sender: { mode: 'monitor' } } });
    await t.addUser('alice', PASS, { networks: ['127.0.0.1/32'], senders: ['alice@example.com'] });
    const c = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.send('ceo@bank.example', ['x@example.net'], MSG)).toMatch(QUEUED);
    await c.quit();
    expect(t.logs.events('policy.monitor')).toMatchObject([
      { policy: 'network', would: 'suspend', principal: 'alice', reason: 'AUTH_FOREIGN_NETWORK', ip: '127.0.0.2' },
      { policy: 'sender', would: 'suspend', principal: 'alice', reason: 'SENDER_NOT_BOUND', sender: 'ceo@bank.example' },
    ]);
    expect((await t.relay.store.users.find('alice'))!.status).toBe('active');
    expect(await t.relay.store.incidents.list()).toEqual([]);
    expect((await t.relay.store.queue.list()).filter((m) => m.principal === null)).toEqual([]);
  });

  it('keeps enforcing a policy left in enforce mode', async () => {
    t = await startTestRelay({ binding: { network: { mode: 'monitor' } } });
    await t.addUser('alice', PASS, { networks: ['127.0.0.1/32'], senders: ['alice@example.com'] });
    const c = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.cmd('MAIL FROM:<ceo@bank.example>')).toBe('553 5.7.1 Sender address not allowed for this account: <ceo@bank.example>');
    await c.quit();
    expect((await t.relay.store.users.find('alice'))!.status).toBe('suspended');
  });

  it('sends mail over the rate at once in limits monitor mode and logs that it would have waited', async () => {
    t = await startTestRelay({ limits: { mode: 'monitor', messages_per_hour: 1, auth_failure_delay_ms: 0 } });
    await t.addUser('alice', PASS);
    const c = await SmtpClient.connect(t.port);
    await c.login('alice', PASS);
    for (let i = 0; i < 3; i++) expect(await c.send('alice@example.com', ['x@example.net'], MSG)).toMatch(QUEUED);
    await c.quit();
    expect((await t.relay.store.queue.list()).map((m) => m.state)).toEqual(['queued', 'queued', 'queued']);
    expect(t.logs.events('policy.monitor').map((e) => [e.policy, e.would])).toEqual([
      ['limits', 'wait'],
      ['limits', 'wait'],
    ]);
  });
});
