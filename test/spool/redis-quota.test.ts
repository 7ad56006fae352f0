import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/domain/clock.js';
import { hasRedis, NO_REDIS_MESSAGE, startRedis } from '../helpers/redis.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';

if (!hasRedis) console.warn(NO_REDIS_MESSAGE);

describe.runIf(hasRedis)('rate limits shared through Redis', () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  async function node(clock: ManualClock): Promise<TestRelay> {
    const t = await startTestRelay({ limits: { messages_per_hour: 5, redis: redis.url, auth_failure_delay_ms: 0 } }, { clock });
    await t.addUser('alice', PASS);
    return t;
  }

  async function send(t: TestRelay, n: number): Promise<void> {
    const c = await SmtpClient.connect(t.port);
    await c.login('alice', PASS);
    for (let i = 0; i < n; i++) expect(await c.send('alice@example.com', ['x@example.net'], MSG)).toMatch(/^250 2\.0\.0 Ok: queued as /);
    await c.quit();
  }

  it('two relay nodes with their own spools enforce one combined limit per principal', async () => {
    const clock = new ManualClock();
    const [a, b] = await Promise.all([node(clock), node(clock)]);
    await Promise.all([send(a, 4), send(b, 4)]);
    const states = [...(await a.relay.store.queue.list()), ...(await b.relay.store.queue.list())].map((m) => m.state);
    expect(states.filter((s) => s === 'queued')).toHaveLength(5);
    expect(states.filter((s) => s === 'waiting-quota')).toHaveLength(3);
    expect((await a.relay.quota.ledger.usage({ kind: 'user', name: 'alice', ref: (await a.relay.store.users.find('alice'))!.principalRef }, clock.now())).messagesHour).toBe(5);

    // The window rolls over for both nodes at once; each drains its own waiting mail, paced.
    clock.advance(3_600_001);
    const released = [...(await a.relay.quota.drain()), ...(await b.relay.quota.drain())];
    expect(released).toHaveLength(1);
    await Promise.all([a.stop(), b.stop()]);
  });
});
