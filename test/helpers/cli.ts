import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../../src/cli/run.js';

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** Runs the postern CLI in-process against a config file, as an admin would from a shell. */
export async function cli(configFile: string, argv: string[], stdin = ''): Promise<CliResult> {
  let out = '';
  let err = '';
  const code = await runCli(['--config', configFile, ...argv], {
    stdout: (s) => (out += s),
    stderr: (s) => (err += s),
    stdin: async () => stdin,
    env: {},
  });
  return { code, out, err };
}

/** A minimal config file for CLI and child-process tests (cheap argon2, loopback ports). */
export function writeConfig(dir: string, extra = ''): string {
  const file = path.join(dir, 'postern.toml');
  writeFileSync(
    file,
    `[server]
hostname = "smtp.test.example"
data_dir = "data"
shutdown_grace_seconds = 2
[submission]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
[auth]
argon2_memory_kib = 1024
argon2_time_cost = 1
[limits]
auth_failure_delay_ms = 0
[identity]
helo = "mta-out.test.example"
ptr = "mail.test.example"
[metrics]
listen = "127.0.0.1:0"
${/^\[delivery\]/m.test(extra) ? '' : '[delivery]\nenabled = false # opt-in: no DNS or SMTP beyond loopback in tests\n'}${extra}`,
  );
  return file;
}
