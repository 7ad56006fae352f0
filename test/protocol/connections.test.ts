import { afterEach, describe, expect, it } from 'vitest';
import { SmtpClient } from '../helpers/smtp-client.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

let t: TestRelay;
afterEach(() => t?.stop());

describe('connections per client address', () => {
  it('refuses a client address past its connection cap and admits it again when one closes', async () => {
    t = await startTestRelay({ server: { max_connections_per_ip: 2 } });
    const a = await SmtpClient.connect(t.port);
    const b = await SmtpClient.connect(t.port, { tls: false });
    const c = await SmtpClient.connect(t.port).catch((e: Error) => e);
    // connect() resolves once the greeting line arrives: here it is the refusal.
    expect(c instanceof SmtpClient ? await c.greeting : String(c)).toBe('421 4.7.0 Too many connections from this address, please try again later');
    // Another address is not affected.
    const other = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    expect(await other.greeting).toMatch(/^220 /);
    await a.quit();
    const d = await SmtpClient.connect(t.port);
    expect(await d.greeting).toMatch(/^220 /);
    for (const x of [b, d, other]) await x.quit();
    if (c instanceof SmtpClient) c.destroy();
    expect(t.logs.events('session.refused')).toMatchObject([{ reason: 'TOO_MANY_CONNECTIONS', ip: '127.0.0.1' }]);
  });
});
