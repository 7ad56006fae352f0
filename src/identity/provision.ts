import type { Clock } from '../domain/clock.js';
import type { User } from '../domain/types.js';
import type { Logger } from '../obs/log.js';
import { templateFor, type ProvisionTemplate } from '../policy/template.js';
import type { Store } from '../store/index.js';
import { UserExistsError } from '../store/users.js';
import { NO_PASSWORD } from './passwords.js';

/**
 * First-login provisioning ([auth] provision = "template"): a directory user who logs in
 * without a Postern user gets one, made from the template in one transaction and audited as
 * made by "provision". Two nodes provisioning the same name at once end with one row.
 */
export class Provisioner {
  constructor(
    private readonly store: Pick<Store, 'tx' | 'users' | 'bindings' | 'audit'>,
    private readonly template: ProvisionTemplate,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  async provision(name: string): Promise<User | null> {
    const made = templateFor(this.template, name);
    if ('problem' in made) {
      this.log.warn({ event: 'auth.provision_failed', principal: name, principal_kind: 'user', err: made.problem });
      return null;
    }
    const now = this.clock.now();
    try {
      const user = await this.store.tx(async (t) => {
        const u = await t.users.add(name, NO_PASSWORD, now);
        for (const v of made.senders) await t.bindings.add('user', u.id, 'sender', v, now);
        for (const v of made.networks) await t.bindings.add('user', u.id, 'network', v, now);
        for (const v of made.countries) await t.bindings.add('user', u.id, 'country', v, now);
        for (const v of made.asns) await t.bindings.add('user', u.id, 'asn', v, now);
        await t.audit.record({ at: now, actor: 'provision', action: 'user.add', target: `user:${name}`, detail: { provisioned: true, ...made }, reason: 'first login with a directory password' });
        return u;
      });
      this.log.info({ event: 'user.provisioned', principal: user.username, principal_kind: 'user', senders: made.senders });
      return user;
    } catch (e) {
      // Another node made the row first: that one is the user.
      if (e instanceof UserExistsError) return (await this.store.users.find(name)) ?? null;
      throw e;
    }
  }
}
