import { afterEach, describe, expect, it } from 'vitest';
import { cli, writeConfig } from '../helpers/cli.js';
import { BUILT, killAll, serve } from '../helpers/child.js';
import { tempDir } from '../helpers/relay.js';
import { SmtpClient } from '../helpers/smtp-client.js';

const PASS = 'correct horse battery staple';
afterEach(killAll);

describe('the guessing brake across processes', () => {
  it.runIf(BUILT)('locks an address out after 5 wrong passwords in total, split over two serve processes on one data dir', async () => {
    const dir = tempDir();
    const config = writeConfig(dir);
    expect((await cli(config, ['user', 'add', 'alice', '--password-stdin', '--sender', 'alice@example.com', '--network', '127.0.0.1', '--notify', 'alice@home.example'], `${PASS}\n`)).code).toBe(0);
    const [a, b] = [await serve(config), await serve(config)];
    const replies: string[] = [];
    for (let i = 0; i < 6; i++) {
      const c = await SmtpClient.connect(i % 2 ? b.port : a.port, { localAddress: '127.0.0.2' });
      replies.push(await c.login('alice', `wrong password ${i}`));
      await c.quit();
    }
    // auth_max_failures_per_user_ip = 5 (the default) counts both processes' failures.
    expect(replies).toEqual([...Array<string>(5).fill('535 5.7.8 Authentication credentials invalid'), '454 4.7.0 Too many failed logins from this address, please try again later']);
    const other = await SmtpClient.connect(a.port, { localAddress: '127.0.0.2' });
    expect(await other.login('alice', PASS)).toBe('454 4.7.0 Too many failed logins from this address, please try again later');
    await other.quit();
    // The owner's own address is another counter.
    const owner = await SmtpClient.connect(b.port);
    expect(await owner.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
    await owner.quit();
  }, 30_000);
});
