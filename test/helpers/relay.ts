import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { inject } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { ManualClock } from '../../src/domain/clock.js';
import { hashPassword } from '../../src/identity/passwords.js';
import { startRelay, type Relay } from '../../src/main.js';
import { createLogger } from '../../src/obs/log.js';
import { createDatabase } from './postgres.js';

/** argon2id, really, but cheap: tests verify behaviour, benchmarks measure cost. */
export const TEST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };

export function tempDir(prefix = 'postern-test-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

/**
 * The store engine this run's relays and harnesses use: the "postgres" project of
 * vitest.config.ts sets POSTERN_TEST_STORE for the suites that run on both engines.
 */
export const ENGINE: 'sqlite' | 'postgres' = process.env.POSTERN_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';

/**
 * The overrides with the store of this run's engine: as they are on SQLite (the data dir) or
 * when they name a store themselves (a relay restarted on the same database); otherwise a new
 * database of its own, copied from the migrated template test/helpers/postgres-setup.ts made.
 */
export async function onTestEngine<T extends DeepPartial<Config>>(overrides: T): Promise<T> {
  if (ENGINE === 'sqlite' || overrides.store?.url !== undefined) return overrides;
  const url = await createDatabase(inject('postgresAdminUrl'), { template: inject('postgresTemplate') });
  return { ...overrides, store: { ...overrides.store, url } };
}

/** The [store] section of a CLI config file for a test relay's store ("" on SQLite: data_dir says it). */
export const storeToml = (cfg: Config): string => (cfg.store.url ? `[store]\nurl = "${cfg.store.url}"\n` : '');

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
  private waiters: Array<{ name: string; n: number; resolve: () => void }> = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line) continue;
      this.raw.push(line);
      this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    this.waiters = this.waiters.filter((w) => (this.events(w.name).length >= w.n ? (w.resolve(), false) : true));
    cb();
  }
  events(name: string) {
    return this.lines.filter((l) => l.event === name);
  }
  /**
   * Resolves once this event has been logged n times in all (those already logged count):
   * for work a decision starts without waiting for it, such as the notices after an incident,
   * which the reply does not wait for and which land later on some engines than on others.
   */
  logged(name: string, n = 1): Promise<void> {
    if (this.events(name).length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ name, n, resolve }));
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

/**
 * The self-signed certificate the first relay of this worker generated, per hostname. Making
 * one costs ~0.4 s (a worker thread loading the X.509 libraries), more than the rest of a
 * relay's start; later relays in a fresh data dir find it there and reuse it, as a restarted
 * server would. The generating path still runs once per worker, and in every served child.
 */
const madeCerts = new Map<string, { cert: Buffer; key: Buffer }>();
const tlsFiles = (dir: string) => ({ tls: path.join(dir, 'tls'), cert: path.join(dir, 'tls', 'selfsigned.crt'), key: path.join(dir, 'tls', 'selfsigned.key') });

export async function startTestRelay(overrides: DeepPartial<Config> = {}, opts: { dir?: string; clock?: ManualClock } = {}): Promise<TestRelay> {
  const dir = opts.dir ?? tempDir();
  const cfg = testConfig(dir, await onTestEngine(overrides));
  const files = tlsFiles(dir);
  const made = madeCerts.get(cfg.server.hostname);
  if (!opts.dir && !cfg.tls.cert && made) {
    mkdirSync(files.tls, { mode: 0o700 });
    writeFileSync(files.key, made.key, { mode: 0o600 });
    writeFileSync(files.cert, made.cert);
  }
  const logs = new LogCapture();
  const clock = opts.clock ?? new ManualClock();
  const relay = await startRelay(cfg, { clock, log: createLogger('debug', logs) });
  if (!made && logs.events('relay.started')[0]?.cert === 'generated') madeCerts.set(cfg.server.hostname, { cert: readFileSync(files.cert), key: readFileSync(files.key) });
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
