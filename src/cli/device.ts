import { parseArgs } from 'node:util';
import type { Device } from '../domain/types.js';
import { canonicalNetwork } from '../policy/bindings.js';
import { suspendPrincipal } from '../notify/incidents.js';
import { sendersArg } from './bindings.js';
import { actor, CliError, iso, many, printJson, table, UsageError, type Ctx } from './io.js';

export const DEVICE_HELP = `Usage: postern device COMMAND [options]

Devices (printers, alarm panels) send without AUTH, only from their exact addresses, only
as their senders and, when given, only to their recipients. A mismatch suspends the device.

Reading:
  list [--json]
  show NAME [--json]
Changing (audited: --by NAME, --reason TEXT):
  add NAME --ip ADDR --sender ADDR [--recipient ADDR] [--require-tls]
  suspend NAME --reason TEXT       stop NAME from sending (its waiting mail is held)
  unsuspend NAME --reason TEXT     lift a suspension
  delete NAME

Example:
  postern device add printer-3f --ip 192.0.2.33 --sender scanner@example.com --recipient @example.com
`;

async function describe(ctx: Ctx, d: Device, now: number) {
  const b = (await ctx.store()).bindings;
  return {
    name: d.name,
    status: d.status,
    status_reason: d.statusReason,
    require_tls: d.requireTls,
    ips: (await b.values('device', d.id, 'network', now)).map((n) => n.replace(/\/(32|128)$/, '')),
    senders: await b.values('device', d.id, 'sender', now),
    recipients: await b.values('device', d.id, 'recipient', now),
    created: iso(d.createdAt),
  };
}

export async function deviceCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      json: { type: 'boolean' },
      ip: { type: 'string', multiple: true },
      sender: { type: 'string', multiple: true },
      recipient: { type: 'string', multiple: true },
      'require-tls': { type: 'boolean' },
      by: { type: 'string' },
      reason: { type: 'string' },
    },
  });
  const name = positionals[0];
  const now = Date.now();
  const st = await ctx.store();
  const needName = () => {
    if (!name) throw new UsageError(`postern device ${sub} needs a device name\n\n${DEVICE_HELP}`);
    return name;
  };
  const mustFind = async () => {
    const d = await st.devices.find(needName());
    if (!d) throw new CliError(`no such device: ${name} (see: postern device list)`);
    return d;
  };
  const audit = (action: string, target: string, detail: string | null) =>
    st.audit.record({ at: now, actor: actor(values.by, ctx.io.env), action, target: `device:${target}`, detail, reason: values.reason ?? null });

  switch (sub) {
    case 'add': {
      const n = needName();
      if (!/^[a-z0-9][a-z0-9._-]{0,63}$/i.test(n)) throw new CliError(`invalid device name ${JSON.stringify(n)}: use letters, digits and . _ - (at most 64), e.g. printer-3f`);
      const ips = many(values.ip).map((ip) => {
        // Exact addresses only: a device has no password, its address is all it has.
        if (ip.includes('/')) throw new CliError(`devices are bound to exact addresses, not networks: ${ip}`);
        try {
          return canonicalNetwork(ip);
        } catch {
          throw new CliError(`bad IP address ${JSON.stringify(ip)}: use one address such as 192.0.2.33 or 2001:db8::33`);
        }
      });
      const senders = sendersArg(many(values.sender));
      const recipients = sendersArg(many(values.recipient), 'recipient');
      if (!ips.length || !senders.length) throw new UsageError(`postern device add needs --ip and --sender\n\n${DEVICE_HELP}`);
      for (const ip of ips) {
        const other = await st.devices.byAddress(ip);
        if (other) throw new CliError(`${ip.replace(/\/(32|128)$/, '')} already belongs to device ${other.name}`);
      }
      if (await st.devices.find(n)) throw new CliError(`device ${n} already exists (see: postern device show ${n})`);
      await st.tx(async (t) => {
        const d = await t.devices.add(n, Boolean(values['require-tls']), now);
        for (const ip of ips) await t.bindings.add('device', d.id, 'network', ip, now);
        for (const s of senders) await t.bindings.add('device', d.id, 'sender', s, now);
        for (const r of recipients) await t.bindings.add('device', d.id, 'recipient', r, now);
        await audit('device.add', n, JSON.stringify({ ips, senders, recipients, require_tls: Boolean(values['require-tls']) }));
      });
      ctx.io.stdout(`device ${n} added\n`);
      return 0;
    }
    case 'list': {
      const ds = await Promise.all((await st.devices.list()).map((d) => describe(ctx, d, now)));
      if (values.json) printJson(ctx.io, ds);
      else if (!ds.length) ctx.io.stdout('no devices\n');
      else ctx.io.stdout(table([['NAME', 'STATUS', 'IPS', 'SENDERS'], ...ds.map((d) => [d.name, d.status, d.ips.join(','), d.senders.join(',')])]));
      return 0;
    }
    case 'show': {
      const d = await describe(ctx, await mustFind(), now);
      if (values.json) printJson(ctx.io, d);
      else ctx.io.stdout(Object.entries(d).map(([k, v]) => `${k.padEnd(15)}${Array.isArray(v) ? v.join(', ') || '-' : (v ?? '-')}\n`).join(''));
      return 0;
    }
    case 'suspend': {
      const d = await mustFind();
      if (!values.reason) throw new UsageError(`postern device suspend ${d.name} needs --reason "..." (it goes into the audit log)`);
      const ok = await st.tx(async (t) => {
        const { changed } = await suspendPrincipal(t, { kind: 'device', id: d.id, name: d.name, ref: d.principalRef }, `manual: ${values.reason}`, now);
        if (changed) await audit('device.suspend', d.name, null);
        return changed;
      });
      if (!ok) throw new CliError(`device ${d.name} is already suspended (to lift it: postern device unsuspend ${d.name} --reason "...")`);
      ctx.io.stdout(`device ${d.name} suspended\n`);
      return 0;
    }
    case 'unsuspend': {
      const d = await mustFind();
      if (!values.reason) throw new UsageError(`postern device unsuspend ${d.name} needs --reason "..."`);
      const ok = await st.tx(async (t) => {
        const changed = await t.devices.unsuspend(d.id, now);
        if (changed) {
          await t.incidents.resolveOpen(d.principalRef, actor(values.by, ctx.io.env), now);
          await audit('device.unsuspend', d.name, null);
        }
        return changed;
      });
      if (!ok) throw new CliError(`device ${d.name} is not suspended (see: postern device show ${d.name})`);
      ctx.io.stdout(`device ${d.name} unsuspended\n`);
      return 0;
    }
    case 'delete': {
      const d = await mustFind();
      await st.tx(async (t) => {
        await t.bindings.removeAll('device', d.id);
        await t.devices.delete(d.id, now);
        await audit('device.delete', d.name, null);
      });
      ctx.io.stdout(`device ${d.name} deleted\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown command: device ${sub}\n\n${DEVICE_HELP}` : DEVICE_HELP);
  }
}
