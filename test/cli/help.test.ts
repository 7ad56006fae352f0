import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { HELP, runCli } from '../../src/cli/run.js';
import { cli, writeConfig } from '../helpers/cli.js';
import { tempDir } from '../helpers/relay.js';

async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  const code = await runCli(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s), stdin: async () => '', env });
  return { code, out, err };
}

/** The command names listed under "Commands:" in the top-level help. */
const COMMANDS = [...HELP.split('Commands:\n')[1]!.split('\n\n')[0]!.matchAll(/^ {2}([a-z]+)/gm)].map((m) => m[1]!);

describe('help that teaches', () => {
  it('lists every command, stats included, and ends the top-level help with an example', async () => {
    expect(COMMANDS).toEqual(expect.arrayContaining(['serve', 'user', 'device', 'incidents', 'limits', 'audit', 'stats', 'queue', 'quarantine', 'dkim', 'doctor', 'db']));
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\nExamples?:\n {2}postern /);
  });

  it.each(COMMANDS)('shows an example in "postern %s --help"', async (cmd) => {
    const r = await run([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Usage: postern /);
    expect(r.out).toMatch(new RegExp(`\\nExamples?:\\n {2}(postern|systemctl) .*${cmd}`));
  });

  it('prints the version with --version, -V or version', async () => {
    const { version } = JSON.parse(readFileSync(path.join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V', 'version']) expect(await run([flag])).toEqual({ code: 0, out: `postern ${version} (Node.js ${process.version})\n`, err: '' });
  });

  it('refuses an argument serve does not take instead of starting the relay without it', async () => {
    const r = await run(['--config', '/nonexistent.toml', 'serve', '--check']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^postern: postern serve takes no arguments, got "--check"\n\nUsage: postern serve\n/);
  });

  it('points to the command help when an option is unknown', async () => {
    const r = await run(['--config', '/nonexistent.toml', 'stats', '--usr', 'alice']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^postern: Unknown option '--usr'.*\n\(see: postern stats --help\)\n$/s);
  });

  /** Every command and subcommand, with the arguments it needs to get as far as its options. */
  const FORMS = [
    ['serve'], ['config', 'check'], ['config', 'show'], ['db', 'migrate'], ['db', 'backup', '/tmp/x.db'],
    ...['list', 'show alice', 'add alice', 'allow alice', 'deny alice', 'notify alice a@example.com', 'passwd alice', 'reset alice', 'limits alice', 'suspend alice', 'unsuspend alice', 'delete alice', 'import users.csv'].map((f) => ['user', ...f.split(' ')]),
    ...['list', 'show d1', 'add d1', 'suspend d1', 'unsuspend d1', 'delete d1'].map((f) => ['device', ...f.split(' ')]),
    ['incidents'], ['incidents', 'resolve', '1'], ['limits', 'show', 'alice'], ['audit'], ['stats'],
    ...['list', 'show X', 'retry X', 'hold X', 'delete X'].map((f) => ['queue', ...f.split(' ')]),
    ...['list', 'show X', 'release X', 'delete X'].map((f) => ['quarantine', ...f.split(' ')]),
    ['dkim', 'keygen', 'example.com'], ['dkim', 'list'], ['dkim', 'activate', 'example.com', 's1'], ['doctor'],
  ];

  it.each(FORMS.map((f) => [f.join(' '), f]))('refuses an unknown option to "postern %s" with exit status 2 and changes nothing', async (_, form) => {
    const dir = tempDir();
    try {
      const file = writeConfig(dir);
      const r = await cli(file, [...(form as string[]), '--bogus-flag']);
      expect(r).toMatchObject({ code: 2, out: '' });
      expect(r.err).toMatch(/^postern: (Unknown option '--bogus-flag'|postern serve takes no arguments, got "--bogus-flag")/);
      // Refused before the store was opened: no database was made.
      expect(existsSync(path.join(dir, 'data', 'postern.db'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says how to give a config file when there is none', async () => {
    const r = await run(['--config', '/nonexistent/postern.toml', 'user', 'list']);
    expect(r).toMatchObject({ code: 1, out: '' });
    expect(r.err).toMatch(/^postern: cannot read config \/nonexistent\/postern\.toml: .*\n\(give the file with --config FILE or \$POSTERN_CONFIG; start from config\/postern\.example\.toml\)\n$/);
  });

  it('tells the admin how to lift a suspension when suspending twice', async () => {
    const dir = tempDir();
    try {
      const file = writeConfig(dir);
      expect((await cli(file, ['user', 'add', 'alice', '--sender', 'alice@example.com', '--network', '192.0.2.0/24'])).code).toBe(0);
      expect((await cli(file, ['user', 'suspend', 'alice', '--reason', 'test'])).code).toBe(0);
      const again = await cli(file, ['user', 'suspend', 'alice', '--reason', 'test']);
      expect(again).toMatchObject({ code: 1, err: 'postern: user alice is already suspended (to lift it: postern user unsuspend alice --reason "..."; after a compromise: postern user reset alice)\n' });
      const unsuspended = await cli(file, ['user', 'unsuspend', 'alice', '--reason', 'false alarm']);
      expect(unsuspended.code).toBe(0);
      expect((await cli(file, ['user', 'unsuspend', 'alice', '--reason', 'x'])).err).toBe('postern: user alice is not suspended (see: postern user show alice)\n');
      expect((await cli(file, ['limits', 'show', 'nothere', '--device'])).err).toBe('postern: no such device: nothere (see: postern device list)\n');
    } finally {
      rmSync(path.join(dir), { recursive: true, force: true });
    }
  });
});
