import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Clock } from '../domain/clock.js';
import * as domain from './checks/domain.js';
import * as identity from './checks/identity.js';
import { fail, warn, type Check, type CheckResult, type DoctorContext, type DomainCheck, type Need } from './checks/result.js';
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
}

export interface DoctorDeps {
  dns: DoctorDns;
  clock: Clock;
}

// Order is output order: what a receiver looks at first comes first.
const IDENTITY: Check[] = [
  { id: 'identity.outbound_ip', needs: [], run: identity.checkOutboundIp },
  { id: 'ptr.exists', needs: ['ip'], run: identity.checkPtrExists },
  { id: 'ptr.forward', needs: ['ip', 'ptr'], run: identity.checkPtrForward },
  { id: 'ptr.matches_config', needs: ['ip', 'ptr'], run: identity.checkPtrMatchesConfig },
  { id: 'ptr.generic', needs: ['ip', 'ptr'], run: identity.checkPtrGeneric },
  { id: 'helo.syntax', needs: [], run: identity.checkHeloSyntax },
  { id: 'helo.cname', needs: ['helo'], run: identity.checkHeloCname },
  { id: 'helo.forward', needs: ['helo', 'ip'], run: identity.checkHeloForward },
  { id: 'helo.not_ptr', needs: ['helo', 'ptrName'], run: identity.checkHeloNotPtr },
  { id: 'helo.same_domain', needs: ['helo', 'ptrName'], run: identity.checkHeloSameDomain },
  { id: 'helo.spf.exists', needs: ['helo'], run: (c) => checkSpf(c, { prefix: 'helo', name: c.helo, strictAll: true }) },
  { id: 'ptr.null_mx', needs: ['ptrName'], run: identity.checkPtrNullMx },
  { id: 'ptr.null_spf', needs: ['ptrName'], run: identity.checkPtrNullSpf },
  { id: 'helo.null_mx', needs: ['helo'], run: identity.checkHeloNullMx },
  { id: 'postmaster.route', needs: ['helo'], run: identity.checkPostmaster },
  { id: 'helo.csa', needs: ['helo'], run: identity.checkCsa },
  { id: 'helo.rp', needs: ['helo'], run: identity.checkRp },
];

const PER_DOMAIN: DomainCheck[] = [
  { id: 'domain.spf.exists', run: (c, d) => checkSpf(c, { prefix: 'domain', name: d, strictAll: false }) },
  { id: 'domain.dmarc', run: domain.checkDmarc },
  { id: 'domain.dkim', run: domain.checkDkim },
  { id: 'domain.mx', run: domain.checkMx },
];

const TLS: Check[] = [
  { id: 'tls.names', needs: [], run: tls.checkTlsNames },
  { id: 'tls.expiry', needs: [], run: tls.checkTlsExpiry },
];

const HAVE: Record<Need, (c: DoctorContext) => boolean> = {
  ip: (c) => c.ip !== null,
  helo: (c) => c.heloOk,
  ptr: (c) => c.ptrSeen !== null,
  ptrName: (c) => Boolean(c.ptrName),
};

async function run(c: DoctorContext, id: string, needs: Need[], subject: string, go: () => ReturnType<Check['run']>): Promise<CheckResult[]> {
  if (!needs.every((n) => HAVE[n](c))) return [];
  try {
    const found = await go();
    return found === null ? [] : Array.isArray(found) ? found : [found];
  } catch (e) {
    // A resolver that times out must not read as "record missing": say the check could not run.
    const code = (e as { code?: string }).code;
    return [fail(id, subject, `could not check${code ? ` (${code})` : ''}: ${(e as Error).message}`)];
  }
}

function parseCertificate(cert: LocalCertificate): DoctorContext['x509'] {
  if (cert.state !== 'loaded') return null;
  try {
    return new X509Certificate(cert.pem);
  } catch (e) {
    return { error: (e as Error).message };
  }
}

async function context(input: DoctorInput, deps: DoctorDeps): Promise<DoctorContext> {
  const id = input.config.identity;
  const raw = id.outbound_ip.trim();
  const ip = isIP(raw) ? raw : null;
  const helo = normName(id.helo);
  const cfgPtr = normName(id.ptr);
  // A failed PTR lookup shows up in ptr.exists, which asks again (the answer is memoised).
  const observedPtr = ip ? await deps.dns.ptr(ip).catch(() => []) : [];
  const ptrSeen = observedPtr.includes(cfgPtr) ? cfgPtr : (observedPtr[0] ?? null);
  return {
    dns: deps.dns,
    now: deps.clock.now(),
    cfg: input.config,
    ip,
    family: isIP(raw) === 6 ? 6 : 4,
    helo,
    heloOk: hostNameProblem(helo) === null,
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
  return c.cfg.server.hostname;
}

export async function runDoctor(input: DoctorInput, deps: DoctorDeps): Promise<CheckResult[]> {
  const c = await context(input, deps);
  const noDomains = warn('domains', '-', 'no envelope domains to check: bind senders to users or devices, or name them with --domain D');
  const runs = [
    ...IDENTITY.map((k) => run(c, k.id, k.needs, about(c, k.id), () => k.run(c))),
    ...(c.domains.length ? c.domains.flatMap((d) => PER_DOMAIN.map((k) => run(c, k.id, [], d, () => k.run(c, d)))) : [Promise.resolve([noDomains])]),
    ...TLS.map((k) => run(c, k.id, k.needs, about(c, k.id), () => k.run(c))),
  ];
  return (await Promise.all(runs)).flat();
}

/** True when nothing failed: the doctor's exit status. */
export const healthy = (results: CheckResult[]) => results.every((r) => r.status !== 'FAIL');
