import { openDb } from '../store/db.js';
import { migrate, schemaVersion } from '../store/migrate.js';
import { UsageError, type Ctx } from './io.js';

export const DB_HELP = `Usage: postern db migrate

  migrate    apply pending schema migrations (serve also applies them at start)

Example:
  postern --config /etc/postern/postern.toml db migrate
`;

export function dbCommand(ctx: Ctx, argv: string[]): number {
  if (argv[0] !== 'migrate') throw new UsageError(argv[0] ? `unknown command: db ${argv[0]}\n\n${DB_HELP}` : DB_HELP);
  const db = openDb(ctx.config().server.data_dir);
  try {
    const applied = migrate(db);
    const v = schemaVersion(db);
    ctx.io.stdout(applied.length ? `applied migration${applied.length > 1 ? 's' : ''} ${applied.join(', ')}; schema is at version ${v}\n` : `schema is up to date (version ${v})\n`);
  } finally {
    db.close();
  }
  return 0;
}
