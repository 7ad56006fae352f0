import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { initFingerprint } from '../../src/protocol/greeting.js';
import { startTestRelay, type TestRelay } from '../helpers/relay.js';

/**
 * [submission] greeting_delay_ms: no pause before the 220 by default (smtp-server's fixed
 * 100 ms capped devices that connect once per message), a pause with early talkers refused
 * when set. The greeting's timing is the feature here, so it is measured.
 */
let none: TestRelay;
let paused: TestRelay;

beforeAll(async () => {
  none = await startTestRelay();
  paused = await startTestRelay({ submission: { greeting_delay_ms: 500 } });
});
afterAll(async () => {
  await none?.stop();
  await paused?.stop();
});

/** Connects and resolves with the first reply line and how long after the connect it came. */
function firstLine(port: number, sendAtOnce?: string): Promise<{ line: string; ms: number; all: string }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let t0 = 0;
    let buf = '';
    sock.on('connect', () => {
      t0 = performance.now();
      if (sendAtOnce) sock.write(sendAtOnce);
    });
    let got = false;
    sock.on('data', (d) => {
      buf += d.toString();
      if (got || !buf.includes('\r\n')) return;
      got = true;
      const ms = performance.now() - t0;
      sock.on('close', () => resolve({ line: buf.split('\r\n')[0]!, ms, all: buf }));
      sock.end('QUIT\r\n');
    });
    sock.on('error', reject);
  });
}

describe('greeting delay', () => {
  it('greets at once with greeting_delay_ms = 0 (the default)', async () => {
    const { line, ms } = await firstLine(none.port);
    expect(line).toBe('220 smtp.test.example ESMTP Postern ready');
    // smtp-server's own pause was a fixed 100 ms before every greeting.
    expect(ms).toBeLessThan(100);
  });

  it('pauses 500 ms with greeting_delay_ms = 500, and refuses a client that talks first', async () => {
    const polite = await firstLine(paused.port);
    expect(polite.line).toBe('220 smtp.test.example ESMTP Postern ready');
    expect(polite.ms).toBeGreaterThanOrEqual(490);
    const early = await firstLine(paused.port, 'EHLO early.example\r\n');
    expect(early.line).toBe('421 smtp.test.example You talk too soon');
  });

  it('patches only the SMTPConnection.init it was reviewed against (smtp-server 3.21.6)', () => {
    // The live init is Postern's; the fingerprint of the one it replaced is checked at install.
    expect((SMTPConnection.prototype as unknown as { init: () => void }).init.toString()).toContain('greetingDelayMs');
    expect(initFingerprint()).toBe('67b68fcaf9a0a35f2c2a118d31a3dc780c982d1f0ce83d654df4f4e92d4269d3');
  });
});
