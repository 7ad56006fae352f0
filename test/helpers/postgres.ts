import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { freePort } from './net.js';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import pg from 'pg';

/** Debian's server binaries (package postgresql), newest major version first; null without. */
function serverBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  for (const v of readdirSync(root).sort((a, b) => Number(b) - Number(a))) {
    const bin = path.join(root, v, 'bin');
    if (existsSync(path.join(bin, 'postgres')) && existsSync(path.join(bin, 'initdb'))) return bin;
  }
  return null;
}

const BIN = serverBin();

/**
 * PostgreSQL refuses to run as root; CI runs as root, so the server runs as the "postgres"
 * account Debian's package creates (or as whoever we are, when that is not root).
 */
function account(): { uid: number; gid: number } | null {
  if (userInfo().uid !== 0) return null;
  const id = spawnSync('id', ['-u', 'postgres']);
  const gid = spawnSync('id', ['-g', 'postgres']);
  if (id.status !== 0 || gid.status !== 0) return null;
  return { uid: Number(id.stdout.toString()), gid: Number(gid.stdout.toString()) };
}

export const hasPostgres = BIN !== null && (userInfo().uid !== 0 || account() !== null);

export const NO_POSTGRES_MESSAGE =
  'PostgreSQL tests did not run: the server is not installed. Install it with "apt-get install postgresql" (.ci/run does).';


/**
 * A new database on the server `adminUrl` names, as a postgres:// URL: empty, or a copy of
 * `template` (cheaper than migrating again). The name is random, so workers of one run never
 * collide. The template must have no sessions.
 */
export async function createDatabase(adminUrl: string, opts: { template?: string } = {}): Promise<string> {
  const name = `t_${randomBytes(8).toString('hex')}`;
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    let copy = '';
    if (opts.template) {
      // From PostgreSQL 15 the default copies block by block through the WAL; copying the
      // files (with fsync off, its checkpoints are cheap) measured 35 ms against 50 ms.
      const version = Number((await c.query<{ v: string }>('SHOW server_version_num')).rows[0]!.v);
      copy = ` TEMPLATE ${pg.escapeIdentifier(opts.template)}${version >= 150000 ? ' STRATEGY FILE_COPY' : ''}`;
    }
    await c.query(`CREATE DATABASE ${name}${copy}`);
  } finally {
    await c.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** The database a postgres:// URL names. */
export const databaseName = (url: string): string => decodeURIComponent(new URL(url).pathname.slice(1));

export interface TestPostgres {
  /** The server's maintenance database, for CREATE DATABASE (see createDatabase). */
  readonly adminUrl: string;
  /** A new database on the throwaway server, as a postgres:// URL: empty, or a copy of `template`. */
  database(opts?: { template?: string }): Promise<string>;
  /** Stops the server, runs `during`, and starts it again on the same port and data. */
  outage(during: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Where a throwaway cluster's files go: memory (/dev/shm) when it has room, else the temporary
 * directory. Every database is ~8 MB of files and the postgres test project makes one per
 * relay: on the 2-core development VM (ext4 mounted with online discard) deleting the ~870 MB
 * at the end took 15 s, and writing them back slowed the tests meanwhile (a run took 58 s
 * instead of 36 s).
 */
function scratch(): string {
  try {
    const fs = statfsSync('/dev/shm');
    if (fs.bavail * fs.bsize >= 2 * 1024 ** 3) return '/dev/shm';
  } catch {
    // No /dev/shm here.
  }
  return tmpdir();
}

/**
 * A throwaway PostgreSQL cluster on a loopback port: initdb into a temporary directory, trust
 * authentication for the one local user, no fsync (a test never survives an OS crash anyway;
 * commits are still real commits). Resolves once the server accepts connections.
 * `password`: TCP logins need it (SCRAM), and adminUrl carries it. `tls`: the server offers
 * TLS with this certificate and key (PEM).
 */
export async function startPostgres(o: { password?: string; tls?: { cert: string; key: string } } = {}): Promise<TestPostgres> {
  if (!BIN) throw new Error(NO_POSTGRES_MESSAGE);
  const as = account();
  const dir = mkdtempSync(path.join(scratch(), 'postern-pg-'));
  if (as) chownSync(dir, as.uid, as.gid);
  const opts = as ? { uid: as.uid, gid: as.gid } : {};
  // Files the server reads must be its own: written, then handed to its account.
  const own = (file: string, data: string, mode: number) => {
    writeFileSync(file, data, { mode });
    if (as) chownSync(file, as.uid, as.gid);
  };
  const auth = ['-A', 'trust'];
  if (o.password) {
    own(path.join(dir, 'pwfile'), `${o.password}\n`, 0o600);
    auth.splice(0, 2, '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${path.join(dir, 'pwfile')}`);
  }
  const init = spawnSync(path.join(BIN, 'initdb'), ['-D', path.join(dir, 'data'), '-U', 'postern', ...auth, '-E', 'UTF8', '--locale=C', '--no-sync'], { ...opts, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const tlsArgs: string[] = [];
  if (o.tls) {
    own(path.join(dir, 'data', 'server.crt'), o.tls.cert, 0o644);
    own(path.join(dir, 'data', 'server.key'), o.tls.key, 0o600);
    tlsArgs.push('-c', 'ssl=on');
  }
  const port = await freePort();
  const start = async (): Promise<ChildProcess> => {
    const child = spawn(
      path.join(BIN, 'postgres'),
      ['-D', path.join(dir, 'data'), '-h', '127.0.0.1', '-p', String(port), '-k', dir, '-c', 'fsync=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200', ...tlsArgs],
      { ...opts, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    await new Promise<void>((resolve, reject) => {
      let log = '';
      const failed = (code: number | null) => reject(new Error(`postgres exited with ${code}: ${log}`));
      child.once('exit', failed);
      child.stderr!.on('data', (d: Buffer) => {
        log += d.toString();
        if (/database system is ready to accept connections/.test(log)) {
          child.off('exit', failed);
          resolve();
        }
      });
    });
    return child;
  };
  // Fast shutdown: active connections are cut, which is what a test's end (or outage) wants.
  const halt = (c: ChildProcess) =>
    new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGINT');
    });
  let child = await start();
  const admin = `postgres://${o.password ? `postern:${encodeURIComponent(o.password)}@` : 'postern@'}127.0.0.1:${port}/postgres`;
  return {
    adminUrl: admin,
    database: (opts) => createDatabase(admin, opts),
    async outage(during: () => Promise<void>) {
      await halt(child);
      try {
        await during();
      } finally {
        child = await start();
      }
    },
    async stop() {
      await halt(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
