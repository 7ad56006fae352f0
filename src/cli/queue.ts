import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { QUEUE_STATES, type QueuedMessage, type QueueState } from '../domain/types.js';
import { ownerNode } from '../store/shared.js';
import { MessageNotFoundError, type RecipientState } from '../store/delivery.js';
import { CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const QUEUE_HELP = `Usage: postern queue COMMAND [options]

  list [--state STATE] [--json]    messages in the spool with each recipient's delivery state,
                                   the node that accepted each one and the node delivering it
                                   now (STATE: ${QUEUE_STATES.join(', ')})
  retry ID... | - | --all          try queued messages now (ids on stdin with -)
  delete ID... | - [--by NAME] [--reason TEXT]
                                   remove messages for good, without a DSN; recorded in the
                                   audit log under --by (default: your login name)

Examples:
  postern queue list --json | jq '.[] | select(.state == "queued") | .id'
  postern queue retry --all
  postern queue delete 0RZ4K8W2MBCDFG --reason "phishing run from a stolen account"
`;

/** pending recipients with a last error are waiting for a retry: "deferred" to a person. */
const rcptState = (r: RecipientState) => (r.status === 'pending' && r.lastError ? 'deferred' : r.status);

async function ids(ctx: Ctx, positionals: string[]): Promise<string[]> {
  const out = positionals.includes('-') ? [...positionals.filter((p) => p !== '-'), ...(await ctx.io.stdin()).split(/\s+/)] : positionals;
  return [...new Set(out.filter(Boolean))];
}

export async function queueCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'list':
      return list(ctx, rest);
    case 'retry':
      return retry(ctx, rest);
    case 'delete':
      return remove(ctx, rest);
    default:
      throw new UsageError(sub ? `unknown command: queue ${sub}\n\n${QUEUE_HELP}` : QUEUE_HELP);
  }
}

async function list(ctx: Ctx, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, state: { type: 'string' } } });
  const state = values.state as QueueState | undefined;
  if (state && !QUEUE_STATES.includes(state)) throw new CliError(`unknown state ${state}: use one of ${QUEUE_STATES.join(', ')}`);
  const store = await ctx.store();
  const now = Date.now();
  const msgs = await Promise.all((await store.queue.list(state)).map(async (m) => ({ m, rcpts: await store.delivery.recipients(m.id) })));
  // A claim counts while it has not lapsed: a node that died holds nothing.
  const delivering = (m: QueuedMessage) => (m.claimOwner && (m.claimUntil ?? 0) > now ? ownerNode(m.claimOwner) : null);
  if (values.json) {
    printJson(
      ctx.io,
      msgs.map(({ m, rcpts }) => ({
        id: m.id,
        state: m.state,
        from: m.mailFrom,
        principal: m.principal,
        client_ip: m.clientIp,
        size: m.size,
        received: iso(m.receivedAt),
        attempts: m.attempts,
        next_attempt: iso(m.nextAttemptAt),
        accepted_by: m.acceptedBy,
        delivering_node: delivering(m),
        recipients: rcpts.map((r) => ({
          address: r.address,
          state: rcptState(r),
          attempts: r.attempts,
          last_attempt: iso(r.lastAttemptAt),
          // Recipients still to do share their message's next attempt.
          next_attempt: r.status === 'pending' ? iso(m.nextAttemptAt) : '-',
          status: r.statusCode,
          remote_mta: r.remoteMta,
          last_error: r.lastError,
        })),
      })),
    );
  } else if (!msgs.length) {
    ctx.io.stdout('queue is empty\n');
  } else {
    const rows = [['ID', 'STATE', 'SIZE', 'RECEIVED', 'NEXT TRY', 'FROM', 'ACCEPTED BY', 'DELIVERING']];
    for (const { m, rcpts } of msgs) {
      rows.push([m.id, m.state, String(m.size), iso(m.receivedAt), iso(m.nextAttemptAt), m.mailFrom || '<>', m.acceptedBy ?? '-', delivering(m) ?? '-']);
      for (const r of rcpts) {
        const err = r.lastError ? ` ${r.lastError.replace(/\s+/g, ' ').slice(0, 100)}` : '';
        rows.push([`  ${r.address}`, rcptState(r), `${r.attempts} tries`, iso(r.lastAttemptAt), r.status === 'pending' ? iso(m.nextAttemptAt) : '-', `${r.statusCode ?? ''}${err}`.trim()]);
      }
    }
    ctx.io.stdout(table(rows) + `${msgs.length} message${msgs.length === 1 ? '' : 's'}\n`);
  }
  return 0;
}

async function retry(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { all: { type: 'boolean' } } });
  const list = await ids(ctx, positionals);
  if (!values.all && !list.length) throw new UsageError(`postern queue retry needs message ids, - (ids on stdin) or --all\n\n${QUEUE_HELP}`);
  if (values.all && list.length) throw new UsageError('postern queue retry: give ids or --all, not both');
  const n = await (await ctx.store()).delivery.retry(values.all ? 'all' : list, Date.now());
  ctx.io.stdout(`${n} message${n === 1 ? '' : 's'} will be tried now (held and waiting ones are not retried)\n`);
  if (!values.all && n < list.length) {
    ctx.io.stderr(`postern: ${list.length - n} id${list.length - n === 1 ? ' is' : 's are'} not queued (unknown, held or waiting): see postern queue list\n`);
    return 1;
  }
  return 0;
}

async function remove(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { by: { type: 'string' }, reason: { type: 'string' } } });
  const list = await ids(ctx, positionals);
  if (!list.length) throw new UsageError(`postern queue delete needs message ids (or - for ids on stdin)\n\n${QUEUE_HELP}`);
  const actor = values.by ?? ctx.io.env.SUDO_USER ?? userInfo().username;
  let missing = 0;
  for (const id of list) {
    try {
      await (await ctx.store()).delivery.deleteAudited(id, { actor, reason: values.reason ?? null, now: Date.now() });
      ctx.io.stdout(`message ${id} deleted\n`);
    } catch (e) {
      if (!(e instanceof MessageNotFoundError)) throw e;
      ctx.io.stderr(`postern: no such message: ${id} (see: postern queue list)\n`);
      missing++;
    }
  }
  return missing ? 1 : 0;
}
