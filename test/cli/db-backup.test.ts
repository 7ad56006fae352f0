import Database from 'better-sqlite3';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readMigrations } from '../../src/store/migrate.js';
import { openStore } from '../../src/store/index.js';
import { BIN, BUILT } from '../helpers/child.js';
import { cli } from '../helpers/cli.js';
import { startTestRelay, tempDir, type TestRelay } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
const QUEUED = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{15})$/;
const SCHEMA = readMigrations().length;

let t: TestRelay;
/** A CLI config on the relay's data dir. */
let config: string;
/** Where the backups go: outside the data dir, as an admin would put them. */
let out: string;

beforeAll(async () => {
  // No rate limits: 50 sessions sending as fast as they can would otherwise wait for quota.
  t = await startTestRelay({ server: { max_connections_per_ip: 60 }, limits: { enabled: false } });
  await t.addUser('alice', PASS);
  config = cliConfig(t.dir);
  out = tempDir('postern-backup-');
});

afterAll(async () => {
  await t?.stop();
  rmSync(out, { recursive: true, force: true });
});

function cliConfig(dataDir: string, extra = ''): string {
  const file = path.join(dataDir, 'cli.toml');
  writeFileSync(file, `[server]\nhostname = "smtp.test.example"\ndata_dir = "${dataDir}"\n${extra}`);
  return file;
}

/** `postern ARGS` as its own process, as an admin runs it beside the relay. */
function postern(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, out: stdout, err: stderr })));
}

/** The files of a directory that a backup could have left behind (temporary copies, journals). */
const leftovers = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.tmp') || /\.tmp-/.test(f));

const HAS_SQLITE3_CLI = !spawnSync('sqlite3', ['-version']).error;

describe('postern db backup', () => {
  it.runIf(BUILT)(
    'copies the live database while 50 sessions submit, holding every message acknowledged before it began',
    async () => {
      const clients = await Promise.all(Array.from({ length: 50 }, () => SmtpClient.connect(t.tlsPort, { tls: true })));
      expect(new Set(await Promise.all(clients.map((c) => c.login('alice', PASS))))).toEqual(new Set(['235 2.7.0 Authentication successful']));

      // Each session sends until told to stop; every 250 is recorded with the body it acknowledged.
      const acked = new Map<string, string>();
      const refused: string[] = [];
      let stop = false;
      let warmedUp!: () => void;
      const warm = new Promise<void>((r) => (warmedUp = r));
      const loops = clients.map(async (c, i) => {
        for (let n = 0; !stop; n++) {
          const tag = `${i}-${n}`;
          const r = await c.send('alice@example.com', ['bob@example.org'], `Subject: ${tag}\r\n\r\nmessage ${tag}\r\n`);
          const id = QUEUED.exec(r)?.[1];
          if (!id) {
            refused.push(r);
            return;
          }
          acked.set(id, tag);
          if (acked.size === 50) warmedUp();
        }
      });
      await warm;

      // Everything acknowledged up to this instant must be in the copy; the copy's process
      // starts after it, so its read transaction begins later still.
      const before = new Map(acked);
      const file = path.join(out, 'under-load.db');
      const r = await postern(['--config', config, 'db', 'backup', file, '--json']);
      const duringBackup = acked.size - before.size;
      stop = true;
      await Promise.all(loops);
      await Promise.all(clients.map((c) => c.quit()));

      expect(refused).toEqual([]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)).toEqual({ file, bytes: statSync(file).size, schema_version: SCHEMA, integrity: 'ok' });
      // The relay kept acknowledging mail while the copy was taken: this was a backup under load.
      expect(duringBackup).toBeGreaterThan(0);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(leftovers(out)).toEqual([]);

      // A fresh connection finds it whole, and a single file (no -wal needed beside it).
      const db = new Database(file, { readonly: true, fileMustExist: true });
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(db.pragma('journal_mode', { simple: true })).toBe('delete');
      const inCopy = (db.prepare('SELECT id FROM messages').all() as Array<{ id: string }>).map((m) => m.id);
      db.close();
      if (HAS_SQLITE3_CLI) {
        const s = spawnSync('sqlite3', ['-readonly', file, 'PRAGMA integrity_check; SELECT count(*) FROM messages;'], { encoding: 'utf8' });
        expect({ out: s.stdout, err: s.stderr }).toEqual({ out: `ok\n${inCopy.length}\n`, err: '' });
      }

      // Every message acknowledged before the backup began is in it, and nothing that was never acknowledged.
      expect(inCopy).toEqual(expect.arrayContaining([...before.keys()]));
      expect(inCopy.filter((id) => !acked.has(id))).toEqual([]);

      // Restored as the README says (the file copied into an empty data dir as postern.db), the
      // CLI lists those messages and each holds the body that was acknowledged.
      const restored = tempDir('postern-restored-');
      try {
        copyFileSync(file, path.join(restored, 'postern.db'));
        const listed = JSON.parse((await cli(cliConfig(restored), ['queue', 'list', '--json'])).out) as Array<{ id: string }>;
        expect(listed.map((m) => m.id).sort()).toEqual([...inCopy].sort());
        const st = openStore(restored);
        try {
          for (const [id, tag] of before) {
            // As spooled: the relay's Received, Date and Message-ID ahead of what the client sent.
            const body = (await st.queue.body(id))?.toString() ?? '';
            expect(body).toMatch(new RegExp(`^Received: [^]*\\r\\nSubject: ${tag}\\r\\n[^]*\\r\\n\\r\\nmessage ${tag}\\r\\n$`));
          }
        } finally {
          st.close();
        }
      } finally {
        rmSync(restored, { recursive: true, force: true });
      }
    },
  );

  it('refuses to replace an existing FILE without --force, and replaces it with --force', async () => {
    const file = path.join(out, 'existing.db');
    writeFileSync(file, 'an older backup\n');
    expect(await cli(config, ['db', 'backup', file])).toEqual({ code: 1, out: '', err: `postern: ${file} exists: give --force to replace it, or name a new FILE\n` });
    expect(readFileSync(file, 'utf8')).toBe('an older backup\n');

    const r = await cli(config, ['db', 'backup', file, '--force']);
    expect(r).toEqual({ code: 0, out: `wrote ${file}: ${statSync(file).size} bytes, schema version ${SCHEMA}, integrity_check ok\n`, err: '' });
    const db = new Database(file, { readonly: true, fileMustExist: true });
    expect(db.prepare('SELECT username FROM users').all()).toEqual([{ username: 'alice' }]);
    db.close();
    expect(leftovers(out)).toEqual([]);
  });

  it('refuses the live database and its WAL as FILE, even with --force, by any name', async () => {
    const live = path.join(t.dir, 'postern.db');
    const link = path.join(out, 'link-to-live.db');
    symlinkSync(live, link);
    const liveBefore = statSync(live);
    for (const file of [live, `${live}-wal`, link, path.join(t.dir, '..', path.basename(t.dir), 'postern.db')]) {
      expect(await cli(config, ['db', 'backup', file, '--force'])).toEqual({
        code: 1,
        out: '',
        err: `postern: ${file} is the live database ${live} (or one of its -wal, -shm files): name a FILE outside server.data_dir for the copy\n`,
      });
    }
    expect(statSync(live).ino).toBe(liveBefore.ino);
    expect(leftovers(t.dir)).toEqual([]);
    rmSync(link);
  });

  it('says what to do with a FILE it cannot write and a data dir with no database', async () => {
    const missing = path.join(out, 'no-such-dir', 'p.db');
    expect(await cli(config, ['db', 'backup', missing])).toEqual({ code: 1, out: '', err: `postern: cannot write ${missing}: the directory ${path.dirname(missing)} does not exist (create it first)\n` });
    const dir = path.join(out, 'a-directory');
    mkdirSync(dir);
    expect(await cli(config, ['db', 'backup', dir, '--force'])).toEqual({ code: 1, out: '', err: `postern: ${dir} is a directory: name the FILE to write, e.g. ${dir}/postern.db\n` });

    const empty = tempDir('postern-empty-');
    try {
      const file = path.join(out, 'from-empty.db');
      expect(await cli(cliConfig(empty), ['db', 'backup', file])).toEqual({
        code: 1,
        out: '',
        err: `postern: no database at ${empty}/postern.db: nothing to back up (check server.data_dir = "${empty}" in the config)\n`,
      });
      // Neither a database created in the wrong place nor an empty "backup".
      expect(readdirSync(empty)).toEqual(['cli.toml']);
      expect(existsSync(file)).toBe(false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('says when the live database cannot be opened, and names the service user', async () => {
    const odd = tempDir('postern-odd-');
    try {
      // Something SQLite cannot open where the database should be (as root, permissions cannot make one).
      mkdirSync(path.join(odd, 'postern.db'));
      const file = path.join(out, 'odd.db');
      expect(await cli(cliConfig(odd), ['db', 'backup', file])).toEqual({
        code: 1,
        out: '',
        err: `postern: cannot open the live database ${odd}/postern.db: unable to open database file (run as the service user: sudo -u postern postern db backup ${file})\n`,
      });
      expect(existsSync(file)).toBe(false);
      expect(leftovers(out)).toEqual([]);
    } finally {
      rmSync(odd, { recursive: true, force: true });
    }
  });

  it.skipIf(process.getuid?.() === 0)('says when it may not write in the directory of FILE (not as root: root may write anywhere)', async () => {
    const locked = path.join(out, 'locked');
    mkdirSync(locked, { mode: 0o500 });
    const file = path.join(locked, 'p.db');
    expect(await cli(config, ['db', 'backup', file])).toEqual({ code: 1, out: '', err: `postern: cannot write ${file}: permission denied in ${locked} (pick another directory, or run as a user who may write there)\n` });
  });

  it('writes nothing when the copy fails integrity_check, and says the live database is damaged', async () => {
    const damaged = tempDir('postern-damaged-');
    try {
      // An index whose definition no longer matches its entries: pages SQLite copies without complaint.
      const db = new Database(path.join(damaged, 'postern.db'));
      db.pragma('journal_mode = WAL');
      db.exec('CREATE TABLE t (a INTEGER, b INTEGER); CREATE INDEX t_a ON t (a); INSERT INTO t VALUES (1, 10), (2, 20);');
      db.unsafeMode(true);
      db.pragma('writable_schema = ON');
      db.prepare("UPDATE sqlite_master SET sql = 'CREATE INDEX t_a ON t (b)' WHERE name = 't_a'").run();
      db.close();
      const file = path.join(out, 'damaged.db');
      expect(await cli(cliConfig(damaged), ['db', 'backup', file])).toEqual({
        code: 1,
        out: '',
        err:
          `postern: the copy fails integrity_check (row 1 missing from index t_a; row 2 missing from index t_a), so the live database does too; ${file} was not written. ` +
          'Stop the relay and copy postern.db with its -wal and -shm aside before anything else (README "Backup and restore")\n',
      });
      expect(existsSync(file)).toBe(false);
      expect(leftovers(out)).toEqual([]);
    } finally {
      rmSync(damaged, { recursive: true, force: true });
    }
  });

  it('on PostgreSQL gives the pg_dump command without the password, and connects to nothing', async () => {
    let connections = 0;
    const db = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => db.listen(0, '127.0.0.1', r));
    const port = (db.address() as net.AddressInfo).port;
    const dir = tempDir('postern-pg-');
    try {
      const pgConfig = cliConfig(dir, `[store]\nurl = "postgres://postern:s3cret@127.0.0.1:${port}/postern?sslmode=disable"\n`);
      const file = path.join(out, 'pg.dump');
      const r = await cli(pgConfig, ['db', 'backup', file, '--json']);
      expect(r).toEqual({
        code: 1,
        out: '',
        err:
          'postern: db backup copies the SQLite database, and this config names PostgreSQL (store.url): back it up with pg_dump ' +
          '(password from PGPASSWORD or ~/.pgpass; restore with pg_restore, see README "Backup and restore"):\n' +
          `  pg_dump --format=custom --file=${file} 'postgres://postern@127.0.0.1:${port}/postern?sslmode=disable'\n`,
      });
      expect(r.err).not.toContain('s3cret');
      expect(connections).toBe(0);
      expect(existsSync(file)).toBe(false);
      expect(readdirSync(dir)).toEqual(['cli.toml']);
    } finally {
      await new Promise((r) => db.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is a usage error without exactly one FILE or with an unknown option (exit 2)', async () => {
    const none = await cli(config, ['db', 'backup']);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/^postern: postern db backup needs the FILE to write\n\nUsage: postern db migrate\n {7}postern db backup FILE \[--force\] \[--json\]\n/);
    const two = await cli(config, ['db', 'backup', path.join(out, 'a.db'), path.join(out, 'b.db')]);
    expect(two.code).toBe(2);
    expect(two.err).toMatch(/^postern: postern db backup takes one FILE, got 2\n\nUsage: postern db migrate\n/);
    expect(await cli(config, ['db', 'backup', path.join(out, 'c.db'), '--overwrite'])).toEqual({
      code: 2,
      out: '',
      err: "postern: Unknown option '--overwrite'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- \"--overwrite\"\n(see: postern db --help)\n",
    });
    expect(readdirSync(out).filter((f) => /^[abc]\.db$/.test(f))).toEqual([]);
  });
});
