import { afterEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cli } from '../helpers/cli.js';
import { startRelay } from '../../src/main.js';
import { createLogger } from '../../src/obs/log.js';
import { Metrics, tapLogger } from '../../src/obs/metrics.js';
import { ManualClock } from '../../src/domain/clock.js';
import { newQueueId } from '../../src/spool/message.js';
import { LogCapture, startTestRelay, tempDir, testConfig, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const MSG = 'Subject: hi\r\n\r\nhello\r\n';

let t: TestRelay | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** One sample's value from the exposition text; 0 when the series does not exist yet. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2] ? m[2].split(',') : [];
    if (want.every((w) => have.includes(w)) && have.length === want.length) return Number(m[3]);
  }
  return 0;
}

describe('metrics endpoint', () => {
  it('moves each counter by exactly the sessions, logins, refusals and suspensions that happened', async () => {
    t = await startTestRelay();
    await t.addUser('alice', PASS);
    await t.addUser('bob', PASS);
    const port = t.relay.metricsPort!;
    const before = (await get(port, '/metrics')).body;

    const a = await SmtpClient.connect(t.port);
    expect(await a.login('alice', PASS)).toMatch(/^235/);
    expect(await a.send('alice@example.com', ['x@elsewhere.example'], MSG)).toMatch(/^250 2\.0\.0 Ok/);
    expect(await a.cmd('MAIL FROM:<alice@not-hers.example>')).toMatch(/^553/);
    await a.quit();
    const wrong = await SmtpClient.connect(t.port);
    expect(await wrong.login('alice', 'not the password')).toMatch(/^535/);
    await wrong.quit();
    // bob is bound to 127.0.0.1: from 127.0.0.2 his right password is a stolen one.
    const foreign = await SmtpClient.connect(t.port, { localAddress: '127.0.0.2' });
    expect(await foreign.login('bob', PASS)).toMatch(/^535/);
    await foreign.quit();

    const after = (await get(port, '/metrics')).body;
    const delta = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
    expect(delta('postern_sessions_total')).toBe(3);
    expect(delta('postern_auth_total', { outcome: 'ok', reason: 'none' })).toBe(1);
    expect(delta('postern_auth_total', { outcome: 'fail', reason: 'AUTH_INVALID' })).toBe(1);
    expect(delta('postern_auth_total', { outcome: 'fail', reason: 'AUTH_FOREIGN_NETWORK' })).toBe(1);
    expect(delta('postern_messages_accepted_total', { state: 'queued' })).toBe(1);
    expect(delta('postern_messages_refused_total', { stage: 'mail', reason: 'SENDER_NOT_BOUND' })).toBe(1);
    expect(delta('postern_suspensions_total', { principal_kind: 'user', reason: 'foreign-network' })).toBe(1);
    expect(delta('postern_suspensions_total', { principal_kind: 'user', reason: 'foreign-sender' })).toBe(1);
    expect(delta('postern_incidents_total', { kind: 'foreign-network' })).toBe(1);
    expect(delta('postern_submission_seconds_count')).toBe(1);
    expect(sample(after, 'postern_queue_messages', { state: 'queued' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, 'postern_open_connections')).toBe(0);
    // No per-user series: the figures per user come from "postern stats".
    expect(after).not.toMatch(/alice|bob/);
  });

  it('counts a hold in the relay and its release by the CLI in another process', async () => {
    t = await startTestRelay();
    await t.addUser('alice', PASS);
    const c = await SmtpClient.connect(t.port);
    await c.login('alice', PASS);
    // A header From: outside alice's senders scores from_not_bound = 10: held.
    const reply = await c.send('alice@example.com', ['x@elsewhere.example'], 'From: "CEO" <ceo@bank.example>\r\nSubject: pay\r\n\r\nnow\r\n');
    await c.quit();
    const id = /queued as (\S+)$/.exec(reply)![1]!;
    const config = path.join(t.dir, 'cli.toml');
    writeFileSync(config, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${t.dir}"\n[log]\nlevel = "silent"\n`);
    expect((await cli(config, ['quarantine', 'release', id, '--reason', 'checked by phone'])).code).toBe(0);
    const text = (await get(t.relay.metricsPort!, '/metrics')).body;
    expect(sample(text, 'postern_quarantine_held_total')).toBe(1);
    expect(sample(text, 'postern_messages_accepted_total', { state: 'held' })).toBe(1);
    expect(sample(text, 'postern_quarantine_decisions_total', { action: 'released' })).toBe(1);
    expect(sample(text, 'postern_quarantine_decisions_total', { action: 'deleted' })).toBe(0);
  });

  it('counts events the log level hides', async () => {
    const dir = tempDir();
    const cfg = testConfig(dir, { log: { level: 'warn' } });
    const logs = new LogCapture();
    const relay = await startRelay(cfg, { clock: new ManualClock(), log: createLogger('warn', logs) });
    try {
      const c = await SmtpClient.connect(relay.ports.starttls[0]!);
      await c.cmd('EHLO client.example');
      expect(await c.cmd('MAIL FROM:<a@example.com>')).toMatch(/^530/);
      await c.quit();
      const body = (await get(relay.metricsPort!, '/metrics')).body;
      expect(logs.events('mail.refused')).toEqual([]);
      expect(sample(body, 'postern_messages_refused_total', { stage: 'mail', reason: 'TLS_REQUIRED' })).toBe(1);
    } finally {
      await relay.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers /healthz with 200 while serving and 503 once the store is gone', async () => {
    t = await startTestRelay();
    const port = t.relay.metricsPort!;
    expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
    sqliteHandle(t.relay.store).close();
    expect(await get(port, '/healthz')).toEqual({ status: 503, body: 'store closed\n' });
    expect((await get(port, '/nothing')).status).toBe(404);
  });

  it('opens no listener when [metrics] enabled = false', async () => {
    t = await startTestRelay({ metrics: { enabled: false } });
    expect(t.relay.metricsPort).toBeNull();
  });
});

describe('metrics from events', () => {
  it('maps delivery, DSN, hold and monitor-mode events to their counters and times deliveries from the queue id', async () => {
    const now = Date.parse('2026-11-22T12:00:00Z');
    const m = new Metrics({ queueDepth: () => ({}), openConnections: () => 0, quarantineDecisions: () => ({ released: 2 }), receivedAt: (id) => (id.startsWith('X') ? null : now - 90_000), now: () => now });
    const id = newQueueId(now - 90_000);
    m.observe({ event: 'delivery.ok', queue_id: id });
    m.observe({ event: 'delivery.defer', queue_id: id, reason: 'greylisted' });
    m.observe({ event: 'delivery.fail', queue_id: id, reason: 'mailbox-unknown' });
    m.observe({ event: 'dsn.queued', queue_id: 'X' });
    m.observe({ event: 'message.held' });
    m.observe({ event: 'policy.monitor', policy: 'network', would: 'suspend', reason: 'AUTH_FOREIGN_NETWORK', principal: 'alice' });
    m.observe({ event: 'not.counted' });
    m.observe('a bare string');
    const text = await m.registry.metrics();
    expect(sample(text, 'postern_delivery_outcomes_total', { class: 'delivered', category: 'none' })).toBe(1);
    expect(sample(text, 'postern_delivery_outcomes_total', { class: 'deferred', category: 'greylisted' })).toBe(1);
    expect(sample(text, 'postern_delivery_outcomes_total', { class: 'failed', category: 'mailbox-unknown' })).toBe(1);
    expect(sample(text, 'postern_delivery_seconds_count')).toBe(2);
    expect(sample(text, 'postern_delivery_seconds_sum')).toBe(180);
    expect(sample(text, 'postern_dsns_total')).toBe(1);
    expect(sample(text, 'postern_policy_monitor_total', { policy: 'network', would: 'suspend', reason: 'AUTH_FOREIGN_NETWORK' })).toBe(1);
    expect(sample(text, 'postern_quarantine_held_total')).toBe(1);
    expect(sample(text, 'postern_quarantine_decisions_total', { action: 'released' })).toBe(2);
  });

  it('reads the arrival time back out of a queue id', async () => {
    const { queueIdTime } = await import('../../src/spool/message.js');
    const at = Date.parse('2026-11-22T12:34:56.789Z');
    expect(queueIdTime(newQueueId(at))).toBe(at);
    expect(queueIdTime('not-an-id')).toBeNull();
  });

  it('passes every log call through to pino unchanged', () => {
    const logs = new LogCapture();
    const seen: unknown[] = [];
    const log = tapLogger(createLogger('info', logs), (o) => seen.push(o));
    log.debug({ event: 'hidden' });
    log.info({ event: 'shown', n: 1 });
    expect(seen).toEqual([{ event: 'hidden' }, { event: 'shown', n: 1 }]);
    expect(logs.lines).toMatchObject([{ event: 'shown', n: 1, level: 'info' }]);
  });
});
