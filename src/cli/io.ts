import { userInfo } from 'node:os';
import type { Config } from '../config/schema.js';
import { loadConfig } from '../config/load.js';
import { openConfiguredStore, type Store } from '../store/index.js';
import { rootWarning } from './owner.js';

export interface Io {
  stdout: (s: string) => void;
  /** Bytes exactly as given (quarantine show --raw); absent = stdout of the UTF-8 decoding. */
  stdoutBytes?: (b: Buffer) => void;
  stderr: (s: string) => void;
  /** All of standard input, read on demand (passwords, ids). */
  stdin: () => Promise<string>;
  env: NodeJS.ProcessEnv;
  /** stdout is a terminal that takes colour (not piped, NO_COLOR unset); absent means no. */
  colour?: boolean;
}

/** A refusal with a one-line reason; exit status 1 (2 for usage). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
  }
}

export interface Ctx {
  io: Io;
  configPath: string | undefined;
  config(): Config;
  /** Opens the store the config names (bringing the schema up to date) once per command. */
  store(): Promise<Store>;
}

/**
 * `argv` is the command as typed after any --config, for the warning that names the command
 * to run instead (see rootWarning).
 */
export function makeCtx(io: Io, configPath: string | undefined, argv: string[] = []): Ctx & { close(): void } {
  let cfg: Config | undefined;
  let st: Promise<Store> | undefined;
  return {
    io,
    configPath,
    config: () => (cfg ??= loadConfig(configPath ?? io.env.POSTERN_CONFIG)),
    store() {
      if (!st) {
        const command = `postern ${configPath ? `--config ${configPath} ` : ''}${argv.join(' ')}`;
        const warning = rootWarning(this.config(), process.getuid?.() ?? -1, command);
        if (warning) io.stderr(`postern: warning: ${warning}\n`);
        st = openConfiguredStore(this.config());
      }
      return st;
    },
    close: () => {
      // A store that failed to open has nothing to close.
      void st?.then((s) => s.close(), () => undefined);
    },
  };
}

export function printJson(io: Io, value: unknown): void {
  io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

/** Fixed-width columns for human listings. */
export function table(rows: string[][]): string {
  if (!rows.length) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

export const iso = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));

/** Who is making a change, for the audit log: --by NAME, else the OS user running the CLI. */
export function actor(by: string | undefined, env: NodeJS.ProcessEnv): string {
  if (by) return by;
  try {
    return userInfo().username;
  } catch {
    return env.USER ?? 'unknown';
  }
}

/** "7d", "12h", "30m", "2w" -> milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+)\s*([mhdw])$/.exec(s.trim());
  if (!m) throw new UsageError(`bad duration ${JSON.stringify(s)}: use a number and m, h, d or w, e.g. 7d`);
  const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'm' | 'h' | 'd' | 'w'];
  return Number(m[1]) * unit;
}

/** Repeated flags and comma-separated values alike: --sender a --sender b,c -> [a, b, c]. */
export function many(v: string[] | undefined): string[] {
  return (v ?? []).flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);
}
