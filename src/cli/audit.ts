import { parseArgs } from 'node:util';
import { iso, printJson, table, type Ctx } from './io.js';

export const AUDIT_HELP = `Usage: postern audit [--user NAME | --device NAME | --target TARGET] [--json]

Every change made with the CLI (who, when, what, why) and every automatic one (lapsed
exceptions, expired quarantine), newest first.

Example:
  postern audit --user alice --json
`;

export async function auditCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, device: { type: 'string' }, target: { type: 'string' }, json: { type: 'boolean' } } });
  const target = values.user ? `user:${values.user}` : values.device ? `device:${values.device}` : values.target;
  const rows = await (await ctx.store()).audit.list(target ? { target } : {});
  if (values.json) printJson(ctx.io, rows.map((r) => ({ ...r, at: iso(r.at) })));
  else if (!rows.length) ctx.io.stdout('no audit entries\n');
  else ctx.io.stdout(table([['AT', 'ACTOR', 'ACTION', 'TARGET', 'DETAIL', 'REASON'], ...rows.map((r) => [iso(r.at), r.actor, r.action, r.target, r.detail ?? '-', r.reason ?? '-'])]));
  return 0;
}
