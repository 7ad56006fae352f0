import { afterEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cli } from '../helpers/cli.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

const PASS = 'correct horse battery staple';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;

let t: TestRelay | undefined;
afterEach(() => t?.stop());

/** A relay whose user alice may send 2 messages an hour, with room for 10 to wait; the CLI's config beside it. */
async function relay() {
  const r = (t = await startTestRelay({ limits: { messages_per_hour: 2, ceiling: 10 } }));
  await r.addUser('alice', PASS);
  const config = path.join(r.dir, 'cli.toml');
  writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${r.dir}"\n[limits]\nmessages_per_hour = 2\n`);
  return { r, config };
}

async function send(r: TestRelay, n: number): Promise<string[]> {
  const c = await SmtpClient.connect(r.port);
  expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    ids.push(QUEUED.exec(await c.send('alice@example.com', ['x@example.net'], 'Subject: hi\r\n\r\nhello\r\n'))![1]!);
    // A millisecond apart, so that "oldest first" is the order they were sent in.
    r.clock.advance(1);
  }
  await c.quit();
  return ids;
}

const stateOf = async (r: TestRelay, id: string) => (await r.relay.store.queue.get(id))?.state;

describe('mail waiting for quota when an admin raises the limits', () => {
  it('goes at once, oldest first, as far as the new limits have room; then new mail goes at once again', async () => {
    const { r, config } = await relay();
    const ids = await send(r, 5);
    expect(await Promise.all(ids.map((id) => stateOf(r, id)))).toEqual(['queued', 'queued', 'waiting-quota', 'waiting-quota', 'waiting-quota']);
    // The window is full and nothing moves: the clock stands still throughout.
    expect(await r.relay.quota.drain()).toEqual([]);

    // Room for two more this hour: the two oldest go at the next drain, not one per 15 minutes.
    expect((await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', '4'])).code).toBe(0);
    expect(await r.relay.quota.drain()).toEqual([ids[2], ids[3]]);
    expect(await r.relay.quota.drain()).toEqual([]);
    // New mail keeps its place behind what still waits.
    const [behind] = await send(r, 1);
    expect(await stateOf(r, behind!)).toBe('waiting-quota');

    expect((await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', '100'])).code).toBe(0);
    expect(await r.relay.quota.drain()).toEqual([ids[4], behind]);
    // Nothing waits now, and the new limit has room: straight to delivery.
    const [fresh] = await send(r, 1);
    expect(await stateOf(r, fresh!)).toBe('queued');
    expect(r.logs.events('quota.released').map((e) => e.queue_id)).toEqual([ids[2], ids[3], ids[4], behind]);
  });

  it('is paced as before when the limits stay as they were, or were raised before any drain saw the old ones', async () => {
    const { r, config } = await relay();
    const ids = await send(r, 4);
    // A relay that never drained under the old limits (as after a restart) cannot tell a raise
    // from limits that were always so: it paces, which never sends faster than before.
    expect((await cli(config, ['user', 'limits', 'alice', '--messages-per-hour', '4'])).code).toBe(0);
    expect(await r.relay.quota.drain()).toEqual([]);
    r.clock.advance(15 * 60_000);
    expect(await r.relay.quota.drain()).toEqual([ids[2]]);
    expect(await r.relay.quota.drain()).toEqual([]);
  });
});
