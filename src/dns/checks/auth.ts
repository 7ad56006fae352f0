import { fail, pass, type CheckResult, type DoctorContext } from './result.js';

/**
 * [auth] backend = "dovecot": can this process reach Dovecot's auth service, and does it offer
 * PLAIN (the one mechanism Postern asks it with)? Run as the service user, it also proves the
 * socket's owner and mode let Postern in. Nothing is authenticated.
 */
export async function checkDovecot(c: DoctorContext, probe: () => Promise<{ ok: true; mechanisms: string[] } | { ok: false; error: string }>): Promise<CheckResult[]> {
  const socket = c.cfg.auth.dovecot_socket;
  const r = await probe();
  if (!r.ok) {
    return [fail('auth.dovecot', socket, `cannot use Dovecot's auth service: ${r.error}; every login gets 454 4.7.0 until it can: start Dovecot, or check its "service auth" listener (path, owner and mode, or inet address) against auth.dovecot_socket, and run the doctor as the service user`)];
  }
  if (!r.mechanisms.includes('PLAIN')) {
    return [fail('auth.dovecot', socket, `Dovecot's auth service does not offer PLAIN (it offers ${r.mechanisms.join(', ') || 'nothing'}): add plain to auth_mechanisms in Dovecot`)];
  }
  return [pass('auth.dovecot', socket, `Dovecot's auth service answers (mechanisms ${r.mechanisms.join(', ')}); Postern asks it as service ${c.cfg.auth.dovecot_service}`)];
}
