import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema.js';

const DB_FILES = ['postern.db', 'postern.db-wal', 'postern.db-shm'];

/**
 * Root on the SQLite store of a data_dir that belongs to another user (the service's): SQLite
 * creates postern.db the first time, and postern.db-wal and -shm whenever no relay has the
 * database open, as root and mode 0600 (it deletes the last two when the command ends). A
 * relay that starts meanwhile, or finds them left by a killed command, or finds postern.db
 * itself root's, cannot open the database: the keys in it included. On PostgreSQL the CLI
 * writes nothing in data_dir.
 */
export function rootWarning(cfg: Pick<Config, 'server' | 'store'>, uid: number, command: string): string | null {
  if (uid !== 0 || cfg.store.url) return null;
  const dir = cfg.server.data_dir;
  let owner: number;
  try {
    owner = statSync(dir).uid;
  } catch {
    return null;
  }
  if (owner === 0) return null;
  const name = userName(owner);
  const files = DB_FILES.map((f) => path.join(dir, f));
  const foreign = files.filter((f) => existsSync(f) && statSync(f).uid !== owner);
  if (foreign.length) {
    return `running as root; data_dir ${dir} belongs to ${name}, but ${foreign.join(', ')} ${foreign.length > 1 ? 'do' : 'does'} not: the relay, running as ${name}, cannot open the database. Give ${foreign.length > 1 ? 'them' : 'it'} back (chown ${name} ${foreign.join(' ')}) and run postern as ${name}: sudo -u ${name} ${command}`;
  }
  const made = files.filter((f) => !existsSync(f)).map((f) => path.basename(f));
  if (!made.length) return null;
  return `running as root; data_dir ${dir} belongs to ${name}: this command creates ${made.join(', ')} there as root, which the relay, running as ${name}, cannot open${made.includes('postern.db') ? '' : ' while they exist (they are removed when the command ends, left behind if it is killed)'}. Run it as ${name} instead: sudo -u ${name} ${command}`;
}

/** The login name of a uid, from /etc/passwd; "#UID" (as sudo -u takes it) when there is none. */
function userName(uid: number): string {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(uid));
    if (line) return line.split(':')[0]!;
  } catch {
    // no passwd file: the number will do
  }
  return `#${uid}`;
}
