import { getDomain } from 'tldts';
import { HOSTNAME_RE } from './schema.js';

/**
 * Why the outbound identity is unfit to deliver mail, or null when it is fine.
 *
 * The EHLO name is what receivers check against forward DNS and what ends up in their
 * Received: lines; the PTR name is the reverse name of the outbound IP. Keeping them apart
 * (a dedicated "mta-out" name) lets the submission host's name and reputation stay separate
 * from the delivering MTA's, while sharing the registered domain keeps the two recognisably
 * one operator's, which is what reputation systems and FCrDNS-style checks look for. An
 * underscore is legal in DNS but not in an RFC 5321 domain (a "sub-domain" is letters,
 * digits and hyphens), and some receivers refuse EHLO with one outright.
 */
export function outboundIdentityProblem(identity: { helo: string; ptr: string }): string | null {
  const helo = identity.helo.toLowerCase().replace(/\.$/, '');
  const ptr = identity.ptr.toLowerCase().replace(/\.$/, '');
  const why =
    'the HELO name must differ from the PTR name (so the delivering MTA has its own identity) ' +
    'but share its registered domain (so receivers see one operator)';
  if (!helo) return `identity.helo is not set: set it to a dedicated host name such as mta-out.<your domain>; ${why}`;
  if (helo.includes('_')) return `identity.helo "${identity.helo}" contains "_", which RFC 5321 does not allow in a host name`;
  if (!HOSTNAME_RE.test(helo) || !helo.includes('.')) {
    return `identity.helo "${identity.helo}" is not a fully qualified host name (RFC 5321 EHLO needs one, e.g. mta-out.example.com)`;
  }
  if (!ptr) return `identity.ptr is not set: set it to the PTR name of the outbound IP; ${why}`;
  if (!HOSTNAME_RE.test(ptr)) return `identity.ptr "${identity.ptr}" is not a host name`;
  if (helo === ptr) return `identity.helo equals identity.ptr ("${identity.helo}"): ${why}`;
  // allowPrivateDomains: a name under e.g. github.io belongs to that private registration,
  // not to the whole of github.io, so two tenants there are not "the same domain".
  const heloDomain = getDomain(helo, { allowPrivateDomains: true });
  const ptrDomain = getDomain(ptr, { allowPrivateDomains: true });
  if (!heloDomain || !ptrDomain || heloDomain !== ptrDomain) {
    return (
      `identity.helo "${identity.helo}" (registered domain ${heloDomain ?? 'none'}) is not in the registered domain of ` +
      `identity.ptr "${identity.ptr}" (${ptrDomain ?? 'none'}): ${why}`
    );
  }
  return null;
}
