import { z } from 'zod';
import { countryProblem } from '../domain/countries.js';
import { parseNetwork } from '../policy/bindings.js';

/** RFC 1123 host name: letters, digits and hyphens in dot-separated labels, no underscore. */
export const HOSTNAME_RE = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/i;

const hostname = z.string().regex(HOSTNAME_RE, 'must be a host name such as smtp.example.com');
const listenAddr = z
  .string()
  .regex(/^(\[[0-9a-f:.]+\]|[0-9.]+|[a-z0-9.-]+):\d{1,5}$/i, 'must be "address:port", e.g. "[::]:587"');
/** "10.0.0.0/8", "2001:db8::/32" or a bare address; host bits set is refused as a likely typo. */
const cidr = z.string().refine(
  (v) => {
    try {
      parseNetwork(v);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'must be a network such as "10.0.0.0/8" or an address' },
);
/** A quarantine signal's weight; 0 turns the signal off. */
const W = z.number().min(0).max(1000);
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-f:.]+\]|[0-9.]+|[a-z0-9.-]+):\d{1,5}$/i, 'must be "host:port"');
/** "" (the bundled data), one path, or a list of CSV paths read as one database. */
const geoDb = z.union([
  z.string(),
  z
    .array(z.string().min(1, 'a path in the list is empty'))
    .refine((l) => l.length < 2 || !l.some((p) => /\.mmdb$/i.test(p)), 'a .mmdb file must be the only file of its database (a list is for CSV files)'),
], { error: 'must be "" (the data bundled with Postern), a path, or a list of CSV paths' });

// Every object is strict: an unknown key is a typo, and a typo must stop the server at start
// rather than silently fall back to a default (what Haraka gets wrong).
export const configSchema = z.strictObject({
  server: z
    .strictObject({
      hostname,
      data_dir: z.string().min(1).default('/var/lib/postern'),
      max_clients: z.number().int().min(1).max(100_000).default(1000),
      max_connections_per_ip: z.number().int().min(1).max(100_000).default(50),
      idle_timeout_seconds: z.number().int().min(5).max(3600).default(300),
      shutdown_grace_seconds: z.number().int().min(0).max(600).default(30),
      // Processes serving the listeners: 1 = this one; 0 = one per CPU core.
      workers: z.number().int().min(0).max(256).default(1),
      // This node's name in delivery claims, leases and logs; "" = the host name.
      node_id: z
        .string()
        .regex(/^[A-Za-z0-9._-]{0,63}$/, 'must be letters, digits, ".", "_" or "-" (at most 63), or "" for the host name')
        .default(''),
    })
    .prefault({ hostname: 'localhost' }),
  store: z
    .strictObject({
      // "" = SQLite in server.data_dir; a postgres:// URL = that PostgreSQL database, shared by every node.
      url: z
        .string()
        .refine((u) => u === '' || /^postgres(ql)?:\/\/[^\s]+$/.test(u), 'must be "" (SQLite in server.data_dir) or a URL such as "postgres://postern@db.example.com:5432/postern"')
        .default(''),
    })
    .prefault({}),
  submission: z
    .strictObject({
      listen: z.array(listenAddr).default(['[::]:587']),
      listen_tls: z.array(listenAddr).default(['[::]:465']),
      max_message_bytes: z.number().int().min(1024).max(1024 * 1024 * 1024).default(26_214_400),
      max_recipients: z.number().int().min(1).max(100_000).default(100),
      // PROXY protocol v1/v2 on every submission listener, only from trusted_proxies.
      proxy_protocol: z.boolean().default(false),
      // The pause before the 220 (early talkers in it are refused); 0 = none, as Postfix on submission.
      greeting_delay_ms: z.number().int().min(0).max(5000).default(0),
      trusted_proxies: z.array(cidr).default([]),
    })
    .prefault({}),
  tls: z
    .strictObject({
      cert: z.string().default(''),
      key: z.string().default(''),
      // Session tickets: a reconnecting client resumes its TLS session (keys in the store).
      session_tickets: z.boolean().default(true),
      ticket_key_rotation_seconds: z.number().int().min(60).max(86_400).default(3600),
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
      // Where passwords are checked: "local" = argon2id hashes in Postern's store; "dovecot" =
      // Dovecot's auth service (src/identity/dovecot.ts). Bindings, limits and suspension stay
      // Postern's either way; app passwords are always Postern's own.
      backend: z.enum(['local', 'dovecot']).default('local'),
      // "/run/dovecot/auth-postern" (a unix socket) or "inet:127.0.0.1:12345".
      dovecot_socket: z
        .string()
        .regex(/^$|^\/|^inet:(\[[0-9a-f:.]*:[0-9a-f:.]*\]|[a-z0-9.-]+):\d{1,5}$/i, 'must be an absolute socket path such as "/run/dovecot/auth-postern" or "inet:127.0.0.1:12345" ("inet:[::1]:12345" for IPv6)')
        .refine((v) => !v.startsWith('inet:') || (Number(/:(\d+)$/.exec(v)![1]) >= 1 && Number(/:(\d+)$/.exec(v)![1]) <= 65_535), 'the port must be 1 to 65535')
        .default(''),
      dovecot_service: z.string().regex(/^[a-z0-9_-]{1,32}$/i, 'must be a service name such as "smtp"').default('smtp'),
      dovecot_connections: z.number().int().min(1).max(64).default(4),
      dovecot_timeout_seconds: z.number().min(0.1).max(120).default(5),
      // "template": a directory user without a Postern row gets one at first login, from
      // [auth.template]; "none": such a user is refused like an unknown one.
      provision: z.enum(['none', 'template']).default('none'),
      template: z
        .strictObject({
          // "{user}" is the login name, "{localpart}" and "{domain}" its halves.
          senders: z.array(z.string().min(1)).default([]),
          networks: z.array(cidr).default([]),
          // Checked as the CLI checks them, then kept as the bindings keep them: trimmed, upper case.
          countries: z.array(z.string().superRefine((v, ctx) => {
            const problem = countryProblem(v);
            if (problem) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a country: ${problem}` });
          }).transform((v) => v.trim().toUpperCase())).default([]),
          asns: z.array(z.union([z.number().int().min(0).max(4_294_967_295), z.string().regex(/^(AS)?\d{1,10}$/i, 'must be an AS number such as 16276')])).default([]),
        })
        .prefault({}),
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
      // Outbound delivery; each key is documented in config/postern.example.toml.
      enabled: z.boolean().default(true),
      max_queue_days: z.number().min(0.01).max(60).default(5),
      retry_initial_minutes: z.number().min(0.1).max(1440).default(5),
      retry_max_minutes: z.number().min(1).max(10_080).default(240),
      connections_per_host: z.number().int().min(1).max(100).default(5),
      max_concurrent_messages: z.number().int().min(1).max(10_000).default(50),
      connect_timeout_seconds: z.number().int().min(1).max(600).default(30),
      scan_interval_seconds: z.number().min(0.1).max(3600).default(30),
      claim_lease_seconds: z.number().min(1).max(3600).default(120),
      reject_alert: z.number().min(0).max(1).default(0.2),
      reject_window_minutes: z.number().int().min(1).max(10_080).default(60),
      reject_min_sample: z.number().int().min(1).max(100_000).default(20),
      tls_policy: z.record(z.string().regex(HOSTNAME_RE, 'keys must be domain names'), z.enum(['may', 'encrypt', 'verify', 'mta-sts', 'dane'])).default({}),
      // DANE (RFC 7672): "auto" trusts the AD bit of dns_servers, which must then be a
      // validating resolver on this host (loopback); "off" by default for that reason.
      dane: z.enum(['off', 'auto']).default('off'),
      // MTA-STS (RFC 8461): recipient domains' published policies are fetched, cached in the
      // store and applied (enforce: only the policy's MX hosts, TLS with a valid certificate).
      mta_sts: z.boolean().default(true),
      // The HTTPS port policies are fetched from: 443 (another only for tests, as port is).
      mta_sts_port: z.number().int().min(1).max(65_535).default(443),
      // More CA certificates (PEM file) to trust for verified delivery and policy fetches, beside the system's.
      tls_ca_file: z.string().default(''),
      // TLS reports (RFC 8460): daily counts of TLS successes and failures per recipient domain, mailed to its _smtp._tls rua.
      tls_reports: z.boolean().default(false),
    })
    .prefault({}),
  // Each enforcing policy can run in monitor mode: the would-be verdict is logged
  // (event policy.monitor) and counted, never applied, so a rollout shows who would be refused.
  binding: z
    .strictObject({
      network: z.strictObject({ mode: z.enum(['enforce', 'monitor']).default('enforce') }).prefault({}),
      sender: z.strictObject({ mode: z.enum(['enforce', 'monitor']).default('enforce') }).prefault({}),
    })
    .prefault({}),
  // The IP database behind country and ASN bindings (src/geo): "" = the data bundled with
  // Postern; else a MaxMind .mmdb file or ip-location-db CSV files (the -ipv4 and -ipv6
  // halves may come as a list). Loaded only once some binding names a country or an ASN.
  geo: z
    .strictObject({
      country_db: geoDb.default(''),
      asn_db: geoDb.default(''),
    })
    .prefault({}),
  limits: z
    .strictObject({
      enabled: z.boolean().default(true),
      mode: z.enum(['enforce', 'monitor']).default('enforce'),
      messages_per_hour: z.number().int().min(1).max(1_000_000).default(200),
      recipients_per_hour: z.number().int().min(1).max(10_000_000).default(1000),
      recipients_per_day: z.number().int().min(1).max(10_000_000).default(2000),
      ceiling: z.number().int().min(0).max(1_000_000).default(0),
      drain_interval_seconds: z.number().int().min(1).max(3600).default(10),
      redis: z.union([z.literal(''), z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')]).default(''),
      auth_max_failures_per_ip: z.number().int().min(1).max(100_000).default(20),
      auth_max_failures_per_user_ip: z.number().int().min(1).max(100_000).default(5),
      auth_max_failures_per_user: z.number().int().min(1).max(1_000_000).default(30),
      auth_failure_window_seconds: z.number().int().min(1).max(86_400).default(900),
      auth_lockout_seconds: z.number().int().min(1).max(86_400).default(900),
      auth_failure_delay_ms: z.number().int().min(0).max(30_000).default(1000),
    })
    .prefault({}),
  notify: z
    .strictObject({
      admins: z.array(z.email()).default([]),
      from: z.union([z.literal(''), z.email()]).default(''),
      helpdesk: z.string().max(500).default(''),
      burst_minutes: z.number().int().min(1).max(7 * 24 * 60).default(60),
    })
    .prefault({}),
  // Quarantine; each key is documented in config/postern.example.toml.
  quarantine: z
    .strictObject({
      enabled: z.boolean().default(true),
      mode: z.enum(['enforce', 'monitor']).default('enforce'),
      threshold: z.number().min(0.1).max(10_000).default(10),
      retention_days: z.number().min(0.01).max(365).default(14),
      notify_sender: z.boolean().default(true),
      many_recipients: z.number().int().min(2).max(100_000).default(50),
      many_domains: z.number().int().min(2).max(100_000).default(20),
      rejection_rate: z.number().min(0).max(1).default(0.3),
      rejection_min_sample: z.number().int().min(1).max(100_000).default(10),
      near_rate_limit: z.number().min(0.01).max(1).default(0.8),
      shorteners: z
        .array(z.string().regex(HOSTNAME_RE, 'shorteners must be host names such as bit.ly'))
        .default(['bit.ly', 'tinyurl.com', 't.co', 'goo.gl', 'ow.ly', 'is.gd', 'v.gd', 'buff.ly', 'rebrand.ly', 'cutt.ly', 'shorturl.at', 'rb.gy', 't.ly', 'tiny.cc', 'bl.ink', 's.id']),
      weights: z
        .strictObject({
          from_not_bound: W.default(10),
          reply_to_not_bound: W.default(3),
          from_display_name_address: W.default(7),
          executable_attachment: W.default(10),
          archived_executable: W.default(10),
          many_recipients: W.default(4),
          many_domains: W.default(6),
          link_text_mismatch: W.default(7),
          link_to_ip: W.default(5),
          link_shortener: W.default(3),
          near_rate_limit: W.default(3),
          open_incident: W.default(6),
          remote_rejections: W.default(6),
          new_domain: W.default(3),
        })
        .prefault({}),
    })
    .prefault({}),
  // Prometheus /metrics and /healthz on a listener of their own.
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true),
      listen: listenAddr.default('127.0.0.1:9587'),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
