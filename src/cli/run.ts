import { ConfigError } from '../config/load.js';
import { SchemaError } from '../store/migrate.js';
import { dbCommand, DB_HELP } from './db.js';
import { doctorCommand, DOCTOR_HELP } from './doctor.js';
import { CliError, makeCtx, UsageError, type Io } from './io.js';
import { queueCommand, QUEUE_HELP } from './queue.js';
import { serveCommand } from './serve.js';
import { userCommand, USER_HELP } from './user.js';

export const HELP = `Usage: postern [--config FILE] COMMAND ...

Commands:
  serve                 run the relay (listeners, spool)
  user ...              add, list, show, passwd, delete users
  queue list            show the spool
  doctor                check PTR, HELO, SPF, DMARC, DKIM, MX and TLS; print the records to publish
  db migrate            apply schema migrations

The config file is --config FILE, else $POSTERN_CONFIG, else /etc/postern/postern.toml.
Every listing takes --json. Run "postern COMMAND --help" for a command's options.

Example:
  postern --config /etc/postern/postern.toml user add alice
`;

const HELPS: Record<string, string> = { user: USER_HELP, queue: QUEUE_HELP, doctor: DOCTOR_HELP, db: DB_HELP, serve: 'Usage: postern serve\n\nExample:\n  postern --config /etc/postern/postern.toml serve\n' };

/** Pulls --config FILE (anywhere in argv) out, so every command accepts it. */
function extractConfig(argv: string[]): { config: string | undefined; rest: string[] } {
  const rest: string[] = [];
  let config: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config') {
      config = argv[++i];
      if (config === undefined) throw new UsageError('--config needs a file name');
    } else if (a.startsWith('--config=')) config = a.slice('--config='.length);
    else rest.push(a);
  }
  return { config, rest };
}

export async function runCli(argv: string[], io: Io): Promise<number> {
  let ctx: ReturnType<typeof makeCtx> | undefined;
  try {
    const { config, rest } = extractConfig(argv);
    const [cmd, ...args] = rest;
    if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
      io.stdout(HELP);
      return cmd ? 0 : 2;
    }
    if (args.includes('--help') || args.includes('-h')) {
      const h = HELPS[cmd];
      if (!h) throw new UsageError(`unknown command: ${cmd}\n\n${HELP}`);
      io.stdout(h);
      return 0;
    }
    ctx = makeCtx(io, config);
    switch (cmd) {
      case 'serve':
        return await serveCommand(ctx);
      case 'user':
        return await userCommand(ctx, args);
      case 'queue':
        return queueCommand(ctx, args);
      case 'doctor':
        return await doctorCommand(ctx, args);
      case 'db':
        return dbCommand(ctx, args);
      default:
        throw new UsageError(`unknown command: ${cmd}\n\n${HELP}`);
    }
  } catch (e) {
    if (e instanceof CliError) {
      io.stderr(`postern: ${e.message}\n`);
      return e.exitCode;
    }
    if (e instanceof ConfigError || e instanceof SchemaError || (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      io.stderr(`postern: ${(e as Error).message}\n`);
      return (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? 2 : 1;
    }
    io.stderr(`postern: ${(e as Error).message}\n`);
    return 1;
  } finally {
    ctx?.close();
  }
}
