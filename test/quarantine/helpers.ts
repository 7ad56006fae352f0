import { expect } from 'vitest';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

export const PW = 'quarantine test password';

/** A relay with alice, bound to loopback and to the sender alice@corp.example only. */
export async function quarantineRelay(overrides: Parameters<typeof startTestRelay>[0] = {}): Promise<TestRelay> {
  const t = await startTestRelay(overrides);
  await t.addUser('alice', PW, { senders: ['alice@corp.example'] });
  return t;
}

/** Submits one message as alice over STARTTLS and returns the reply and the queue id. */
export async function submit(t: TestRelay, body: string, to: string[], from = 'alice@corp.example'): Promise<{ reply: string; id: string }> {
  const c = await SmtpClient.connect(t.port);
  try {
    expect(await c.login('alice', PW)).toMatch(/^235 /);
    const reply = await c.send(from, to, body);
    const id = /queued as (\S+)$/.exec(reply)?.[1];
    expect(reply, reply).toMatch(/^250 2\.0\.0 Ok: queued as /);
    return { reply, id: id! };
  } finally {
    await c.quit();
  }
}
