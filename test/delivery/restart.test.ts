import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { openStore } from '../../src/store/index.js';
import { cli } from '../helpers/cli.js';
import { killAll, serve } from '../helpers/child.js';
import type { DnsServer } from '../helpers/dnsd.js';
import { SERVED_PASS as PASS, servedRelay } from '../helpers/served.js';
import { startSinks, type Sink } from '../helpers/sink.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BUILT = path.join(ROOT, 'dist/src/cli/postern.js');

function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestSource(p) : e.name.endsWith('.ts') ? statSync(p).mtimeMs : 0);
  }
  return t;
}

// `npm test` builds dist/ first; a developer running only this file gets a build when dist/
// is older than the sources (tsc still emits when someone else's file has a type error).
beforeAll(() => {
  if (!existsSync(BUILT) || statSync(path.join(ROOT, 'dist/src/delivery/scheduler.js'), { throwIfNoEntry: false }) === undefined || statSync(BUILT).mtimeMs < newestSource(path.join(ROOT, 'src'))) {
    try {
      execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { stdio: 'ignore' });
    } catch {
      // Type errors elsewhere still leave JavaScript behind; the test fails if it is unusable.
    }
  }
}, 60_000);

let sinks: Sink[] = [];
let dns: DnsServer | undefined;
afterEach(async () => {
  killAll();
  await Promise.all(sinks.map((s) => s.close()));
  sinks = [];
});
afterAll(() => dns?.close());


describe('delivery across a crash', () => {
  it('keeps a deferred message through kill -9 between attempts and delivers it exactly once after restart', async () => {
    sinks = await startSinks(['127.0.0.2']);
    const mx = sinks[0]!;
    let refuse = true;
    mx.behaviour.rcpt = () => (refuse ? '451 4.7.1 Greylisted, come back later' : undefined);
    const served = await servedRelay('127.0.0.2', mx.port);
    dns = served.dns;
    const { dir, config } = served;

    const first = await serve(config);
    const deferred = first.next('delivery.defer');
    const client = await SmtpClient.connect(first.port);
    await client.login('alice', PASS);
    const reply = await client.send('alice@sender.example', ['bob@dest.example'], 'Subject: survive\r\n\r\nkill me\r\n');
    expect(reply).toMatch(/^250 /);
    const id = /queued as (\S+)$/.exec(reply)![1]!;
    client.destroy();
    // The spool woke delivery at once; the first attempt is deferred and written down.
    expect(await deferred).toMatchObject({ queue_id: id, rcpt: 'bob@dest.example', status: '4.7.1' });
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe(null);

    const st = openStore(path.join(dir, 'data'));
    expect(await st.queue.get(id)).toMatchObject({ state: 'queued', attempts: 1 });
    expect(await st.delivery.recipients(id)).toMatchObject([{ address: 'bob@dest.example', status: 'pending', attempts: 1, lastError: '451 4.7.1 Greylisted, come back later' }]);
    st.close();

    // The next try is 5 minutes away; an admin asks for it now, then the server comes back.
    expect((await cli(config, ['queue', 'retry', id])).code).toBe(0);
    refuse = false;
    const second = await serve(config);
    expect(await second.next('delivery.ok')).toMatchObject({ queue_id: id, rcpt: 'bob@dest.example', mx: 'mx.dest.example', attempt: 2 });
    await second.next('delivery.done');
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    expect(mx.messages).toHaveLength(1);
    expect(mx.messages[0]!.raw.toString()).toContain('kill me');
    expect(mx.helos).toEqual(['mta-out.test.example', 'mta-out.test.example']);
    const after = openStore(path.join(dir, 'data'));
    expect(await after.queue.count()).toBe(0);
    after.close();
  });
});
