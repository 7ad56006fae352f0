import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort } from './net.js';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
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


export interface TestPostgres {
  /** A new empty database on the throwaway server, as a postgres:// URL. */
  database(): Promise<string>;
  /** Stops the server, runs `during`, and starts it again on the same port and data. */
  outage(during: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A throwaway PostgreSQL cluster on a loopback port: initdb into a temporary directory, trust
 * authentication for the one local user, no fsync (a test never survives an OS crash anyway;
 * commits are still real commits). Resolves once the server accepts connections.
 */
export async function startPostgres(): Promise<TestPostgres> {
  if (!BIN) throw new Error(NO_POSTGRES_MESSAGE);
  const as = account();
  const dir = mkdtempSync(path.join(tmpdir(), 'postern-pg-'));
  if (as) chownSync(dir, as.uid, as.gid);
  const opts = as ? { uid: as.uid, gid: as.gid } : {};
  const init = spawnSync(path.join(BIN, 'initdb'), ['-D', path.join(dir, 'data'), '-U', 'postern', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { ...opts, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const start = async (): Promise<ChildProcess> => {
    const child = spawn(
      path.join(BIN, 'postgres'),
      ['-D', path.join(dir, 'data'), '-h', '127.0.0.1', '-p', String(port), '-k', dir, '-c', 'fsync=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200'],
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
  const admin = `postgres://postern@127.0.0.1:${port}/postgres`;
  let n = 0;
  return {
    async database() {
      const name = `t${process.pid}_${++n}`;
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      await c.query(`CREATE DATABASE ${name}`);
      await c.end();
      return `postgres://postern@127.0.0.1:${port}/${name}`;
    },
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
