import { afterEach, describe, expect, it, vi } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import { fakePe, mime } from '../helpers/mime.js';
import type { TestRelay } from '../helpers/relay.js';
import { quarantineRelay, submit } from './helpers.js';

let t: TestRelay | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

const DAY = 86_400_000;
const exe = (to: string, subject = 'Tool') =>
  mime({ From: 'Alice <alice@corp.example>', To: `<${to}>`, Subject: subject }, [
    { type: 'text/plain', body: 'attached\n' },
    { type: 'application/octet-stream', filename: 'tool.exe', body: fakePe() },
  ]);

describe('expiry of held mail', () => {
  it('deletes held mail once it is older than retention_days, logged and audited, and never queued mail', async () => {
    t = await quarantineRelay({ quarantine: { notify_sender: false } });
    const held = await submit(t, exe('bob@a.example'), ['bob@a.example']);
    const queued = await submit(t, mime({ From: 'alice@corp.example', To: '<bob@a.example>', Subject: 'hi' }, [{ type: 'text/plain', body: 'hi\n' }]), ['bob@a.example']);

    t.clock.advance(14 * DAY - 1);
    expect(await t.relay.quarantine.sweep()).toEqual([]);
    expect((await t.relay.store.quarantine.get(held.id))?.state).toBe('held');

    t.clock.advance(1);
    expect((await t.relay.quarantine.sweep()).map((m) => m.id)).toEqual([held.id]);
    expect(await t.relay.store.queue.get(held.id)).toBeUndefined();
    expect((await t.relay.store.queue.get(queued.id))?.state).toBe('queued');
    expect(t.logs.events('quarantine.expired')).toEqual([expect.objectContaining({ queue_id: held.id, principal: 'alice', principal_kind: 'user', score: 13, verdict: 'deleted', reason: 'retention' })]);
    expect(sqliteHandle(t.relay.store).prepare('SELECT at, actor, action, target, reason FROM audit').all()).toEqual([
      { at: t.clock.now(), actor: 'postern', action: 'quarantine.expire', target: `message:${held.id}`, reason: 'held longer than retention_days = 14' },
    ]);
    await expect(t!.relay.store.quarantine.release(held.id, { actor: 'ops', reason: null, now: t!.clock.now() })).rejects.toThrow(`message ${held.id} was already expired`);
    expect(await t.relay.quarantine.sweep()).toEqual([]);
  });

  it('follows retention_days from the config', async () => {
    t = await quarantineRelay({ quarantine: { notify_sender: false, retention_days: 2 } });
    const { id } = await submit(t, exe('bob@a.example'), ['bob@a.example']);
    t.clock.advance(2 * DAY);
    expect((await t.relay.quarantine.sweep()).map((m) => m.id)).toEqual([id]);
  });
});

describe('held notice', () => {
  it('queues a short notice to the sender that does not say why, once per burst', async () => {
    t = await quarantineRelay({ notify: { helpdesk: 'helpdesk@corp.example' } });
    const { id } = await submit(t, exe('bob@a.example', 'Q3 tool'), ['bob@a.example']);
    await vi.waitFor(() => expect(t!.logs.events('quarantine.notice_queued')).toHaveLength(1));
    const event = t.logs.events('quarantine.notice_queued')[0]!;
    expect(event).toMatchObject({ queue_id: id, principal: 'alice', principal_kind: 'user', to: 'alice@corp.example' });

    const notice = (await t.relay.store.queue.get(event.notice_id as string))!;
    expect(notice).toMatchObject({ state: 'queued', mailFrom: 'postmaster@smtp.test.example', rcptTo: ['alice@corp.example'], principal: null });
    const text = (await t.relay.store.queue.body(notice.id))!.toString('utf8');
    expect(text).toContain('From: Postern <postmaster@smtp.test.example>\r\n');
    expect(text).toContain('Subject: Your message is held for review\r\n');
    expect(text).toContain('Auto-Submitted: auto-generated\r\n');
    expect(text).toContain(`  Subject:  Q3 tool\r\n  To:       bob@a.example\r\n  Sent:     Sun, 22 Nov 2026 12:00:00 +0000\r\n  Queue ID: ${id}\r\n`);
    expect(text).toContain('tell your helpdesk (helpdesk@corp.example) at once');
    expect(text).not.toMatch(/EXECUTABLE|tool\.exe|score/i);

    // A second held message within [notify] burst_minutes is logged, not mailed again.
    const second = await submit(t, exe('bob@a.example'), ['bob@a.example']);
    await vi.waitFor(() => expect(t!.logs.events('quarantine.notice_skipped')).toEqual([expect.objectContaining({ queue_id: second.id, reason: 'burst' })]));
    expect(t.logs.events('quarantine.notice_queued')).toHaveLength(1);
  });

  it('sends no notice when notify_sender is off', async () => {
    t = await quarantineRelay({ quarantine: { notify_sender: false } });
    await submit(t, exe('bob@a.example'), ['bob@a.example']);
    expect(await t.relay.store.queue.list('queued')).toEqual([]);
    expect(t.logs.events('quarantine.notice_queued')).toEqual([]);
  });
});
