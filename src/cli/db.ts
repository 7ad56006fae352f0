import path from 'node:path';
import { parseArgs } from 'node:util';
import { backupSqlite, BackupRefused, type BackupRefusal } from '../store/backup.js';
import { migrateConfiguredStore } from '../store/index.js';
import { CliError, printJson, UsageError, type Ctx } from './io.js';

export const DB_HELP = `Usage: postern db migrate
       postern db backup FILE [--force] [--json]

  migrate    apply pending schema migrations (serve also applies them at start), to the
             SQLite database in server.data_dir or the PostgreSQL database of store.url
  backup     copy the SQLite database, with what sits in its write-ahead log, to FILE while
             the relay runs and accepts mail (SQLite's backup API: one consistent moment;
             a plain cp of postern.db misses the WAL). FILE is written owner-only (0600),
             checked with integrity_check, and appears whole or not at all; an existing
             FILE is replaced only with --force. On PostgreSQL (store.url) use pg_dump.
             To restore: stop the relay, copy FILE to server.data_dir/postern.db, remove
             postern.db-wal and postern.db-shm there, start it (README "Backup and restore").

Examples:
  postern --config /etc/postern/postern.toml db migrate
  postern db backup /var/backups/postern/postern-$(date +%F).db
`;

export async function dbCommand(ctx: Ctx, argv: string[]): Promise<number> {
  if (argv[0] === 'backup') return backup(ctx, argv.slice(1));
  if (argv[0] !== 'migrate') throw new UsageError(argv[0] ? `unknown command: db ${argv[0]}\n\n${DB_HELP}` : DB_HELP);
  // migrate takes nothing: an option it ignored would look like one that worked.
  parseArgs({ args: argv.slice(1), options: {} });
  const { applied, version: v } = await migrateConfiguredStore(ctx.config());
  ctx.io.stdout(applied.length ? `applied migration${applied.length > 1 ? 's' : ''} ${applied.join(', ')}; schema is at version ${v}\n` : `schema is up to date (version ${v})\n`);
  return 0;
}

async function backup(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { force: { type: 'boolean' }, json: { type: 'boolean' } } });
  if (positionals.length !== 1 || !positionals[0]) {
    throw new UsageError(`${positionals.length ? `postern db backup takes one FILE, got ${positionals.length}` : 'postern db backup needs the FILE to write'}\n\n${DB_HELP}`);
  }
  const given = positionals[0];
  const cfg = ctx.config();
  // Nothing is opened on PostgreSQL: its own tool copies it consistently, and a partial
  // imitation here would be a backup nobody has restored.
  if (cfg.store.url) throw new CliError(pgDumpAdvice(cfg.store.url, given));
  const file = path.resolve(given);
  try {
    const r = await backupSqlite(cfg.server.data_dir, file, { overwrite: Boolean(values.force) });
    if (values.json) printJson(ctx.io, { file: r.file, bytes: r.bytes, schema_version: r.schemaVersion, integrity: 'ok' });
    else ctx.io.stdout(`wrote ${r.file}: ${r.bytes} bytes, schema version ${r.schemaVersion}, integrity_check ok\n`);
    return 0;
  } catch (e) {
    if (e instanceof BackupRefused) throw new CliError(refusal(e.refusal, given, cfg.server.data_dir));
    throw e;
  }
}

function refusal(r: BackupRefusal, file: string, dataDir: string): string {
  switch (r.kind) {
    case 'exists':
      return `${file} exists: give --force to replace it, or name a new FILE`;
    case 'live':
      return `${file} is the live database ${r.live} (or one of its -wal, -shm files): name a FILE outside server.data_dir for the copy`;
    case 'directory':
      return `${file} is a directory: name the FILE to write, e.g. ${path.join(file, 'postern.db')}`;
    case 'no-parent':
      return `cannot write ${file}: the directory ${r.dir} does not exist (create it first)`;
    case 'no-source':
      return `no database at ${r.live}: nothing to back up (check server.data_dir = "${dataDir}" in the config)`;
    case 'unwritable':
      return `cannot write ${file}: ${r.code === 'EROFS' ? 'read-only file system' : 'permission denied'} in ${r.dir} (pick another directory, or run as a user who may write there)`;
    case 'cannot-open':
      return `cannot open the live database ${r.live}: ${r.reason} (run as the service user: sudo -u postern postern db backup ${file})`;
    case 'damaged':
      return (
        `the copy fails integrity_check (${r.problem}), so the live database does too; ${file} was not written. ` +
        'Stop the relay and copy postern.db with its -wal and -shm aside before anything else (README "Backup and restore")'
      );
  }
}

/** The pg_dump command for this store.url, without its password (pg_dump reads PGPASSWORD or ~/.pgpass). */
function pgDumpAdvice(url: string, file: string): string {
  let shown = url;
  try {
    const u = new URL(url);
    u.password = '';
    if (u.searchParams.has('password')) u.searchParams.delete('password');
    shown = u.toString();
  } catch {
    shown = 'postgres://USER@HOST:PORT/DATABASE';
  }
  return (
    'db backup copies the SQLite database, and this config names PostgreSQL (store.url): back it up with pg_dump ' +
    '(password from PGPASSWORD or ~/.pgpass; restore with pg_restore, see README "Backup and restore"):\n' +
    `  pg_dump --format=custom --file=${shellQuote(file)} ${shellQuote(shown)}`
  );
}

const shellQuote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
