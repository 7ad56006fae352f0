import { z } from 'zod';

/** RFC 1123 host name: letters, digits and hyphens in dot-separated labels, no underscore. */
export const HOSTNAME_RE = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/i;

const hostname = z.string().regex(HOSTNAME_RE, 'must be a host name such as smtp.example.com');
const listenAddr = z
  .string()
  .regex(/^(\[[0-9a-f:.]+\]|[0-9.]+|[a-z0-9.-]+):\d{1,5}$/i, 'must be "address:port", e.g. "[::]:587"');
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-f:.]+\]|[0-9.]+|[a-z0-9.-]+):\d{1,5}$/i, 'must be "host:port"');

// Every object is strict: an unknown key is a typo, and a typo must stop the server at start
// rather than silently fall back to a default (what Haraka gets wrong).
export const configSchema = z.strictObject({
  server: z
    .strictObject({
      hostname,
      data_dir: z.string().min(1).default('/var/lib/postern'),
      max_clients: z.number().int().min(1).max(100_000).default(1000),
      idle_timeout_seconds: z.number().int().min(5).max(3600).default(300),
      shutdown_grace_seconds: z.number().int().min(0).max(600).default(30),
    })
    .prefault({ hostname: 'localhost' }),
  submission: z
    .strictObject({
      listen: z.array(listenAddr).default(['[::]:587']),
      listen_tls: z.array(listenAddr).default(['[::]:465']),
      max_message_bytes: z.number().int().min(1024).max(1024 * 1024 * 1024).default(26_214_400),
      max_recipients: z.number().int().min(1).max(100_000).default(100),
    })
    .prefault({}),
  tls: z
    .strictObject({
      cert: z.string().default(''),
      key: z.string().default(''),
    })
    .prefault({}),
  auth: z
    .strictObject({
      // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
      argon2_memory_kib: z.number().int().min(1024).max(4 * 1024 * 1024).default(19_456),
      argon2_time_cost: z.number().int().min(1).max(100).default(2),
      argon2_parallelism: z.number().int().min(1).max(16).default(1),
      max_concurrent_verifications: z.number().int().min(1).max(64).default(2),
      max_queued_verifications: z.number().int().min(0).max(100_000).default(1000),
      cache_ttl_seconds: z.number().int().min(0).max(86_400).default(300),
    })
    .prefault({}),
  identity: z
    .strictObject({
      helo: z.string().default(''),
      ptr: z.string().default(''),
      outbound_ip: z.string().default(''),
    })
    .prefault({}),
  delivery: z
    .strictObject({
      port: z.number().int().min(1).max(65_535).default(25),
      dns_servers: z.array(hostPort).default([]),
      smarthost: z.union([z.literal(''), hostPort]).default(''),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
