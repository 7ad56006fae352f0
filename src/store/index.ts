import { realpathSync } from 'node:fs';
import path from 'node:path';
import { AppPasswordRepo } from './app-passwords.js';
import { AuditRepo } from './audit.js';
import { CredentialRepo } from './credentials.js';
import { MtaStsRepo } from './mta-sts.js';
import { TlsTicketKeyRepo } from './tls-tickets.js';
import { DkimRepo } from './dkim.js';
import { BindingRepo } from './bindings.js';
import { openDb, writesOn, type Db } from './db.js';
import { WalSync } from './wal-sync.js';
import { gated, Gate, type Async } from './gate.js';
import { senderDomains } from './senders.js';
import { StatsRepo } from './stats.js';
import { DeviceRepo } from './devices.js';
import { IncidentRepo } from './incidents.js';
import { LimitRepo } from './limits.js';
import { DeliveryRepo } from './delivery.js';
import { migrate, schemaVersion } from './migrate.js';
import { PolicyCache } from './policy-cache.js';
import { QueueRepo } from './queue.js';
import { QuarantineRepo } from './quarantine.js';
import { UserRepo } from './users.js';
import { AuthAttemptRepo, LeaseRepo } from './shared.js';
import { TlsReportRepo } from './tls-reports.js';

/** Each repository's verbs, as every engine implements them (classes may `implements` these). */
export type UserStore = Async<UserRepo>;
export type DeviceStore = Async<DeviceRepo>;
export type BindingStore = Async<BindingRepo>;
export type IncidentStore = Async<IncidentRepo>;
export type AuditStore = Async<AuditRepo>;
export type LimitStore = Async<LimitRepo>;
export type QueueStore = Async<QueueRepo>;
export type QuarantineStore = Async<QuarantineRepo>;
export type DeliveryStore = Async<DeliveryRepo>;
export type StatsStore = Async<StatsRepo>;
export type AuthAttemptStore = Async<AuthAttemptRepo>;
export type LeaseStore = Async<LeaseRepo>;
export type DkimStore = Async<DkimRepo>;
export type AppPasswordStore = Async<AppPasswordRepo>;
export type CredentialStore = Async<CredentialRepo>;
export type TlsReportStore = Async<TlsReportRepo>;
export type MtaStsStore = Async<MtaStsRepo>;
export type TlsTicketKeyStore = Async<TlsTicketKeyRepo>;

/**
 * The store as Postern's modules see it: repositories whose verbs return promises, and one
 * transaction helper. No module outside store/ sees a database handle or writes SQL; a second
 * engine implements this same interface (and passes test/store/contract.test.ts).
 */
export interface Store {
  users: Async<UserRepo>;
  devices: Async<DeviceRepo>;
  bindings: Async<BindingRepo>;
  incidents: Async<IncidentRepo>;
  audit: Async<AuditRepo>;
  limits: Async<LimitRepo>;
  queue: Async<QueueRepo>;
  quarantine: Async<QuarantineRepo>;
  delivery: Async<DeliveryRepo>;
  stats: Async<StatsRepo>;
  /** The guessing brake's counters, shared by every process on the database. */
  authAttempts: Async<AuthAttemptRepo>;
  /** Named leases: one drain at a time, one notice per burst, across processes. */
  leases: Async<LeaseRepo>;
  /** DKIM signing keys: every node signs with the same ones. */
  dkim: Async<DkimRepo>;
  /** Users' app passwords (their bindings are in `bindings`, owner 'app-password'). */
  appPasswords: Async<AppPasswordRepo>;
  /** Fingerprints of compromised directory passwords, and the store-wide key they are made with. */
  credentials: Async<CredentialRepo>;
  /** The counts behind the daily TLS reports (RFC 8460), shared by every node (SQLite: on the second connection, not inside tx). */
  tlsReports: Async<TlsReportRepo>;
  /** MTA-STS policies of recipient domains, fetched once for every node. */
  mtaSts: Async<MtaStsRepo>;
  /** TLS session ticket keys, one per rotation period: every worker and node resumes the others' sessions. */
  tlsTickets: Async<TlsTicketKeyRepo>;
  /**
   * Brings this process's view of policy rows (users, devices, bindings, limit overrides) up
   * to date with changes other processes committed before the call. SQLite checks on every
   * lookup, so this does nothing there; on PostgreSQL a change is otherwise seen when its
   * NOTIFY arrives (milliseconds) or at the next check of the generation counter (within a
   * second). For callers that must not act on a change before it is seen: tests, a command
   * run right after another process's change.
   */
  syncPolicy(): Promise<void>;
  /** The domains of every exact sender and domain binding (the doctor's default). */
  senderDomains(now: number): Promise<string[]>;
  /**
   * Runs `fn` as one transaction: everything it does through `t` commits together, or nothing
   * does if it throws. Other callers never see its writes before it commits (SQLite makes them
   * wait; PostgreSQL runs them beside it). Keep it short: no network I/O inside. On SQLite,
   * attempt outcomes, the quota ledger, login counters and leases live on a second connection
   * and are refused inside a transaction; on PostgreSQL they are part of it.
   */
  tx<T>(fn: (t: Store) => Promise<T>): Promise<T>;
  /** False once closed. */
  readonly open: boolean;
  close(): void;
}

/**
 * The store the config names: SQLite in server.data_dir, or the PostgreSQL database of
 * store.url (its driver loaded only then). The schema is brought up to date first.
 */
export async function openConfiguredStore(cfg: { server: { data_dir: string }; store: { url: string } }): Promise<Store> {
  if (!cfg.store.url) return openStore(cfg.server.data_dir);
  const { openPostgresStore } = await import('./postgres/index.js');
  return openPostgresStore(cfg.store.url);
}

/** `postern db migrate`: applies what is pending; says what it applied and the version now. */
export async function migrateConfiguredStore(cfg: { server: { data_dir: string }; store: { url: string } }): Promise<{ applied: number[]; version: number }> {
  if (cfg.store.url) {
    const { migratePostgresUrl } = await import('./postgres/index.js');
    return migratePostgresUrl(cfg.store.url);
  }
  const db = openDb(cfg.server.data_dir);
  try {
    const applied = migrate(db);
    return { applied, version: schemaVersion(db) };
  } finally {
    db.close();
  }
}

/** Opens the database in dataDir, brings the schema up to date, and hands out repositories. */
export function openStore(
  dataDir: string,
  opts: {
    migrate?: boolean;
    /** How long a verb waits for another process's lock (default 5 s). */
    lockBudgetMs?: number;
    /** The fsync of the write-ahead log (wal-sync.ts): fs.fsync; tests pass one that fails. */
    walFsync?: (fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => void;
  } = {},
): Store {
  const db = openDb(dataDir);
  let walFile: string;
  try {
    if (opts.migrate !== false) migrate(db);
    // The log SQLite writes: next to the database file, symlinks resolved as SQLite does.
    walFile = `${realpathSync(path.join(dataDir, 'postern.db'))}-wal`;
  } catch (e) {
    db.close();
    throw e;
  }
  // Delivery bookkeeping (attempt outcomes) and the quota ledger commit on their own connection with
  // synchronous=NORMAL: in WAL mode that survives a killed process, and only a power cut can
  // lose the last outcomes, which means sending those messages again, never losing them
  // (RFC 5321 6.1 prefers duplicates). An fsync per outcome would cap delivery at the disk's
  // fsync rate and block the event loop that submission shares. For the ledger a power cut
  // can forget the last reservations: that errs towards sending, never towards losing mail.
  const bookkeeping = openDb(dataDir, { synchronous: 'NORMAL' });
  // From here on a lock held by another process is waited for by the gate, asynchronously:
  // SQLite's own busy wait would hold the event loop, and every client with it.
  for (const d of [db, bookkeeping]) d.pragma('busy_timeout = 0');
  // The main connection's commits only write the log from here on (the migrations above ran
  // with synchronous=FULL); each verb that wrote, and each transaction, resolves once an fsync
  // of the log run off the event loop covers it (wal-sync.ts). Should WAL be unavailable
  // (journal_mode stayed another), COMMIT keeps its own fsync.
  // After a failed fsync the connection refuses writes (query_only): a write then writes nothing.
  let wal: WalSync | null = null;
  try {
    if (String(db.pragma('journal_mode', { simple: true })).toLowerCase() === 'wal') {
      wal = new WalSync(walFile, opts.walFsync, () => {
        if (db.open) db.pragma('query_only = ON');
      });
      db.pragma('synchronous = NORMAL');
    }
  } catch (e) {
    bookkeeping.close();
    db.close();
    throw e;
  }
  const writes = writesOn(db);
  const w = wal;
  const gate = new Gate(opts.lockBudgetMs, w ? { writes: () => writes.n, sync: () => w.request(), failed: () => w.failed } : undefined);
  const cache = new PolicyCache(db);
  const audit = new AuditRepo(db);
  const g = <T extends object>(repo: T) => gated(repo, gate);
  const store: Store = {
    users: g(new UserRepo(db, cache)),
    devices: g(new DeviceRepo(db, cache)),
    bindings: g(new BindingRepo(db, cache)),
    incidents: g(new IncidentRepo(db)),
    audit: g(audit),
    limits: g(new LimitRepo(db, bookkeeping, cache)),
    queue: g(new QueueRepo(db)),
    quarantine: g(new QuarantineRepo(db, audit)),
    delivery: g(new DeliveryRepo(db, bookkeeping, audit)),
    stats: g(new StatsRepo(db)),
    authAttempts: g(new AuthAttemptRepo(bookkeeping)),
    leases: g(new LeaseRepo(bookkeeping)),
    dkim: g(new DkimRepo(db)),
    appPasswords: g(new AppPasswordRepo(db, cache)),
    credentials: g(new CredentialRepo(db)),
    tlsReports: g(new TlsReportRepo(bookkeeping)),
    mtaSts: g(new MtaStsRepo(db)),
    tlsTickets: g(new TlsTicketKeyRepo(db)),
    senderDomains: (now) => gate.run(() => senderDomains(db, now)),
    syncPolicy: async () => undefined,
    tx: (fn) =>
      gate.exclusive(
        () => db.exec('BEGIN IMMEDIATE'),
        () => fn(store),
        () => db.exec('COMMIT'),
        () => {
          if (db.inTransaction) db.exec('ROLLBACK');
          cache.clear();
        },
      ),
    get open() {
      return db.open;
    },
    close: () => {
      // First the log's last fsync (whatever was written is then on disk), then the connections.
      wal?.close();
      if (bookkeeping.open) bookkeeping.close();
      if (db.open) db.close();
    },
  };
  handles.set(store, db);
  if (wal) syncs.set(store, wal);
  return store;
}

const syncs = new WeakMap<Store, WalSync>();

/** How many fsyncs of the log a SQLite store has completed (tests: a write waits for one). */
export function sqliteSyncCount(store: Store): number {
  const w = syncs.get(store);
  if (!w) throw new Error('not a SQLite store in WAL mode');
  return w.count;
}

const handles = new WeakMap<Store, Db>();

/**
 * The SQLite connection under a store opened here: for tests that set up or inspect rows no
 * verb exposes. Nothing in src/ outside store/ may use it (the store is its only writer).
 */
export function sqliteHandle(store: Store): Db {
  const db = handles.get(store);
  if (!db) throw new Error('not a SQLite store');
  return db;
}
