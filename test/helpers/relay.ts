import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ManualClock } from '../../src/domain/clock.js';
import { hashPassword } from '../../src/identity/passwords.js';
import { startRelay, type Relay } from '../../src/main.js';
import { createLogger } from '../../src/obs/log.js';

/** argon2id, really, but cheap: tests verify behaviour, benchmarks measure cost. */
export const TEST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };

export function tempDir(prefix = 'postern-test-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

export function testConfig(dataDir: string, overrides: DeepPartial<Config> = {}): Config {
  const doc: Record<string, Record<string, unknown>> = {
    server: { hostname: 'smtp.test.example', data_dir: dataDir, shutdown_grace_seconds: 2 },
    submission: { listen: ['127.0.0.1:0'], listen_tls: ['127.0.0.1:0'] },
    auth: { argon2_memory_kib: TEST_ARGON2.memoryCost, argon2_time_cost: TEST_ARGON2.timeCost, argon2_parallelism: 1 },
    identity: { helo: 'mta-out.test.example', ptr: 'mail.test.example' },
    // Delivery is opt-in in tests: left on, it would ask the system resolver about
    // example.org, and test traffic stays on loopback (test/delivery enables it with a test DNS).
    delivery: { enabled: false },
    // The pause before a failed-AUTH reply is production behaviour; tests assert replies, not waits.
    limits: { auth_failure_delay_ms: 0 },
    log: { level: 'info' },
    // Port 0: test relays run side by side; relay.metricsPort says where this one listens.
    metrics: { listen: '127.0.0.1:0' },
  };
  for (const [section, values] of Object.entries(overrides)) doc[section] = { ...doc[section], ...(values as object) };
  return parseConfig(doc, dataDir);
}

/** Log lines as parsed objects, to assert the events a decision produced. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly raw: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line) continue;
      this.raw.push(line);
      this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    cb();
  }
  events(name: string) {
    return this.lines.filter((l) => l.event === name);
  }
}

export interface TestRelay {
  relay: Relay;
  cfg: Config;
  dir: string;
  logs: LogCapture;
  clock: ManualClock;
  port: number;
  tlsPort: number;
  /** A user bound by default to loopback (127.0.0.1 only, so 127.0.0.2 is "foreign") and @example.com. */
  addUser(name: string, password: string, bind?: { networks?: string[]; senders?: string[] }): Promise<number>;
  stop(): Promise<void>;
}

export async function startTestRelay(overrides: DeepPartial<Config> = {}, opts: { dir?: string; clock?: ManualClock } = {}): Promise<TestRelay> {
  const dir = opts.dir ?? tempDir();
  const cfg = testConfig(dir, overrides);
  const logs = new LogCapture();
  const clock = opts.clock ?? new ManualClock();
  const relay = await startRelay(cfg, { clock, log: createLogger('debug', logs) });
  return {
    relay,
    cfg,
    dir,
    logs,
    clock,
    port: relay.ports.starttls[0]!,
    tlsPort: relay.ports.tls[0]!,
    async addUser(name, password, bind = {}) {
      const hash = await hashPassword(password, TEST_ARGON2);
      const id = (await relay.store.users.add(name, hash, clock.now())).id;
      for (const n of bind.networks ?? ['127.0.0.1/32', '::1/128']) await relay.store.bindings.add('user', id, 'network', n, clock.now());
      for (const sndr of bind.senders ?? ['@example.com']) await relay.store.bindings.add('user', id, 'sender', sndr, clock.now());
      return id;
    },
    async stop() {
      await relay.close();
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
