import { parseArgs } from 'node:util';
import type { AuditDetail } from '../store/audit.js';
import { iso, printJson, table, type Ctx } from './io.js';

export const AUDIT_HELP = `Usage: postern audit [--user NAME | --device NAME | --target TARGET] [--json]

Every change made with the CLI (who, when, what, why) and every automatic one (lapsed
exceptions, expired quarantine), newest first. The server also logs each new entry as an
admin.action event (within seconds, on one node). --json gives DETAIL as an object (null
when there is none); an entry recorded as plain words reads {"text": "..."}.

Example:
  postern audit --user alice --json
`;

export async function auditCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, device: { type: 'string' }, target: { type: 'string' }, json: { type: 'boolean' } } });
  const target = values.user ? `user:${values.user}` : values.device ? `device:${values.device}` : values.target;
  const rows = await (await ctx.store()).audit.list(target ? { target } : {});
  if (values.json) printJson(ctx.io, rows.map((r) => ({ id: r.id, at: iso(r.at), actor: r.actor, action: r.action, target: r.target, detail: r.detail, reason: r.reason })));
  else if (!rows.length) ctx.io.stdout('no audit entries\n');
  else ctx.io.stdout(table([['ID', 'AT', 'ACTOR', 'ACTION', 'TARGET', 'DETAIL', 'REASON'], ...rows.map((r) => [String(r.id), iso(r.at), r.actor, r.action, r.target, detailText(r.detail), r.reason ?? '-'])]));
  return 0;
}

/** A detail on one line: its text as written, else the object as compact JSON. */
function detailText(d: AuditDetail | null): string {
  if (d === null) return '-';
  const keys = Object.keys(d);
  return keys.length === 1 && keys[0] === 'text' && typeof d.text === 'string' ? d.text : JSON.stringify(d);
}
