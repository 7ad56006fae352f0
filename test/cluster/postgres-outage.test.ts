import { afterAll, describe, expect, it } from 'vitest';
import { EventEmitter, once } from 'node:events';
import { hasPostgres, NO_POSTGRES_MESSAGE, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const SECRET = 'db-password-never-logged';
let pg: TestPostgres | undefined;
let t: TestRelay | undefined;
afterAll(async () => {
  await t?.stop();
  await pg?.stop();
});

describe.runIf(hasPostgres)('PostgreSQL going away under load', () => {
  it('answers 451 4.3.0 while the database is down, acknowledges nothing it did not commit, resumes by itself, and never logs the database password', async () => {
    pg = await startPostgres();
    // A password in the URL (the throwaway server trusts any): it must never reach a log line.
    const url = (await pg.database()).replace('postern@', `postern:${SECRET}@`);
    t = await startTestRelay({ store: { url }, limits: { auth_failure_delay_ms: 0 } });
    await t.addUser('alice', PASS);
    const replies = new EventEmitter();
    const acked: string[] = [];
    const refused: string[] = [];
    let stop = false;
    // Three clients sending one message after another for as long as the test runs.
    const senders = [0, 1, 2].map(async (k) => {
      const c = await SmtpClient.connect(t!.port);
      expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
      for (let i = 0; !stop; i++) {
        const r = await c.send('alice@example.com', ['bob@example.org'], `From: <alice@example.com>\r\nSubject: ${k}-${i}\r\n\r\nhello\r\n`);
        const id = /^250 2\.0\.0 Ok: queued as (\S+)$/.exec(r)?.[1];
        if (id) acked.push(id);
        else refused.push(r);
        replies.emit('reply');
      }
      await c.quit();
    });
    const until = async (cond: () => boolean) => {
      while (!cond()) await once(replies, 'reply');
    };
    await until(() => acked.length >= 10);
    await pg.outage(async () => {
      const before = refused.length;
      await until(() => refused.length >= before + 10);
    });
    const after = acked.length;
    await until(() => acked.length >= after + 10);
    stop = true;
    await Promise.all(senders);

    expect(new Set(refused)).toEqual(new Set(['451 4.3.0 Temporary local problem, please try again later']));
    // Every message acknowledged is in the store: none lost across the outage.
    const stored = new Set((await t.relay.store.queue.list()).map((m) => m.id));
    expect(acked.filter((id) => !stored.has(id))).toEqual([]);
    expect(t.logs.events('relay.stopped')).toEqual([]);
    expect(t.logs.events('spool.error').length + t.logs.events('policy.error').length).toBeGreaterThan(0);
    expect(t.logs.raw.filter((l) => l.includes(SECRET))).toEqual([]);
  }, 60_000);
});

// Said once, not counted as a skipped test: .ci/run installs the server.
if (!hasPostgres) console.warn(NO_POSTGRES_MESSAGE);
