import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { watch } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './net.js';

/**
 * A real Dovecot (Debian's dovecot-core) for tests, answering only its auth protocol: no
 * mail storage, no IMAP binary. Everything lives in a temp dir (base_dir, state_dir, config,
 * passwd-file, log), so it never touches /etc/dovecot or /run/dovecot and two test files can
 * each run their own in parallel.
 */
export interface TestDovecot {
  /** "inet:127.0.0.1:PORT" for [auth] dovecot_socket. */
  inet: string;
  /** The unix auth-client socket path (mode 0666). */
  socketPath: string;
  logFile: string;
  /** Rewrites the passwd-file; the next authentication sees the new password. */
  setPassword(user: string, password: string): Promise<void>;
  removeUser(user: string): Promise<void>;
  /** `doveadm auth test -x service=imap USER PASSWORD`: ok when it exits 0. */
  authTest(user: string, password: string, service?: string): Promise<{ ok: boolean; output: string }>;
  /** Stops Dovecot: its listeners go away, connections are refused. */
  stop(): Promise<void>;
  /** Starts it again on the same port and paths. */
  start(): Promise<void>;
  /** stop() and remove the temp dir. */
  close(): Promise<void>;
}

let available: boolean | undefined;
/** Whether dovecot is installed (tests need it; .ci/run installs dovecot-core). */
export function dovecotAvailable(): boolean {
  available ??= spawnSync('dovecot', ['--version']).status === 0 && spawnSync('doveadm', ['help']).error === undefined;
  return available;
}

export const NO_DOVECOT_MESSAGE =
  'Dovecot tests did not run: dovecot is not installed. Install it with "apt-get install dovecot-core" (.ci/run does).';

/** Every Dovecot still running in this process: killed if the test process exits without close(). */
const running = new Set<ChildProcess>();
let exitHook = false;

function config(dir: string, port: number, failureDelaySeconds: number): string {
  // Dovecot drops to these users for its auth and login processes: as root, Debian's own
  // `dovecot` and `dovenull`; as anyone else, that user, who may not chroot either.
  const me = os.userInfo().username;
  const group = spawnSync('id', ['-gn'], { encoding: 'utf8' }).stdout.trim();
  const asUser =
    process.getuid?.() === 0 ? '' : `default_internal_user = ${me}\ndefault_internal_group = ${group}\ndefault_login_user = ${me}\nservice anvil {\n  chroot =\n}\n`;
  return `# Written by test/helpers/dovecot.ts: a throwaway auth-only Dovecot.
instance_name = postern-test-${port}
base_dir = ${dir}/run
state_dir = ${dir}/state
${asUser}protocols = none
ssl = no
log_path = ${dir}/dovecot.log
# Usernames, outcomes and the request lines (service, rip, secured: tests look for them), with
# resp=<hidden>: auth_debug_passwords and auth_verbose_passwords stay off.
auth_verbose = yes
auth_debug = yes
auth_debug_passwords = no
auth_verbose_passwords = no
# Postern applies its own failure delay and counts failures itself; Dovecot's 2 s would only
# slow the tests. (2.3 still answers failures in batches every 0.5 s: tests fail in parallel.)
auth_failure_delay = ${failureDelaySeconds}s
# No cache: a password changed in the passwd-file counts from the next request.
auth_cache_size = 0
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  # {PLAIN}: quick, and this file is a test's throwaway.
  args = scheme=PLAIN ${dir}/passwd
}
userdb {
  driver = static
  args = uid=${process.getuid?.() || 65534} gid=${process.getgid?.() || 65534} home=/nonexistent
}
service auth {
  inet_listener auth-inet {
    address = 127.0.0.1
    port = ${port}
  }
  unix_listener ${dir}/auth-client {
    mode = 0666
  }
}
`;
}

/**
 * Resolves with the log once it satisfies `test`: Dovecot's processes write through its log
 * process, so a line can land in the file just after the reply it belongs to.
 */
export function waitForLog(logFile: string, test: (log: string) => boolean, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let done = false;
    const watcher = watch(path.dirname(logFile));
    const end = (log: string | Error) => {
      if (done) return;
      done = true;
      watcher.close();
      clearTimeout(bound);
      if (typeof log === 'string') resolve(log);
      else reject(log);
    };
    const check = async () => {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      if (test(log)) end(log);
    };
    const bound = setTimeout(() => end(new Error(`${logFile} did not show what the test waits for within ${timeoutMs} ms`)), timeoutMs);
    watcher.on('change', () => void check());
    void check();
  });
}

function killGroup(c: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-c.pid!, signal);
  } catch {
    // the whole group is gone already
  }
}

/**
 * Resolves once a connection to the port is refused; each attempt follows the last one's
 * outcome. Halfway, `escalate` (SIGKILL) runs for a process that ignored SIGTERM.
 */
function refused(port: number, escalate: () => void, attempts = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    const attempt = (left: number) => {
      if (left === attempts / 2) escalate();
      const s = net.connect(port, '127.0.0.1');
      const again = () => (left > 1 ? setImmediate(() => attempt(left - 1)) : reject(new Error(`test Dovecot: port ${port} still accepts connections after stop`)));
      // A reset is a listener on its way out: try again.
      s.once('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNREFUSED' ? resolve() : again()));
      s.once('connect', () => {
        s.destroy();
        again();
      });
    };
    attempt(attempts);
  });
}

/** Resolves once Dovecot has logged its n-th "starting up" line and accepts connections on the port. */
function ready(child: ChildProcess, dir: string, logFile: string, port: number, n: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const watcher = watch(dir);
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      watcher.close();
      child.off('exit', exited);
      clearTimeout(bound);
      if (err) reject(err);
      else resolve();
    };
    const tail = async () => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-8).join('\n');
    const exited = (code: number | null) => void tail().then((t) => finish(new Error(`dovecot exited with ${code} before it started:\n${t}`)));
    child.once('exit', exited);
    // A guard against a Dovecot that neither starts nor exits; readiness itself is the event below.
    const bound = setTimeout(() => void tail().then((t) => finish(new Error(`dovecot did not start within 10 s:\n${t}`))), 10_000);
    let connecting = false;
    const connect = (attempts: number) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        finish();
      });
      s.once('error', (e) => (attempts > 1 && !settled ? setImmediate(() => connect(attempts - 1)) : finish(e)));
    };
    const check = async () => {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      if (!connecting && (log.match(/ starting up /g) ?? []).length >= n) {
        connecting = true;
        // The master binds its listeners before it logs "starting up"; a few retries cover a slow log write.
        connect(100);
      }
    };
    watcher.on('change', () => void check());
    void check();
  });
}

/** Starts a real Dovecot with these users ({PLAIN} passwords in a passwd-file); resolves once it accepts connections. */
/** `failureDelaySeconds`: Dovecot's auth_failure_delay (0 unless a test is about that delay). */
export async function startDovecot(users: Record<string, string>, opts: { failureDelaySeconds?: number } = {}): Promise<TestDovecot> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postern-dovecot-'));
  // Dovecot's auth process runs as the `dovecot` user: it must reach the passwd-file.
  await chmod(dir, 0o755);
  await mkdir(path.join(dir, 'state'));
  const port = await freePort();
  const conf = path.join(dir, 'dovecot.conf');
  const passwd = path.join(dir, 'passwd');
  const logFile = path.join(dir, 'dovecot.log');
  const socketPath = path.join(dir, 'auth-client');
  await writeFile(conf, config(dir, port, opts.failureDelaySeconds ?? 0));

  const table = new Map(Object.entries(users));
  // Dovecot re-reads a passwd-file whose mtime (in seconds) or size changed: each write gets
  // an mtime of its own, so two writes within one second are both seen. But Dovecot 2.3 also
  // stats the file at most once per second of its clock (db-passwd-file.c, passwd_file_sync):
  // a write resolves once the clock has entered the next second, which Dovecot has not synced in.
  let stamp = Math.floor(Date.now() / 1000) - 1_000_000;
  // One write at a time, each of the table as it is when its turn comes: of two changes made
  // at once, the last write holds both.
  let writes = Promise.resolve();
  const writeUsers = (settle = true): Promise<void> => {
    const written = writes.then(async () => {
      const tmp = `${passwd}.tmp`;
      await writeFile(tmp, [...table].map(([u, p]) => `${u}:{PLAIN}${p}\n`).join(''), { mode: 0o644 });
      await utimes(tmp, ++stamp, stamp);
      await rename(tmp, passwd);
    });
    writes = written.catch(() => {});
    return written.then(() => (settle ? new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5)) : undefined));
  };
  const field = (what: string, v: string) => {
    if (/[:\n\r\0]/.test(v)) throw new Error(`test Dovecot: a ${what} with ':' or a line break cannot go into a passwd-file`);
  };
  for (const [u, p] of table) {
    field('username', u);
    field('password', p);
  }
  await writeUsers(false);

  let child: ChildProcess | undefined;
  let starts = 0;
  const start = async () => {
    if (child) return;
    // Its own process group: stop() signals the master and every process it forked at once.
    const c = spawn('dovecot', ['-F', '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
    child = c;
    running.add(c);
    c.once('exit', () => {
      running.delete(c);
      if (child === c) child = undefined;
    });
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => running.forEach((r) => killGroup(r, 'SIGKILL')));
    }
    await ready(c, dir, logFile, port, ++starts);
  };
  const stop = async () => {
    const c = child;
    if (!c) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    killGroup(c, 'SIGTERM');
    await exited;
    // The master can exit before its auth process, which still holds the listeners and answers
    // on open connections: stopped means a connection is refused.
    await refused(port, () => killGroup(c, 'SIGKILL'));
  };
  try {
    await start();
  } catch (e) {
    await stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  return {
    inet: `inet:127.0.0.1:${port}`,
    socketPath,
    logFile,
    async setPassword(user, password) {
      field('username', user);
      field('password', password);
      table.set(user, password);
      await writeUsers();
    },
    async removeUser(user) {
      table.delete(user);
      await writeUsers();
    },
    authTest: (user, password, service = 'imap') =>
      new Promise((resolve) => {
        execFile('doveadm', ['-c', conf, 'auth', 'test', '-a', socketPath, '-x', `service=${service}`, user, password], (err, stdout, stderr) =>
          resolve({ ok: !err, output: `${stdout}${stderr}` }),
        );
      }),
    stop,
    start,
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
