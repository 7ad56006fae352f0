import type { X509Certificate } from 'node:crypto';
import { fail, info, pass, warn, type CheckResult, type DoctorContext } from './result.js';

/** Check 9: the certificate submission clients are shown. */

const DAY = 86_400_000;
// Renewal (certbot, ACME clients) runs at 30 days left; 14 leaves time to notice it failed.
const WARN_DAYS = 14;

function loaded(c: DoctorContext, id: string): { x509: X509Certificate; path: string; selfSigned: boolean } | CheckResult {
  const host = c.cfg.server.hostname;
  const cert = c.certificate;
  if (cert.state === 'none') {
    return info(id, host, `no certificate yet: serve makes a self-signed one for ${host} in ${cert.path}; set [tls] cert and key for one clients trust`);
  }
  if (cert.state === 'unreadable') return fail(id, cert.path, `cannot read the certificate: ${cert.error}`);
  if (!c.x509 || 'error' in c.x509) return fail(id, cert.path, `not a PEM certificate: ${c.x509 && 'error' in c.x509 ? c.x509.error : 'empty'}`);
  return { x509: c.x509, path: cert.path, selfSigned: cert.selfSigned };
}

export function checkTlsNames(c: DoctorContext): CheckResult {
  const got = loaded(c, 'tls.names');
  if ('status' in got) return got;
  const host = c.cfg.server.hostname;
  const names = got.x509.subjectAltName ?? got.x509.subject;
  if (!got.x509.checkHost(host)) {
    return fail('tls.names', host, `${got.path} is for ${names}, not [server] hostname ${host}: clients that verify the certificate refuse to submit`);
  }
  return pass('tls.names', host, got.selfSigned ? `self-signed for ${host}: clients must pin it or skip verification` : `${got.path} covers ${host}`);
}

export function checkTlsExpiry(c: DoctorContext): CheckResult | null {
  const got = loaded(c, 'tls.expiry');
  if ('status' in got) return got.status === 'INFO' ? null : got;
  const [from, to] = [Date.parse(got.x509.validFrom), Date.parse(got.x509.validTo)];
  const left = Math.floor((to - c.now) / DAY);
  const until = new Date(to).toISOString().slice(0, 10);
  if (c.now < from) return fail('tls.expiry', got.path, `not valid before ${new Date(from).toISOString().slice(0, 10)}: check the clock or the certificate`);
  if (to <= c.now) return fail('tls.expiry', got.path, `expired on ${until}: clients refuse to submit`);
  if (left < WARN_DAYS) return warn('tls.expiry', got.path, `expires on ${until}, in ${left} days: renew it`);
  return pass('tls.expiry', got.path, `valid until ${until} (${left} days)`);
}
