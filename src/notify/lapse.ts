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
      // An app password's exception is its user's, named with the app password's label.
      const app = b.pk === 'app-password' ? await t.appPasswords.get(b.id) : undefined;
      const kind = b.pk === 'device' ? ('device' as const) : ('user' as const);
      const id = app ? app.userId : b.id;
      const name =
        b.pk === 'app-password' && !app
          ? `#app-password-${b.id}`
          : ((kind === 'user' ? (await t.users.get(id))?.username : (await t.devices.get(id))?.name) ?? `#${id}`);
      rows.push({ ...b, kind: b.kind, owner: kind, name, label: b.pk === 'app-password' ? (app?.label ?? `#${b.id}`) : null });
    }
    for (const b of rows) {
      const detail = { [b.kind]: b.value, ...(b.label ? { app_password: b.label } : {}) };
      await t.audit.record({ at: now, actor: 'postern', action: `${b.kind}.lapsed`, target: `${b.owner}:${b.name}`, detail, reason: 'time-limited exception ended' });
    }
    return rows;
  });
  for (const b of lapsed) {
    const label = b.label ? { app_password: b.label } : {};
    log.info({ event: 'binding.lapsed', ...principalFields({ kind: b.owner, name: b.name }), ...label, kind: b.kind, value: b.value, expired_at: new Date(b.expiresAt).toISOString() });
  }
  return lapsed.length;
}
