import { parseArgs } from 'node:util';
import { QUEUE_STATES, type QueueState } from '../domain/types.js';
import { CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const QUEUE_HELP = `Usage: postern queue COMMAND [options]

  list [--state STATE] [--json]    messages in the spool (STATE: ${QUEUE_STATES.join(', ')})

Example:
  postern queue list --json | jq '.[] | select(.state == "queued") | .id'
`;

export function queueCommand(ctx: Ctx, argv: string[]): number {
  const [sub, ...rest] = argv;
  const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, state: { type: 'string' } } });
  if (sub !== 'list') throw new UsageError(sub ? `unknown command: queue ${sub}\n\n${QUEUE_HELP}` : QUEUE_HELP);
  const state = values.state as QueueState | undefined;
  if (state && !QUEUE_STATES.includes(state)) throw new CliError(`unknown state ${state}: use one of ${QUEUE_STATES.join(', ')}`);
  const msgs = ctx.store().queue.list(state);
  if (values.json) {
    printJson(
      ctx.io,
      msgs.map((m) => ({
        id: m.id,
        state: m.state,
        from: m.mailFrom,
        recipients: m.rcptTo,
        principal: m.principal,
        client_ip: m.clientIp,
        size: m.size,
        received: iso(m.receivedAt),
        attempts: m.attempts,
        next_attempt: iso(m.nextAttemptAt),
      })),
    );
  } else if (!msgs.length) {
    ctx.io.stdout('queue is empty\n');
  } else {
    ctx.io.stdout(
      table([
        ['ID', 'STATE', 'SIZE', 'RECEIVED', 'FROM', 'RECIPIENTS'],
        ...msgs.map((m) => [m.id, m.state, String(m.size), iso(m.receivedAt), m.mailFrom || '<>', m.rcptTo.join(',')]),
      ]) + `${msgs.length} message${msgs.length === 1 ? '' : 's'}\n`,
    );
  }
  return 0;
}
