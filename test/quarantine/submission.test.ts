import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestRelay } from '../helpers/relay.js';
import { fakePe, mime, zip } from '../helpers/mime.js';
import { quarantineRelay, submit } from './helpers.js';

let t: TestRelay;
beforeAll(async () => {
  t = await quarantineRelay();
});
afterAll(async () => {
  await t.stop();
});

const headers = (to: string, extra: Record<string, string> = {}) => ({ From: 'Alice <alice@corp.example>', To: `<${to}>`, Subject: 'Quarterly figures', ...extra });

/** What the spool recorded for a message: its state, score and reasons as stored. */
async function stored(id: string) {
  const m = (await t.relay.store.quarantine.get(id))!;
  return { state: m.state, score: m.score, reasons: m.reasons.map((r) => [r.id, r.weight, r.detail]) };
}

// Each case writes to a domain of its own, so "first message to a new domain" is always
// true: the cases do not depend on their order.
describe('scoring real MIME messages submitted over SMTP', () => {
  it('queues a clean message with score 0 and no reasons', async () => {
    const { id } = await submit(t, mime(headers('bob@clean.example'), [{ type: 'text/plain; charset=utf-8', body: 'Figures attached tomorrow.\n' }]), ['bob@clean.example']);
    expect(await stored(id)).toEqual({ state: 'queued', score: 0, reasons: [] });
    expect(t.logs.events('message.held')).not.toContainEqual(expect.objectContaining({ queue_id: id }));
  });

  it('holds a spoofed From: with the usual 250 and the queue id', async () => {
    const { reply, id } = await submit(
      t,
      mime(headers('bob@spoof.example', { From: 'PayPal Service <service@paypal.example>' }), [{ type: 'text/plain', body: 'Your account is limited.\n' }]),
      ['bob@spoof.example'],
    );
    expect(reply).toBe(`250 2.0.0 Ok: queued as ${id}`);
    expect(await stored(id)).toEqual({
      state: 'held',
      score: 13,
      reasons: [
        ['FROM_NOT_BOUND', 10, 'service@paypal.example'],
        ['NEW_DOMAIN', 3, 'spoof.example'],
      ],
    });
    expect(t.logs.events('message.held')).toContainEqual(
      expect.objectContaining({ queue_id: id, principal: 'alice', principal_kind: 'user', score: 13, reason: 'FROM_NOT_BOUND,NEW_DOMAIN', verdict: 'held' }),
    );
  });

  it('holds display-name spoofing (another address in the name) to a new domain', async () => {
    const { id } = await submit(
      t,
      mime(headers('bob@display.example', { From: '"ceo@corp.example" <alice@corp.example>' }), [{ type: 'text/plain', body: 'Wire the money today.\n' }]),
      ['bob@display.example'],
    );
    expect(await stored(id)).toEqual({
      state: 'held',
      score: 10,
      reasons: [
        ['FROM_DISPLAY_NAME_ADDRESS', 7, 'ceo@corp.example'],
        ['NEW_DOMAIN', 3, 'display.example'],
      ],
    });
  });

  it('holds an .exe attachment', async () => {
    const body = mime(headers('bob@exe.example'), [
      { type: 'text/plain', body: 'See attached.\n' },
      { type: 'application/octet-stream', filename: 'invoice.exe', body: fakePe() },
    ]);
    const { id } = await submit(t, body, ['bob@exe.example']);
    expect(await stored(id)).toEqual({
      state: 'held',
      score: 13,
      reasons: [
        ['EXECUTABLE_ATTACHMENT', 10, 'invoice.exe'],
        ['NEW_DOMAIN', 3, 'exe.example'],
      ],
    });
  });

  it('holds a .js inside a zip, found by listing the archive', async () => {
    const archive = zip([
      { name: 'README.txt', data: 'open the invoice' },
      { name: 'invoice_2026.js', data: 'WScript.Echo("hi")' },
    ]);
    const body = mime(headers('bob@zip.example'), [
      { type: 'text/plain', body: 'Invoice attached.\n' },
      { type: 'application/zip', filename: 'invoice.zip', body: archive },
    ]);
    const { id } = await submit(t, body, ['bob@zip.example']);
    expect(await stored(id)).toEqual({
      state: 'held',
      score: 13,
      reasons: [
        ['ARCHIVED_EXECUTABLE', 10, 'invoice.zip: invoice_2026.js'],
        ['NEW_DOMAIN', 3, 'zip.example'],
      ],
    });
  });

  it('holds a mismatched link to a new domain, and queues it to a domain already written to', async () => {
    const html = '<p>Please <a href="http://login.bank-secure.example.net/verify">https://www.bank.example/login</a> today.</p>';
    const body = (to: string) =>
      mime(headers(to), [{ type: 'text/html; charset=utf-8', body: html }]);
    const first = await submit(t, body('bob@link.example'), ['bob@link.example']);
    expect(await stored(first.id)).toEqual({
      state: 'held',
      score: 10,
      reasons: [
        ['LINK_TEXT_MISMATCH', 7, 'www.bank.example -> login.bank-secure.example.net'],
        ['NEW_DOMAIN', 3, 'link.example'],
      ],
    });
    // A clean message makes known.example a domain alice has written to.
    await submit(t, mime(headers('carol@known.example'), [{ type: 'text/plain', body: 'hello\n' }]), ['carol@known.example']);
    const second = await submit(t, body('carol@known.example'), ['carol@known.example']);
    expect(await stored(second.id)).toEqual({ state: 'queued', score: 7, reasons: [['LINK_TEXT_MISMATCH', 7, 'www.bank.example -> login.bank-secure.example.net']] });
  });

  it('holds one message to 80 recipients in 80 domains', async () => {
    const to = Array.from({ length: 80 }, (_, i) => `user${i}@list${i}.example`);
    const { id } = await submit(t, mime({ From: 'alice@corp.example', To: 'undisclosed-recipients:;', Subject: 'Offer' }, [{ type: 'text/plain', body: 'Great offer.\n' }]), to);
    expect(await stored(id)).toEqual({
      state: 'held',
      score: 13,
      reasons: [
        ['MANY_RECIPIENTS', 4, '80 recipients'],
        ['MANY_DOMAINS', 6, '80 domains'],
        ['NEW_DOMAIN', 3, 'list0.example, list1.example, list2.example (+77 more)'],
      ],
    });
    expect((await t.relay.store.quarantine.get(id))!.rcptTo).toEqual(to);
  });

  it('never offers held mail to delivery', async () => {
    const held = (await t.relay.store.quarantine.list()).map((m) => m.id);
    expect(held.length).toBeGreaterThan(0);
    const due = await t.relay.store.delivery.claimDue('test', Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 10_000);
    expect(due.filter((id) => held.includes(id))).toEqual([]);
    for (const id of held) expect(await t.relay.store.delivery.job(id)).toBeUndefined();
  });
});
