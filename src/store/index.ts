import { AuditRepo } from './audit.js';
import { BindingRepo } from './bindings.js';
import { openDb, type Db } from './db.js';
import { DeviceRepo } from './devices.js';
import { IncidentRepo } from './incidents.js';
import { LimitRepo } from './limits.js';
import { DeliveryRepo } from './delivery.js';
import { migrate } from './migrate.js';
import { PolicyCache } from './policy-cache.js';
import { QueueRepo } from './queue.js';
import { QuarantineRepo } from './quarantine.js';
import { UserRepo } from './users.js';
import { AuthAttemptRepo, LeaseRepo } from './shared.js';

export interface Store {
  db: Db;
  users: UserRepo;
  devices: DeviceRepo;
  bindings: BindingRepo;
  incidents: IncidentRepo;
  audit: AuditRepo;
  limits: LimitRepo;
  queue: QueueRepo;
  quarantine: QuarantineRepo;
  delivery: DeliveryRepo;
  /** The guessing brake's counters, shared by every process on the database. */
  authAttempts: AuthAttemptRepo;
  /** Named leases: one drain at a time, one notice per burst, across processes. */
  leases: LeaseRepo;
  close(): void;
}

/** Opens the database in dataDir, brings the schema up to date, and hands out repositories. */
export function openStore(dataDir: string, opts: { migrate?: boolean } = {}): Store {
  const db = openDb(dataDir);
  try {
    if (opts.migrate !== false) migrate(db);
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
  const cache = new PolicyCache(db);
  const audit = new AuditRepo(db);
  return {
    db,
    users: new UserRepo(db, cache),
    devices: new DeviceRepo(db, cache),
    bindings: new BindingRepo(db, cache),
    incidents: new IncidentRepo(db),
    audit,
    limits: new LimitRepo(db, bookkeeping, cache),
    queue: new QueueRepo(db),
    quarantine: new QuarantineRepo(db, audit),
    delivery: new DeliveryRepo(db, bookkeeping, audit),
    authAttempts: new AuthAttemptRepo(bookkeeping),
    leases: new LeaseRepo(bookkeeping),
    close: () => {
      if (bookkeeping.open) bookkeeping.close();
      if (db.open) db.close();
    },
  };
}
