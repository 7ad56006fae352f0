import { openDb, type Db } from './db.js';
import { migrate } from './migrate.js';
import { QueueRepo } from './queue.js';
import { UserRepo } from './users.js';

export interface Store {
  db: Db;
  users: UserRepo;
  queue: QueueRepo;
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
  return {
    db,
    users: new UserRepo(db),
    queue: new QueueRepo(db),
    close: () => {
      if (db.open) db.close();
    },
  };
}
