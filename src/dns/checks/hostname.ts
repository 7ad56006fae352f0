import { addressType, hostNameProblem, registeredDomain } from '../names.js';
import { addressesOf } from './postmaster.js';
import { fail, pass, type CheckResult, type DoctorContext } from './result.js';

/**
 * [server] hostname: the name in the 220 greeting and in Received: headers, the one
 * submission clients connect to and check the certificate against. The config refuses a
 * name with "_"; the default, localhost, is not fully qualified.
 */

/** A greeting name to propose: the configured one made valid, else smtp. in the HELO name's domain. */
function proposedHostname(c: DoctorContext): string {
  const mended = c.hostname.replace(/_/g, '-');
  if (!hostNameProblem(mended)) return mended;
  return `smtp.${registeredDomain(c.helo) ?? registeredDomain(c.ptrName ?? '') ?? 'example.com'}`;
}

/** The outbound address is a guess: the submission listener may have another. */
function addressFix(c: DoctorContext, name: string): string {
  const record = `${name}. IN ${c.ip ? addressType(c.ip) : 'A'} ${c.ip ?? 'ADDRESS'}`;
  return `; the address submission clients connect to${c.ip ? ` (here the outbound address: change it if they connect to another)` : ''}\n${record}`;
}

export function checkHostnameSyntax(c: DoctorContext): CheckResult {
  const problem = hostNameProblem(c.hostname);
  if (!problem) return pass('hostname.syntax', c.hostname, 'a fully qualified host name');
  const better = proposedHostname(c);
  return fail(
    'hostname.syntax',
    c.hostname || '[server] hostname',
    `[server] hostname ${problem}: it is the 220 greeting name, which submission clients connect to and check the certificate against; set hostname = "${better}" and publish its address`,
    addressFix(c, better),
  );
}

export async function checkHostnameForward(c: DoctorContext): Promise<CheckResult> {
  const addrs = await addressesOf(c, c.hostname);
  if (addrs.length) return pass('hostname.forward', c.hostname, `resolves to ${addrs.join(', ')}`);
  return fail('hostname.forward', c.hostname, 'the 220 greeting name has no A or AAAA record: submission clients cannot connect to this relay by the name its certificate is for', addressFix(c, c.hostname));
}
