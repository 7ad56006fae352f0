import { afterEach, describe, expect, it } from 'vitest';
import { sqliteHandle } from '../../src/store/index.js';
import path from 'node:path';
import { openStore } from '../../src/store/index.js';
import { cli, writeConfig } from '../helpers/cli.js';
import { tempDir } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';
import { BUILT, killAll, serve } from '../helpers/child.js';

afterEach(killAll);

const PASS = 'correct horse battery staple';

describe('durable accept', () => {
  // npm test builds dist/ before vitest runs; this test drives the built binary.
  it.runIf(BUILT)(
    'keeps every message acknowledged with 250 when the server is killed with SIGKILL the next instant',
    async () => {
      const dir = tempDir();
      const config = writeConfig(dir);
      expect((await cli(config, ['user', 'add', 'alice', '--password-stdin', '--sender', 'alice@example.com', '--network', '127.0.0.1', '--notify', 'alice@home.example'], `${PASS}\n`)).code).toBe(0);

      const first = await serve(config);
      // Five sessions send at once so the kill lands while other commits are in flight.
      const clients = await Promise.all(Array.from({ length: 5 }, () => SmtpClient.connect(first.port)));
      await Promise.all(clients.map((c) => c.login('alice', PASS)));
      const acked: string[] = [];
      await Promise.all(
        clients.map(async (c, i) => {
          const r = await c.send('alice@example.com', ['bob@example.org'], `Subject: ${i}\r\n\r\nmessage ${i}\r\n`);
          const id = /^250 2\.0\.0 Ok: queued as (\S+)$/.exec(r)?.[1];
          if (id) {
            acked.push(id);
            if (acked.length === 1) first.child.kill('SIGKILL');
          }
        }),
      );
      // Whatever happened above, the server dies now (a failure must not hang the test).
      first.child.kill('SIGKILL');
      expect(await first.exited).toBe(null);
      expect(acked.length).toBeGreaterThanOrEqual(1);

      // The restarted server opens the same database (WAL recovery) and sees every 250.
      const second = await serve(config);
      const queued = JSON.parse((await cli(config, ['queue', 'list', '--json'])).out) as Array<{ id: string; state: string }>;
      for (const id of acked) expect(queued.find((m) => m.id === id)?.state).toBe('queued');
      const st = openStore(path.join(dir, 'data'));
      for (const id of acked) expect((await st.queue.body(id))?.toString()).toMatch(/\r\n\r\nmessage \d\r\n$/);
      expect(sqliteHandle(st).pragma('integrity_check', { simple: true })).toBe('ok');
      st.close();

      // Graceful stop on SIGTERM.
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      for (const c of clients) c.destroy();
    },
  );

  it.runIf(BUILT)('reuses the certificate it generated on first start', async () => {
    const dir = tempDir();
    const config = writeConfig(dir);
    const fingerprints: string[] = [];
    for (let i = 0; i < 2; i++) {
      const s = await serve(config);
      const c = await SmtpClient.connect(s.tlsPort, { tls: true });
      const cert = c.tlsSocket!.getPeerCertificate();
      expect(cert.subject.CN).toBe('smtp.test.example');
      expect(cert.subjectaltname).toBe('DNS:smtp.test.example');
      fingerprints.push(cert.fingerprint256);
      c.destroy();
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    }
    expect(fingerprints[0]).toBe(fingerprints[1]);
  });
});
