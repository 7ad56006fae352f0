import { parseArgs } from 'node:util';
import { principalLabel, type PrincipalRef } from '../domain/types.js';
import { CliError, iso, parseDuration, printJson, table, type Ctx } from './io.js';

export const STATS_HELP = `Usage: postern stats [--user NAME] [--since 24h] [--json]

Per-user figures from the store over a recent window (m, h, d or w; default 24h). The
JSON keys are the column names in lower case:
  PRINCIPAL  user:NAME or device:NAME
  MESSAGES   messages handed to the delivery queue (the quota ledger: the last 24h at most),
             whether delivered yet or not; held mail counts once released
  DELIVERED  recipients a remote server accepted (2xx)
  REJECTED   recipients a remote server refused (5xx)
  HELD       messages received in the window and still held in quarantine
  INCIDENTS  incidents opened (see: postern incidents --user NAME)
DELIVERED and REJECTED are final verdicts, kept 7 days (or [delivery]
reject_window_minutes if longer); with delivery off both stay 0.
Without --user, the spool by node follows (several nodes on one PostgreSQL):
  NODE      the node that accepted the mail ([server] node_id, else its host name)
  QUEUED, HELD, WAITING  its messages still in the spool, by state (WAITING: waiting-quota)
  DELIVERING             messages that node is delivering now (a live delivery claim)
Refusals (5xx/4xx answers to MAIL, RCPT, DATA) are not stored per user: the relay counts
them by reason in /metrics (postern_messages_refused_total) and logs each one with the
user (events mail.refused, rcpt.refused, message.refused).

Example:
  postern stats --since 7d
  postern stats --user alice --json
`;

/** The quota ledger keeps one day (spool/quota.ts purges older rows), so MESSAGES cannot look further back. */
const LEDGER_MS = 86_400_000;
/** Final delivery outcomes are kept this long at least (delivery/index.ts prunes older ones). */
const OUTCOMES_MS = 7 * 86_400_000;

export async function statsCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, since: { type: 'string', default: '24h' }, json: { type: 'boolean' } } });
  const windowMs = parseDuration(values.since);
  const now = Date.now();
  const st = await ctx.store();
  let principal: string | undefined;
  let ref: PrincipalRef | undefined;
  if (values.user) {
    const u = await st.users.find(values.user);
    if (!u) throw new CliError(`no such user: ${values.user} (see: postern user list)`);
    principal = principalLabel({ kind: 'user', name: u.username });
    ref = u.principalRef;
  }
  const rows = await st.stats.since(now - windowMs, ref);
  const nodes = values.user ? [] : await st.stats.nodes(now);
  const outcomesMs = Math.max(OUTCOMES_MS, ctx.config().delivery.reject_window_minutes * 60_000);
  const notes = [
    ...(windowMs > LEDGER_MS ? ['MESSAGES covers only the last 24h: the quota ledger keeps no more'] : []),
    ...(windowMs > outcomesMs ? [`DELIVERED and REJECTED cover only the last ${Math.round(outcomesMs / 86_400_000)} days: older outcomes are not kept`] : []),
  ];
  if (values.json) {
    printJson(ctx.io, {
      since: iso(now - windowMs),
      notes: [...notes, 'refusals: not stored per user; see /metrics postern_messages_refused_total or the log'],
      principals: rows.map((r) => ({ principal: r.principal, messages: r.messages, delivered: r.delivered, rejected: r.rejected, held: r.held, incidents: r.incidents })),
      ...(values.user ? {} : { nodes: nodes.map((n) => ({ node: n.node, queued: n.queued, held: n.held, waiting: n.waiting, delivering: n.delivering })) }),
    });
    return 0;
  }
  const printNodes = () => {
    if (!nodes.length) return;
    ctx.io.stdout(`\nspool by node:\n`);
    ctx.io.stdout(table([['NODE', 'QUEUED', 'HELD', 'WAITING', 'DELIVERING'], ...nodes.map((n) => [n.node ?? '(unrecorded)', String(n.queued), String(n.held), String(n.waiting), String(n.delivering)])]));
  };
  if (!rows.length) {
    ctx.io.stdout(`no messages, deliveries, rejections, held mail or incidents${principal ? ` for ${principal}` : ''} since ${iso(now - windowMs)}\n`);
    printNodes();
    return 0;
  }
  ctx.io.stdout(
    table([
      ['PRINCIPAL', 'MESSAGES', 'DELIVERED', 'REJECTED', 'HELD', 'INCIDENTS'],
      ...rows.map((r) => [r.principal, String(r.messages), String(r.delivered), String(r.rejected), String(r.held), String(r.incidents)]),
    ]),
  );
  ctx.io.stdout(`since ${iso(now - windowMs)}; refusals are not stored per user (see postern stats --help)\n`);
  for (const n of notes) ctx.io.stdout(`note: ${n}\n`);
  printNodes();
  return 0;
}
