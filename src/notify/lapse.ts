import type { Clock } from '../domain/clock.js';
import { principalFields, type Logger } from '../obs/log.js';
import type { Store } from '../store/index.js';

/**
 * Time-limited exceptions (`postern user allow --for 7d`) stop matching the moment they
 * lapse (the store filters on expires_at); this sweep then removes them, with a log line and
 * an audit row, so an admin can see when a traveller's network stopped being allowed.
 */
export async function sweepLapsedBindings(store: Pick<Store, 'tx'>, clock: Clock, log: Logger): Promise<number> {
  const now = clock.now();
  // The deletions and their audit rows commit together: never a lapse without its record.
  const lapsed = await store.tx(async (t) => {
    const rows = [];
    for (const b of await t.bindings.sweepLapsed(now)) {
      const name = (b.pk === 'user' ? (await t.users.get(b.id))?.username : (await t.devices.get(b.id))?.name) ?? `#${b.id}`;
      rows.push({ ...b, name });
    }
    for (const b of rows) {
      await t.audit.record({ at: now, actor: 'postern', action: `${b.kind}.lapsed`, target: `${b.pk}:${b.name}`, detail: { [b.kind]: b.value }, reason: 'time-limited exception ended' });
    }
    return rows;
  });
  for (const b of lapsed) log.info({ event: 'binding.lapsed', ...principalFields({ kind: b.pk, name: b.name }), kind: b.kind, value: b.value, expired_at: new Date(b.expiresAt).toISOString() });
  return lapsed.length;
}
