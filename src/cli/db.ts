import { migrateConfiguredStore } from '../store/index.js';
import { UsageError, type Ctx } from './io.js';

export const DB_HELP = `Usage: postern db migrate

  migrate    apply pending schema migrations (serve also applies them at start), to the
             SQLite database in server.data_dir or the PostgreSQL database of store.url

Example:
  postern --config /etc/postern/postern.toml db migrate
`;

export async function dbCommand(ctx: Ctx, argv: string[]): Promise<number> {
  if (argv[0] !== 'migrate') throw new UsageError(argv[0] ? `unknown command: db ${argv[0]}\n\n${DB_HELP}` : DB_HELP);
  const { applied, version: v } = await migrateConfiguredStore(ctx.config());
  ctx.io.stdout(applied.length ? `applied migration${applied.length > 1 ? 's' : ''} ${applied.join(', ')}; schema is at version ${v}\n` : `schema is up to date (version ${v})\n`);
  return 0;
}
