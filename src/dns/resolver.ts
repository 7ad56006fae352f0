import { Resolver } from 'node:dns/promises';

/**
 * A resolver honouring [delivery] dns_servers ("host:port", tests point it at a loopback
 * server); with none configured it uses the system's. Timeouts are short and bounded so a
 * dead resolver delays a delivery attempt or a doctor run by seconds, not minutes.
 */
export function createResolver(servers: string[], opts: { timeoutMs?: number; tries?: number } = {}): Resolver {
  const r = new Resolver({ timeout: opts.timeoutMs ?? 2000, tries: opts.tries ?? 2 });
  if (servers.length) r.setServers(servers);
  return r;
}
