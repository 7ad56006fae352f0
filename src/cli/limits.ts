import { parseArgs } from 'node:util';
import { principalLabel, type PrincipalRef } from '../domain/types.js';
import { DAY, HOUR } from '../policy/limits.js';
import { actor, CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const LIMITS_HELP = `Usage: postern limits show NAME [--device] [--json]
       postern user limits NAME [--messages-per-hour N] [--recipients-per-hour N]
                                [--recipients-per-day N] [--default] [--by NAME] [--reason TEXT]

show prints current usage against each limit and the mail waiting for quota.
user limits sets a user's (or, with --device, a device's) own limits; --default drops them
back to the [limits] values of the config.

Example:
  postern user limits newsletter-bot --messages-per-hour 1000 --reason "weekly newsletter"
  postern limits show alice
`;

/** The principal's number (what the ledger and overrides are keyed by) and its label ("user:alice"). */
async function principalOf(ctx: Ctx, name: string, device: boolean): Promise<{ ref: PrincipalRef; label: string }> {
  const st = await ctx.store();
  if (device) {
    const d = await st.devices.find(name);
    if (!d) throw new CliError(`no such device: ${name} (see: postern device list)`);
    return { ref: d.principalRef, label: principalLabel({ kind: 'device', name: d.name }) };
  }
  const u = await st.users.find(name);
  if (!u) throw new CliError(`no such user: ${name} (see: postern user list)`);
  return { ref: u.principalRef, label: principalLabel({ kind: 'user', name: u.username }) };
}

async function effective(ctx: Ctx, principal: PrincipalRef) {
  const cfg = ctx.config().limits;
  const o = await (await ctx.store()).limits.override(principal);
  return {
    messagesPerHour: o?.messagesPerHour ?? cfg.messages_per_hour,
    recipientsPerHour: o?.recipientsPerHour ?? cfg.recipients_per_hour,
    recipientsPerDay: o?.recipientsPerDay ?? cfg.recipients_per_day,
    overridden: Boolean(o && (o.messagesPerHour ?? o.recipientsPerHour ?? o.recipientsPerDay) !== null),
  };
}

export async function limitsShow(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'show') throw new UsageError(LIMITS_HELP);
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { json: { type: 'boolean' }, device: { type: 'boolean' } } });
  if (!positionals[0]) throw new UsageError(LIMITS_HELP);
  const { ref, label: principal } = await principalOf(ctx, positionals[0], Boolean(values.device));
  const now = Date.now();
  const st = await ctx.store();
  const usage = await st.limits.usage(ref, now);
  const lim = await effective(ctx, ref);
  const waiting = await st.limits.waiting(ref);
  const cfg = ctx.config().limits;
  const out = {
    principal,
    limits_source: lim.overridden ? 'principal' : 'config',
    messages_per_hour: { used: usage.messagesHour, limit: lim.messagesPerHour },
    recipients_per_hour: { used: usage.recipientsHour, limit: lim.recipientsPerHour },
    recipients_per_day: { used: usage.recipientsDay, limit: lim.recipientsPerDay },
    waiting: { messages: waiting.messages, recipients: waiting.recipients, ceiling: cfg.ceiling || lim.messagesPerHour },
    window_frees_at: usage.oldestHourAt === null ? null : iso(usage.oldestHourAt + HOUR),
    day_window_ms: DAY,
  };
  if (values.json) printJson(ctx.io, out);
  else
    ctx.io.stdout(
      table([
        ['LIMIT', 'USED', 'LIMIT'],
        ['messages/hour', String(usage.messagesHour), String(lim.messagesPerHour)],
        ['recipients/hour', String(usage.recipientsHour), String(lim.recipientsPerHour)],
        ['recipients/day', String(usage.recipientsDay), String(lim.recipientsPerDay)],
        ['waiting messages', String(waiting.messages), `${out.waiting.ceiling} (then 451 4.7.1)`],
      ]) + `limits from ${out.limits_source === 'principal' ? `${principal}'s own setting` : 'the config [limits]'}\n`,
    );
  return 0;
}

export async function userLimits(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'messages-per-hour': { type: 'string' },
      'recipients-per-hour': { type: 'string' },
      'recipients-per-day': { type: 'string' },
      default: { type: 'boolean' },
      device: { type: 'boolean' },
      by: { type: 'string' },
      reason: { type: 'string' },
    },
  });
  if (!positionals[0]) throw new UsageError(LIMITS_HELP);
  const { ref, label: principal } = await principalOf(ctx, positionals[0], Boolean(values.device));
  const num = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new CliError(`--${flag} needs a whole number of at least 1, not ${JSON.stringify(v)}`);
    return Number(v);
  };
  const change = values.default
    ? { messagesPerHour: null, recipientsPerHour: null, recipientsPerDay: null }
    : Object.fromEntries(
        Object.entries({
          messagesPerHour: num('messages-per-hour', values['messages-per-hour']),
          recipientsPerHour: num('recipients-per-hour', values['recipients-per-hour']),
          recipientsPerDay: num('recipients-per-day', values['recipients-per-day']),
        }).filter(([, v]) => v !== undefined),
      );
  if (!Object.keys(change).length) throw new UsageError(`nothing to change\n\n${LIMITS_HELP}`);
  const st = await ctx.store();
  const now = Date.now();
  await st.tx(async (t) => {
    await t.limits.setOverride(ref, change, now);
    await t.audit.record({ at: now, actor: actor(values.by, ctx.io.env), action: 'limits.set', target: principal, detail: JSON.stringify(change), reason: values.reason ?? null });
  });
  const l = await effective(ctx, ref);
  ctx.io.stdout(`${principal}: ${l.messagesPerHour} messages/hour, ${l.recipientsPerHour} recipients/hour, ${l.recipientsPerDay} recipients/day\n`);
  return 0;
}
