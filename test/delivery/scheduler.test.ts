import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeliveryScheduler } from '../../src/delivery/scheduler.js';
import { ManualClock } from '../../src/domain/clock.js';
import { createLogger } from '../../src/obs/log.js';
import { newQueueId } from '../../src/spool/message.js';
import { openStore, type Store } from '../../src/store/index.js';

let store: Store | undefined;
let scheduler: DeliveryScheduler | undefined;
afterEach(async () => {
  await scheduler?.stop();
  store?.close();
});

const T = Date.UTC(2026, 11, 2, 12, 0, 0);

describe('the delivery scheduler', () => {
  it("takes over, at once, a message whose dead claimant's lease lapsed while a scan ran (not a scan interval later)", async () => {
    store = openStore(mkdtempSync(path.join(os.tmpdir(), 'postern-scheduler-')));
    const id = newQueueId(T);
    await store.queue.insertMany([
      { id, envelope: { mailFrom: 'alice@example.com', rcptTo: ['bob@example.org'] }, principal: null, clientIp: '192.0.2.10', receivedAt: T, state: 'queued', data: Buffer.from('Subject: x\r\n\r\nbody\r\n') },
    ]);
    // Another process claimed it and died; its lease runs to T + 1 s.
    expect(await store.delivery.claimDue('dead-node:1:abcdef', T, T + 1000, 10)).toEqual([id]);
    const clock = new ManualClock(T + 500);
    const s = store;
    // The lease lapses between this scan's claim (too early) and its look at what is due next:
    // a busy machine, or a slow database, puts time between the two.
    const repo = {
      ...s.delivery,
      claimDue: async (...a: Parameters<Store['delivery']['claimDue']>) => {
        const got = await s.delivery.claimDue(...a);
        clock.set(T + 1500);
        return got;
      },
    };
    let attempted: (id: string) => void = () => undefined;
    const took = new Promise<string>((r) => (attempted = r));
    scheduler = new DeliveryScheduler({
      repo,
      attempt: async (x) => attempted(x),
      clock,
      log: createLogger('silent'),
      maxConcurrent: 5,
      // Far beyond the test's time: only the scheduler's own look-again can take it.
      scanMs: 3_600_000,
      owner: 'node-b:2:fedcba',
      leaseMs: 1000,
    });
    scheduler.start();
    expect(await took).toBe(id);
  });
});
