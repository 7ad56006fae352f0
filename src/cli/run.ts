import { ConfigError } from '../config/load.js';
import { SchemaError } from '../store/migrate.js';
import { auditCommand, AUDIT_HELP } from './audit.js';
import { dbCommand, DB_HELP } from './db.js';
import { deviceCommand, DEVICE_HELP } from './device.js';
import { incidentsCommand, INCIDENTS_HELP } from './incidents.js';
import { limitsShow, LIMITS_HELP } from './limits.js';
import { dkimCommand, DKIM_HELP } from './dkim.js';
import { doctorCommand, DOCTOR_HELP } from './doctor.js';
import { CliError, makeCtx, UsageError, type Io } from './io.js';
import { quarantineCommand, QUARANTINE_HELP } from './quarantine.js';
import { queueCommand, QUEUE_HELP } from './queue.js';
import { serveCommand, SERVE_HELP } from './serve.js';
import { statsCommand, STATS_HELP } from './stats.js';
import { userCommand, USER_HELP } from './user.js';

export const HELP = `Usage: postern [--config FILE] COMMAND ...

Commands:
  serve                 run the relay (listeners, spool)
  user ...              users: add, allow, deny, reset, suspend, unsuspend, show, list
  device ...            devices that send without AUTH from fixed addresses
  incidents             compromise signals and other incidents
  limits show NAME      usage against rate limits (set them: postern user limits)
  stats                 per-user sent, held, remote rejections, incidents (--since 24h)
  audit                 who changed what, when and why
  queue list            show the spool (retry, delete: see queue --help)
  quarantine ...        held mail: list, show, release, delete
  dkim keygen DOMAIN    create a DKIM signing key and print its DNS record
  doctor                check PTR, HELO, SPF, DMARC, DKIM, MX and TLS; print the records to publish
  db migrate            apply schema migrations

The config file is --config FILE, else $POSTERN_CONFIG, else /etc/postern/postern.toml.
Every listing takes --json. Run "postern COMMAND --help" for a command's options.

Example:
  postern --config /etc/postern/postern.toml user add alice --sender alice@example.com --network 192.0.2.0/24
`;

const HELPS: Record<string, string> = { user: USER_HELP, device: DEVICE_HELP, incidents: INCIDENTS_HELP, limits: LIMITS_HELP, audit: AUDIT_HELP, queue: QUEUE_HELP, quarantine: QUARANTINE_HELP, dkim: DKIM_HELP, doctor: DOCTOR_HELP, db: DB_HELP, serve: SERVE_HELP, stats: STATS_HELP };

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
  let command: string | undefined;
  try {
    const { config, rest } = extractConfig(argv);
    const [cmd, ...args] = rest;
    command = cmd;
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
      case 'device':
        return deviceCommand(ctx, args);
      case 'incidents':
        return incidentsCommand(ctx, args);
      case 'limits':
        return limitsShow(ctx, args);
      case 'audit':
        return auditCommand(ctx, args);
      case 'stats':
        return statsCommand(ctx, args);
      case 'quarantine':
        return await quarantineCommand(ctx, args);
      case 'queue':
        return await queueCommand(ctx, args);
      case 'dkim':
        return dkimCommand(ctx, args);
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
    // Say what to do next: node's parseArgs messages name the flag but not where the options are.
    if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS_')) {
      io.stderr(`postern: ${(e as Error).message}\n(see: postern ${command ?? ''} --help)\n`.replace('postern  --help', 'postern --help'));
      return 2;
    }
    if (e instanceof ConfigError && /^cannot read config /.test(e.message)) {
      io.stderr(`postern: ${e.message}\n(give the file with --config FILE or $POSTERN_CONFIG; start from config/postern.example.toml)\n`);
      return 1;
    }
    if (e instanceof ConfigError || e instanceof SchemaError) {
      io.stderr(`postern: ${(e as Error).message}\n`);
      return 1;
    }
    io.stderr(`postern: ${(e as Error).message}\n`);
    return 1;
  } finally {
    ctx?.close();
  }
}
