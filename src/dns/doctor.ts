import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import * as domain from './checks/domain.js';
import { checkDovecot } from './checks/auth.js';
import { checkGeoData, geoConfigured } from './checks/geo.js';
import * as hostname from './checks/hostname.js';
import * as identity from './checks/identity.js';
import { checkHeloPostmaster, checkHostnamePostmaster } from './checks/postmaster.js';
import { fail, info, skip, warn, type Check, type CheckResult, type DoctorContext, type DomainCheck, type Need } from './checks/result.js';
import { checkSpf } from './checks/spf.js';
import * as tls from './checks/tls.js';
import type { LocalCertificate, LocalDkimKey } from './local.js';
import type { DoctorDns } from './lookup.js';
import { hostNameProblem, normName } from './names.js';

export type { CheckResult, Status } from './checks/result.js';

/**
 * `postern doctor`: the DNS and TLS identity receivers judge this relay by. Each
 * check returns verdicts and never prints; DNS and the clock are injected so tests run the
 * table against a real DNS server on loopback.
 */

export interface DoctorInput {
  config: Config;
  /** Envelope domains to check (A-labels). */
  domains: string[];
  dkimKeys: LocalDkimKey[];
  certificate: LocalCertificate;
  /** Some binding in the store names a country or an ASN: the IP database is in use. */
  geoBindings?: boolean;
  /** [auth] backend = "dovecot": connects to Dovecot's auth service and reads its handshake. */
  probeDovecot?: () => Promise<{ ok: true; mechanisms: string[] } | { ok: false; error: string }>;
}

export interface DoctorDeps {
  dns: DoctorDns;
  clock: Clock;
}

// Order is output order: what a receiver looks at first comes first.
const IDENTITY: Check[] = [
  { id: 'identity.outbound_ip', needs: [], dns: false, run: identity.checkOutboundIp },
  { id: 'ptr.exists', needs: ['ip'], run: identity.checkPtrExists },
  { id: 'ptr.forward', needs: ['ip', 'ptr'], run: identity.checkPtrForward },
  { id: 'ptr.matches_config', needs: ['ip', 'ptr'], run: identity.checkPtrMatchesConfig },
  { id: 'ptr.generic', needs: ['ip', 'ptr'], run: identity.checkPtrGeneric },
  { id: 'helo.syntax', needs: [], dns: false, run: identity.checkHeloSyntax },
  { id: 'helo.cname', needs: ['helo'], run: identity.checkHeloCname },
  { id: 'helo.forward', needs: ['helo', 'ip'], run: identity.checkHeloForward },
  { id: 'helo.not_ptr', needs: ['helo', 'ptrName'], dns: false, run: identity.checkHeloNotPtr },
  { id: 'helo.same_domain', needs: ['helo', 'ptrName'], dns: false, run: identity.checkHeloSameDomain },
  { id: 'helo.spf.exists', needs: ['helo'], run: (c) => checkSpf(c, { prefix: 'helo', name: c.helo, strictAll: true }) },
  { id: 'ptr.null_mx', needs: ['ptrName'], run: identity.checkPtrNullMx },
  { id: 'ptr.null_spf', needs: ['ptrName'], run: identity.checkPtrNullSpf },
  { id: 'helo.postmaster', needs: ['helo'], run: checkHeloPostmaster },
  { id: 'postmaster.route', needs: ['helo'], run: identity.checkPostmaster },
  { id: 'helo.csa', needs: ['helo'], optional: true, run: identity.checkCsa },
  { id: 'helo.rp', needs: ['helo'], optional: true, run: identity.checkRp },
];

const PER_DOMAIN: DomainCheck[] = [
  { id: 'domain.spf.exists', run: (c, d) => checkSpf(c, { prefix: 'domain', name: d, strictAll: false }) },
  { id: 'domain.dmarc', run: domain.checkDmarc },
  { id: 'domain.dkim', run: domain.checkDkim },
  { id: 'domain.mx', run: domain.checkMx },
];

// The 220 greeting name, next to the certificate that names it.
const HOSTNAME: Check[] = [
  { id: 'hostname.syntax', needs: [], dns: false, run: hostname.checkHostnameSyntax },
  { id: 'hostname.forward', needs: ['hostname'], run: hostname.checkHostnameForward },
  { id: 'hostname.postmaster', needs: ['hostname'], run: checkHostnamePostmaster },
];

const TLS: Check[] = [
  { id: 'tls.names', needs: [], dns: false, run: tls.checkTlsNames },
  { id: 'tls.expiry', needs: [], dns: false, run: tls.checkTlsExpiry },
];

const HAVE: Record<Need, (c: DoctorContext) => boolean> = {
  ip: (c) => c.ip !== null,
  helo: (c) => c.heloOk,
  hostname: (c) => c.hostnameOk,
  ptr: (c) => c.ptrSeen !== null,
  ptrName: (c) => Boolean(c.ptrName),
};

async function run(c: DoctorContext, id: string, needs: Need[], subject: string, go: () => ReturnType<Check['run']>, optional = false): Promise<CheckResult[]> {
  if (!needs.every((n) => HAVE[n](c))) return [];
  try {
    const found = await go();
    return found === null ? [] : Array.isArray(found) ? found : [found];
  } catch (e) {
    // A resolver that times out must not read as "record missing": say the check could not run.
    // An optional record stays INFO: not knowing about it fails nothing.
    const code = (e as { code?: string }).code;
    return [(optional ? info : fail)(id, subject, `could not check${code ? ` (${code})` : ''}: ${(e as Error).message}`)];
  }
}

/** The one verdict for a resolver that does not serve us; every check that asks DNS is then skipped. */
function resolverDown(down: { servers: string; code: string }): CheckResult {
  const what = down.code === 'ESERVFAIL' || down.code === 'EREFUSED' ? 'resolver does not resolve' : 'resolver unreachable';
  return fail(
    'dns.resolver',
    down.servers,
    `${what}: ${down.servers} (${down.code}); the checks that ask DNS were skipped: fix [delivery] dns_servers (empty: the system's resolvers in /etc/resolv.conf), then run the doctor again`,
  );
}

const SKIPPED = 'skipped: the resolver does not answer (see dns.resolver)';

function parseCertificate(cert: LocalCertificate): DoctorContext['x509'] {
  if (cert.state !== 'loaded') return null;
  try {
    return new X509Certificate(cert.pem);
  } catch (e) {
    return { error: (e as Error).message };
  }
}

async function context(input: DoctorInput, deps: DoctorDeps, dnsDown: boolean): Promise<DoctorContext> {
  const id = input.config.identity;
  const raw = id.outbound_ip.trim();
  const ip = isIP(raw) ? raw : null;
  const helo = normName(id.helo);
  const host = normName(input.config.server.hostname);
  const cfgPtr = normName(id.ptr);
  // A failed PTR lookup shows up in ptr.exists, which asks again (the answer is memoised).
  const observedPtr = ip && !dnsDown ? await deps.dns.ptr(ip).catch(() => []) : [];
  const ptrSeen = observedPtr.includes(cfgPtr) ? cfgPtr : (observedPtr[0] ?? null);
  return {
    dns: deps.dns,
    now: deps.clock.now(),
    cfg: input.config,
    ip,
    family: isIP(raw) === 6 ? 6 : 4,
    helo,
    heloOk: hostNameProblem(helo) === null,
    hostname: host,
    hostnameOk: hostNameProblem(host) === null,
    cfgPtr,
    observedPtr,
    ptrSeen,
    ptrName: cfgPtr || ptrSeen,
    domains: [...new Set(input.domains.map(normName))].sort(),
    dkimKeys: input.dkimKeys,
    certificate: input.certificate,
    x509: parseCertificate(input.certificate),
  };
}

/** What an identity check is about, for the verdict it gets when it cannot run. */
function about(c: DoctorContext, id: string): string {
  if (id.startsWith('ptr.')) return c.ip ?? '-';
  if (id.startsWith('helo.') || id === 'postmaster.route') return c.helo || '[identity] helo';
  return c.hostname || '[server] hostname';
}

export async function runDoctor(input: DoctorInput, deps: DoctorDeps): Promise<CheckResult[]> {
  const down = await deps.dns.probe();
  const c = await context(input, deps, down !== null);
  const noDomains = warn('domains', '-', 'no envelope domains to check: bind senders to users or devices, or name them with --domain D');
  // With the resolver down, a check that asks DNS, or needs what only DNS would have said
  // (the PTR name when [identity] ptr is unset), is one SKIP row; one whose config is missing
  // (no outbound_ip, a bad helo) is left out as always, its cause reported by its own check.
  const fromDns = (n: Need) => n === 'ptr' || (n === 'ptrName' && !c.cfgPtr);
  const check = (k: Check): Promise<CheckResult[]> => {
    if (!down || (k.dns === false && !k.needs.some(fromDns))) return run(c, k.id, k.needs, about(c, k.id), () => k.run(c), k.optional);
    return Promise.resolve(k.needs.every((n) => fromDns(n) || HAVE[n](c)) ? [skip(k.id, about(c, k.id), SKIPPED)] : []);
  };
  const perDomain = (d: string) => PER_DOMAIN.map((k) => (down ? Promise.resolve([skip(k.id, d, SKIPPED)]) : run(c, k.id, [], d, () => k.run(c, d))));
  const runs = [
    ...(down ? [Promise.resolve([resolverDown(down)])] : []),
    ...IDENTITY.map(check),
    ...(c.domains.length ? c.domains.flatMap(perDomain) : [Promise.resolve([noDomains])]),
    ...HOSTNAME.map(check),
    ...TLS.map(check),
    // The IP database's age, only where it is used (a binding, or a [geo] path set); never asks DNS.
    ...(input.geoBindings || geoConfigured(c.cfg.geo) ? [run(c, 'geo.data', [], 'geo', () => checkGeoData(c))] : []),
    // The password backend, when it is Dovecot's; never asks DNS.
    ...(input.probeDovecot ? [run(c, 'auth.dovecot', [], c.cfg.auth.dovecot_socket, () => checkDovecot(c, input.probeDovecot!))] : []),
  ];
  return (await Promise.all(runs)).flat();
}

/** True when nothing failed: the doctor's exit status. */
export const healthy = (results: CheckResult[]) => results.every((r) => r.status !== 'FAIL');
