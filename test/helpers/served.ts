import { expect } from 'vitest';
import { killAll } from './child.js';
import { cli, writeConfig } from './cli.js';
import { closeAllSinks } from './sink.js';
import { startDnsServer, type DnsServer } from './dnsd.js';
import { tempDir } from './relay.js';

export const SERVED_PASS = 'correct horse battery staple';

/**
 * What a `postern serve` child (or several, on one data dir) needs to deliver: a loopback DNS
 * server routing dest.example to mx.dest.example at `mx`, a config sending to `port` there,
 * and alice (password SERVED_PASS, sender alice@sender.example, network 127.0.0.1).
 */
export async function servedRelay(mx: string, port: number, extra = ''): Promise<{ dir: string; config: string; dns: DnsServer }> {
  const dns = await startDnsServer([
    { type: 'A', name: 'mx.dest.example', data: mx },
    { type: 'MX', name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } },
  ]);
  const dir = tempDir();
  const config = writeConfig(dir, `[delivery]\ndns_servers = ["${dns.address}"]\nport = ${port}\n${extra}`);
  expect((await cli(config, ['user', 'add', 'alice', '--password-stdin', '--sender', 'alice@sender.example', '--network', '127.0.0.1', '--notify', 'alice@home.example'], `${SERVED_PASS}\n`)).code).toBe(0);
  return { dir, config, dns };
}

/** What a served-relay test leaves behind: children, sinks, a silent MX, its DNS server. */
export async function teardownServed(left: { dns?: DnsServer; blackHole?: import('node:net').Server }): Promise<void> {
  killAll();
  await closeAllSinks();
  await new Promise<void>((r) => (left.blackHole ? left.blackHole.close(() => r()) : r()));
  await left.dns?.close();
}
