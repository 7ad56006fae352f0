import { closeAllSinks } from './sink.js';
import { rmSync } from 'node:fs';
import type { Config } from '../../src/config/schema.js';
import { ManualClock } from '../../src/domain/clock.js';
import { startDelivery, type Delivery } from '../../src/delivery/index.js';
import { IncidentResponder } from '../../src/notify/incidents.js';
import { createLogger } from '../../src/obs/log.js';
import { newQueueId, rfc5322Date } from '../../src/spool/message.js';
import { Spool } from '../../src/spool/spool.js';
import { openConfiguredStore, sqliteHandle, type Store } from '../../src/store/index.js';
import pg from 'pg';
import type { QueueState } from '../../src/domain/types.js';
import { startDnsServer, type DnsServer, type Rr } from './dnsd.js';
import { LogCapture, onTestEngine, tempDir, testConfig } from './relay.js';

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

export interface Harness {
  cfg: Config;
  dir: string;
  dns: DnsServer;
  store: Store;
  spool: Spool;
  clock: ManualClock;
  logs: LogCapture;
  delivery: Delivery;
  /** Queues a message as the spool would after DATA; resolves with its id once durable. */
  submit(m: { from: string; to: string[]; headers?: Record<string, string>; body?: string; principal?: string; state?: QueueState }): Promise<string>;
  /** Runs every attempt due now (and the DSNs they queue) to the end. */
  drain(): Promise<void>;
  /** Fault injection no verb offers: removes a message's body behind the store's back, on either engine. */
  loseBody(id: string): Promise<void>;
  close(): Promise<void>;
}

/** A delivery stack on a real loopback DNS server and a manual clock, without listeners. */
export async function startHarness(opts: { records: Rr[]; port: number; config?: DeepPartial<Config>; random?: () => number; admins?: string[] }): Promise<Harness> {
  const dns = await startDnsServer(opts.records);
  const dir = tempDir('postern-delivery-');
  const base = opts.config ?? {};
  const cfg = testConfig(
    dir,
    await onTestEngine({
      ...base,
      delivery: { enabled: true, dns_servers: [dns.address], port: opts.port, scan_interval_seconds: 3600, ...(base.delivery ?? {}) } as DeepPartial<Config>['delivery'],
    } as DeepPartial<Config>),
  );
  const store = await openConfiguredStore(cfg);
  const spool = new Spool(store.queue);
  const clock = new ManualClock();
  const logs = new LogCapture();
  const log = createLogger('debug', logs);
  // As in the server: incidents are recorded and notified through notify/.
  const incidents = opts.admins
    ? new IncidentResponder(store, spool, { hostname: cfg.server.hostname, admins: opts.admins, from: '', helpdesk: '', burstMinutes: 60 }, clock, log)
    : undefined;
  const delivery = startDelivery(cfg, { store, spool, clock, log, random: opts.random, dkimCacheMs: 0, incidents });
  let closing: Promise<void> | undefined;
  const harness: Harness = {
    cfg,
    dir,
    dns,
    store,
    spool,
    clock,
    logs,
    delivery,
    async submit(m) {
      const id = newQueueId(clock.now());
      const headers = {
        From: `<${m.from || 'nobody@test.example'}>`,
        To: m.to.map((t) => `<${t}>`).join(', '),
        Subject: 'test message',
        Date: rfc5322Date(clock.now()),
        'Message-ID': `<${id}@smtp.test.example>`,
        ...m.headers,
      };
      const raw = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') + `\r\n${m.body ?? 'Hello.\r\n'}`;
      // The submitting user, added on first use (state is keyed by its principal number).
      const user = m.principal ? ((await store.users.find(m.principal)) ?? (await store.users.add(m.principal, 'x', clock.now()))) : undefined;
      await spool.accept({
        id,
        envelope: { mailFrom: m.from, rcptTo: m.to },
        principal: user ? { kind: 'user', id: user.id, name: user.username, ref: user.principalRef } : null,
        clientIp: '127.0.0.1',
        receivedAt: clock.now(),
        state: m.state ?? 'queued',
        data: Buffer.from(raw, 'latin1'),
      });
      return id;
    },
    drain: () => delivery.scheduler.drain(),
    async loseBody(id) {
      let removed: number | null;
      if (!cfg.store.url) removed = sqliteHandle(store).prepare('DELETE FROM message_bodies WHERE message_id = ?').run(id).changes;
      else {
        const c = new pg.Client({ connectionString: cfg.store.url });
        await c.connect();
        try {
          removed = (await c.query('DELETE FROM message_bodies WHERE message_id = $1', [id])).rowCount;
        } finally {
          await c.end();
        }
      }
      if (removed !== 1) throw new Error(`message ${id} had no body to remove`);
    },
    close() {
      closing ??= (async () => {
        await delivery.stop();
        await spool.close();
        store.close();
        await dns.close();
        rmSync(dir, { recursive: true, force: true });
        openHarnesses.delete(harness);
      })();
      return closing;
    },
  };
  openHarnesses.add(harness);
  return harness;
}

const openHarnesses = new Set<Harness>();

/** afterEach for delivery tests: closes every harness and sink the test started. */
export async function closeDeliveryFixtures(): Promise<void> {
  await Promise.all([...openHarnesses].map((h) => h.close()));
  await closeAllSinks();
}
