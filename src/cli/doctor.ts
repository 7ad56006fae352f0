import { domainToASCII } from 'node:url';
import { parseArgs } from 'node:util';
import { HOSTNAME_RE } from '../config/schema.js';
import { systemClock } from '../domain/clock.js';
import type { CheckResult, Status } from '../dns/doctor.js';
import { readCertificate, readDkimKeys } from '../dns/local.js';
import { doctorDns } from '../dns/lookup.js';
import { createResolver } from '../dns/resolver.js';
import type { Config } from '../config/schema.js';
import { DovecotAuthClient } from '../identity/dovecot.js';
import { printJson, table, UsageError, type Ctx, type Io } from './io.js';

/** One connection and handshake with Dovecot's auth service, closed at once. */
export async function probeDovecot(cfg: Config): Promise<{ ok: true; mechanisms: string[] } | { ok: false; error: string }> {
  const client = new DovecotAuthClient({ socket: cfg.auth.dovecot_socket, service: cfg.auth.dovecot_service, connections: 1, timeoutMs: cfg.auth.dovecot_timeout_seconds * 1000 });
  try {
    return await client.probe();
  } finally {
    await client.close();
  }
}

export const DOCTOR_HELP = `Usage: postern doctor [--json] [--domain D]...

Checks what receivers judge this relay by, before it sends: the PTR of [identity]
outbound_ip and its forward confirmation, the HELO name (syntax, address, domain, SPF),
SPF, DMARC, DKIM and MX of every envelope domain, null MX/SPF on the PTR name (it takes
no mail), an MX that is not null for the HELO name and [server] hostname, so mail to
postmaster@ and abuse@ those names reaches a host that takes it (Postern takes none), the
hostname's syntax and address, the submission certificate, the age of the IP database
when a binding names a country or an ASN or [geo] names a file, and Dovecot's auth
service when [auth] backend = "dovecot" (run it as the service user). A FAIL or WARN
that DNS can fix comes with the record to publish, in zone-file syntax (MX-HOST, ADDRESS
and SELECTOR are values to fill in); others say what to change. DNS goes through
[delivery] dns_servers, else the system resolvers.

  --domain D    check envelope domain D (repeatable); without it, every domain
                users and devices are bound to send as
  --json        {"ok", "counts", "checks": [{"id", "subject", "status", "reason", "fix"}]}
                (fix: null when there is no record to publish)

Each row is PASS, WARN, FAIL, INFO (optional, never a failure) or SKIP. A resolver that
does not answer is one FAIL (dns.resolver) and every check that asks DNS is SKIP.
Exit status: 0 when nothing fails (WARN, INFO and SKIP allowed), 1 when a check fails.

Example:
  postern doctor --domain example.com
`;

const STATUSES: Status[] = ['FAIL', 'WARN', 'PASS', 'INFO', 'SKIP'];
const COLOUR: Record<Status, string> = { PASS: '\x1b[32m', WARN: '\x1b[33m', FAIL: '\x1b[1;31m', INFO: '\x1b[36m', SKIP: '\x1b[2m' };

function envelopeDomain(raw: string): string {
  const d = domainToASCII(raw.trim().toLowerCase().replace(/\.$/, ''));
  if (!d || !d.includes('.') || !HOSTNAME_RE.test(d)) throw new UsageError(`--domain ${JSON.stringify(raw)} is not a domain name (e.g. --domain example.com)`);
  return d;
}

function counts(results: CheckResult[]): Record<Status, number> {
  return Object.fromEntries(STATUSES.map((s) => [s, results.filter((r) => r.status === s).length])) as Record<Status, number>;
}

/** Key order and nulls are fixed: scripts read this. */
function printResultsJson(io: Io, results: CheckResult[]): void {
  printJson(io, {
    ok: results.every((r) => r.status !== 'FAIL'),
    counts: counts(results),
    checks: results.map((r) => ({ id: r.id, subject: r.subject, status: r.status, reason: r.reason, fix: r.fix ?? null })),
  });
}

function printResultsTable(io: Io, results: CheckResult[]): void {
  const lines = table([['STATUS', 'CHECK', 'SUBJECT', 'REASON'], ...results.map((r) => [r.status, r.id, r.subject, r.reason])]).trimEnd().split('\n');
  const out = [lines[0]!];
  results.forEach((r, i) => {
    // Every status is four letters, so colouring them after padding keeps the columns straight.
    out.push(io.colour ? `${COLOUR[r.status]}${r.status}\x1b[0m${lines[i + 1]!.slice(4)}` : lines[i + 1]!);
    if (r.fix) out.push(...r.fix.split('\n').map((l) => `        ${l}`));
  });
  const c = counts(results);
  const summary = STATUSES.filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(', ');
  io.stdout(`${out.join('\n')}\n\n${summary}${advice(results)}\n`);
}

/** What to do next, promising only records that are shown. */
function advice(results: CheckResult[]): string {
  if (results.some((r) => r.id === 'dns.resolver' && r.status === 'FAIL')) return ': make the resolver answer, then run postern doctor again';
  const faults = results.filter((r) => r.status === 'FAIL' || r.status === 'WARN');
  if (!faults.length) return '';
  const withRecord = faults.filter((r) => r.fix).length;
  if (withRecord === faults.length) return ': publish the records shown under each FAIL and WARN, then run postern doctor again';
  if (!withRecord) return ': fix what each FAIL and WARN says, then run postern doctor again';
  return ': publish the records shown under a FAIL or WARN, fix what the others say, then run postern doctor again';
}

export async function doctorCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, domain: { type: 'string', multiple: true } },
  });
  if (positionals.length) throw new UsageError(`postern doctor takes no arguments (did you mean --domain ${positionals[0]}?)\n\n${DOCTOR_HELP}`);
  const cfg = ctx.config();
  const store = await ctx.store();
  const domains = values.domain?.length ? values.domain.map(envelopeDomain) : await store.senderDomains(systemClock.now());
  // Loaded here, not at the top: the SPF evaluator is heavy and no other command needs it.
  const { runDoctor, healthy } = await import('../dns/doctor.js');
  const results = await runDoctor(
    {
      config: cfg,
      domains,
      dkimKeys: await readDkimKeys(store, cfg.server.data_dir, domains),
      certificate: readCertificate(cfg),
      geoBindings: await store.bindings.hasGeoBindings(),
      probeDovecot: cfg.auth.backend === 'dovecot' ? () => probeDovecot(cfg) : undefined,
    },
    { dns: doctorDns(createResolver(cfg.delivery.dns_servers)), clock: systemClock },
  );
  if (values.json) printResultsJson(ctx.io, results);
  else printResultsTable(ctx.io, results);
  return healthy(results) ? 0 : 1;
}
