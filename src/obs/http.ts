import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * /metrics and /healthz on their own listener, so a scraper or load balancer probe never
 * shares a port (or a firewall rule) with mail clients. Loopback by default: the figures
 * describe the organisation's mail flow.
 */
export async function startMetricsServer(
  spec: { host: string; port: number },
  deps: { registry: Pick<Registry, 'metrics' | 'contentType'>; healthy: () => { ok: boolean; detail: string } | Promise<{ ok: boolean; detail: string }> },
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      deps.registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': deps.registry.contentType }).end(body))
        .catch((e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(e as Error).message}\n`));
      return;
    }
    if (url === '/healthz') {
      Promise.resolve()
        .then(() => deps.healthy())
        .then(
          (h) => res.writeHead(h.ok ? 200 : 503, { 'content-type': 'text/plain' }).end(`${h.detail}\n`),
          (e: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`${(e as Error).message}\n`),
        );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('try /metrics or /healthz\n');
  });
  // A scraper that keeps its connection open must not hold shutdown up.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(spec.port, spec.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
