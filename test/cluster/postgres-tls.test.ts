import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import selfsigned from 'selfsigned';
import { BIN, BUILT, serve } from '../helpers/child.js';
import type { DnsServer } from '../helpers/dnsd.js';
import { hasPostgres, NO_POSTGRES_MESSAGE, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { SERVED_PASS, servedRelay, teardownServed } from '../helpers/served.js';
import { startSink } from '../helpers/sink.js';
import { SmtpClient } from '../helpers/smtp-client.js';

/** The database role's password: checked by the server (SCRAM), never to be logged. */
const DB_PASSWORD = 'db-secret-4e1f9a';
let pgServer: TestPostgres | undefined;
let dns: DnsServer | undefined;
afterEach(async () => {
  await teardownServed({ dns });
  dns = undefined;
});
afterAll(async () => {
  await pgServer?.stop();
});

describe.runIf(hasPostgres && BUILT)('PostgreSQL with a password, over verified TLS', () => {
  it('takes the password from the URL or from PGPASSWORD, talks TLS checked against sslrootcert, logs no password, and refuses to start with a wrong one', async () => {
    // The database's certificate is its own CA: the node is given it as sslrootcert. It names
    // localhost too: for a server given by IP address the pg driver sends no SNI name, and
    // Node then checks the certificate against "localhost" (a database given by host name,
    // as in production, is checked against that name).
    const tls = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      extensions: [
        { name: 'basicConstraints', cA: true },
        { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
      ],
    } as never);
    pgServer = await startPostgres({ password: DB_PASSWORD, tls: { cert: tls.cert, key: tls.private } });
    const withPassword = new URL(await pgServer.database());
    expect(withPassword.password).toBe(DB_PASSWORD);
    const sink = await startSink('127.0.0.2', 0);
    // The CLI (in this process) has the password in the URL; the node gets it from PGPASSWORD.
    const served = await servedRelay('127.0.0.2', sink.port, `[store]\nurl = "${withPassword.toString()}"\n`);
    dns = served.dns;
    const ca = path.join(served.dir, 'db-ca.pem');
    writeFileSync(ca, tls.cert);
    const bare = new URL(withPassword);
    bare.password = '';
    bare.search = `sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`;
    const nodeConfig = path.join(served.dir, 'node.toml');
    writeFileSync(nodeConfig, readFileSync(served.config, 'utf8').replace(withPassword.toString(), bare.toString()));

    const node = await serve(nodeConfig, { PGPASSWORD: DB_PASSWORD });
    const c = await SmtpClient.connect(node.port);
    expect(await c.login('alice', SERVED_PASS)).toBe('235 2.7.0 Authentication successful');
    expect(await c.send('alice@sender.example', ['bob@dest.example'], 'From: <alice@sender.example>\r\nSubject: over tls\r\n\r\nhi\r\n')).toMatch(/^250 2\.0\.0 /);
    await c.quit();
    while (sink.messages.length < 1) await once(sink, 'message');

    // Every connection the node holds to its database is encrypted.
    const admin = new pg.Client({ connectionString: pgServer.adminUrl });
    await admin.connect();
    const { rows } = await admin.query<{ n: number; encrypted: number }>(
      `SELECT COUNT(*)::int AS n, COUNT(*) FILTER (WHERE s.ssl)::int AS encrypted
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.datname = $1 AND a.backend_type = 'client backend'`,
      [withPassword.pathname.slice(1)],
    );
    await admin.end();
    expect(rows[0]!.n).toBeGreaterThan(0);
    expect(rows[0]!.encrypted).toBe(rows[0]!.n);
    expect(JSON.stringify(node.events)).not.toContain(DB_PASSWORD);
    node.child.kill('SIGTERM');
    await node.exited;

    // A wrong password: the node does not start, says why, and shows neither password.
    const wrong = spawnSync(process.execPath, [BIN, '--config', nodeConfig, 'serve'], { env: { ...process.env, PGPASSWORD: 'not-the-password' }, encoding: 'utf8', timeout: 20_000 });
    expect(wrong.status).not.toBe(0);
    const said = `${wrong.stdout}${wrong.stderr}`;
    expect(said).toContain('password authentication failed for user "postern"');
    expect(said).not.toContain('not-the-password');
    expect(said).not.toContain(DB_PASSWORD);

    // A database whose certificate the CA file does not vouch for: no start either.
    const other = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' } as never);
    writeFileSync(ca, other.cert);
    const impostor = spawnSync(process.execPath, [BIN, '--config', nodeConfig, 'serve'], { env: { ...process.env, PGPASSWORD: DB_PASSWORD }, encoding: 'utf8', timeout: 20_000 });
    expect(impostor.status).not.toBe(0);
    expect(`${impostor.stdout}${impostor.stderr}`).toMatch(/certificate/i);
  }, 60_000);
});

// Said once, not counted as a skipped test: .ci/run installs the server.
if (!hasPostgres) console.warn(NO_POSTGRES_MESSAGE);
