import { ConfigError } from '../config/load.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot, SchemaError } from '../store/migrate.js';
import { CliError, makeCtx, UsageError, type Ctx, type Io } from './io.js';

interface Command {
  help: string;
  /** Help of subcommands that have their own (user password --help). */
  subHelp?: Record<string, string>;
  run: (ctx: Ctx, args: string[]) => number | Promise<number>;
}

/**
 * Each command's module is loaded only when that command runs: `serve` must not carry the
 * doctor's SPF evaluator or the quarantine viewer's MIME parser (60 MB of resident memory
 * between them), and a quick `user show` starts faster without the relay.
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  serve: async () => {
    const m = await import('./serve.js');
    return {
      help: m.SERVE_HELP,
      run: (ctx, args) => {
        // serve takes no arguments: one it ignored would look like an option that worked.
        if (args.length) throw new UsageError(`postern serve takes no arguments, got ${JSON.stringify(args[0])}\n\n${m.SERVE_HELP}`);
        return m.serveCommand(ctx);
      },
    };
  },
  user: async () => {
    const [m, a, i] = await Promise.all([import('./user.js'), import('./app-passwords.js'), import('./import.js')]);
    return { help: m.USER_HELP, subHelp: { password: a.APP_PASSWORD_HELP, import: i.IMPORT_HELP }, run: m.userCommand };
  },
  device: async () => { const m = await import('./device.js'); return { help: m.DEVICE_HELP, run: m.deviceCommand }; },
  incidents: async () => { const m = await import('./incidents.js'); return { help: m.INCIDENTS_HELP, run: m.incidentsCommand }; },
  limits: async () => { const m = await import('./limits.js'); return { help: m.LIMITS_HELP, run: m.limitsShow }; },
  audit: async () => { const m = await import('./audit.js'); return { help: m.AUDIT_HELP, run: m.auditCommand }; },
  stats: async () => { const m = await import('./stats.js'); return { help: m.STATS_HELP, run: m.statsCommand }; },
  quarantine: async () => { const m = await import('./quarantine.js'); return { help: m.QUARANTINE_HELP, run: m.quarantineCommand }; },
  queue: async () => { const m = await import('./queue.js'); return { help: m.QUEUE_HELP, run: m.queueCommand }; },
  dkim: async () => { const m = await import('./dkim.js'); return { help: m.DKIM_HELP, run: m.dkimCommand }; },
  doctor: async () => { const m = await import('./doctor.js'); return { help: m.DOCTOR_HELP, run: m.doctorCommand }; },
  db: async () => { const m = await import('./db.js'); return { help: m.DB_HELP, run: m.dbCommand }; },
  config: async () => { const m = await import('./config.js'); return { help: m.CONFIG_HELP, run: m.configCommand }; },
};

/** "postern 0.1.0 (Node.js v20.20.2)": the package's version, from the package.json beside migrations/. */
function versionLine(): string {
  const pkg = JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return `postern ${pkg.version} (Node.js ${process.version})`;
}

export const HELP = `Usage: postern [--config FILE] COMMAND ...
       postern --version

Commands:
  serve                 run the relay (listeners, spool)
  config check|show     check the config as serve would (every problem listed); print the effective config
  user ...              users: add, allow, deny, reset, suspend, unsuspend, show, list
  device ...            devices that send without AUTH from fixed addresses
  incidents             compromise signals and other incidents
  limits show NAME      usage against rate limits (set them: postern user limits)
  stats                 per-user sent, held, remote rejections, incidents (--since 24h)
  audit                 who changed what, when and why
  queue ...             the spool: list, show, retry, hold, delete
  quarantine ...        held mail: list, show, release, delete
  dkim ...              DKIM keys: keygen (inactive, prints its record), activate (once published), list
  doctor                check PTR, HELO, SPF, DMARC, DKIM, MX and TLS; print the records to publish
  db migrate|backup     apply schema migrations; copy the SQLite database while it runs

The config file is --config FILE, else $POSTERN_CONFIG, else /etc/postern/postern.toml.
Every listing takes --json. Run "postern COMMAND --help" for a command's options.

Example:
  postern --config /etc/postern/postern.toml user add alice --sender alice@example.com --network 192.0.2.0/24
`;

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
    if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
      io.stdout(`${versionLine()}\n`);
      return 0;
    }
    const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!load) throw new UsageError(`unknown command: ${cmd}\n\n${HELP}`);
    const picked = await load();
    if (args.includes('--help') || args.includes('-h')) {
      io.stdout((args[0] !== undefined && picked.subHelp?.[args[0]]) || picked.help);
      return 0;
    }
    ctx = makeCtx(io, config, rest);
    return await picked.run(ctx, args);
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
