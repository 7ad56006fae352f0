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
    // The server counts a's slot free when it sees the close, a moment after the client's
    // (the greeting no longer waits 100 ms to hide that): each try follows the last one's refusal.
    const admitted = async (): Promise<SmtpClient> => {
      for (let tries = 0; tries < 50; tries++) {
        const x = await SmtpClient.connect(t.port).catch(() => null);
        if (x && (await x.greeting).startsWith('220 ')) return x;
        x?.destroy();
      }
      throw new Error('127.0.0.1 was not admitted again after a connection closed');
    };
    const d = await admitted();
    expect(await d.greeting).toMatch(/^220 /);
    for (const x of [b, d, other]) await x.quit();
    if (c instanceof SmtpClient) c.destroy();
    expect(t.logs.events('session.refused')[0]).toMatchObject({ reason: 'TOO_MANY_CONNECTIONS', ip: '127.0.0.1' });
  });

  it('refuses a connection past max_clients with 421 4.3.2, over both listeners', async () => {
    t = await startTestRelay({ server: { max_clients: 2 } });
    const a = await SmtpClient.connect(t.port);
    const b = await SmtpClient.connect(t.tlsPort, { tls: true, localAddress: '127.0.0.2' });
    const c = await SmtpClient.connect(t.port, { localAddress: '127.0.0.3' });
    expect(await c.greeting).toBe('421 4.3.2 Too many connected clients, please try again later');
    c.destroy();
    for (const x of [a, b]) await x.quit();
  });
});
