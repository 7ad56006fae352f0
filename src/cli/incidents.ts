import { parseArgs } from 'node:util';
import { iso, printJson, table, type Ctx } from './io.js';

export const INCIDENTS_HELP = `Usage: postern incidents [--user NAME | --device NAME] [--open] [--json]

Incidents: compromise signals (foreign network, foreign sender), rate limits, remote
rejections, newest first. "postern user reset NAME" resolves a user's open incidents.

Example:
  postern incidents --open
`;

export async function incidentsCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, device: { type: 'string' }, open: { type: 'boolean' }, json: { type: 'boolean' } } });
  const list = await (await ctx.store()).incidents.list({
    ...(values.user ? { principalKind: 'user' as const, name: values.user } : {}),
    ...(values.device ? { principalKind: 'device' as const, name: values.device } : {}),
    open: Boolean(values.open),
  });
  if (values.json) {
    printJson(
      ctx.io,
      list.map((i) => ({ id: i.id, at: iso(i.createdAt), principal: `${i.principalKind}:${i.principalName}`, kind: i.kind, client_ip: i.clientIp, sender: i.sender, detail: i.detail, notified: i.notified, resolved: i.resolvedAt === null ? null : iso(i.resolvedAt), resolved_by: i.resolvedBy })),
    );
  } else if (!list.length) {
    ctx.io.stdout(values.open ? 'no open incidents\n' : 'no incidents\n');
  } else {
    ctx.io.stdout(
      table([
        ['ID', 'AT', 'PRINCIPAL', 'KIND', 'CLIENT IP', 'SENDER', 'STATE'],
        ...list.map((i) => [String(i.id), iso(i.createdAt), `${i.principalKind}:${i.principalName}`, i.kind, i.clientIp ?? '-', i.sender ?? '-', i.resolvedAt === null ? 'open' : `resolved by ${i.resolvedBy}`]),
      ]),
    );
  }
  return 0;
}
