import { parseArgs } from 'node:util';
import { userInfo } from 'node:os';
import { detailOf } from '../store/audit.js';
import { CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const INCIDENTS_HELP = `Usage: postern incidents [--user NAME | --device NAME] [--open] [--json]
       postern incidents resolve ID... | - [--by NAME] [--reason TEXT]

Incidents: compromise signals (foreign network, foreign sender), rate limits, remote
rejections, newest first. While an incident is open, every message of its user or device
scores open_incident (see [quarantine.weights]). "postern user reset NAME" and
"device unsuspend NAME" resolve all of its open incidents; "incidents resolve" closes one
once you have looked at it (ids on stdin with -), recorded in the audit log under --by
(default: your login name). --json gives the columns in lower case, plus detail (an
object; a sentence reads {"text": "..."}), notified, resolved and resolved_by (null while
open).

Examples:
  postern incidents --open
  postern incidents resolve 2 --reason "rate limit: newsletter sent by hand, expected"
`;

export async function incidentsCommand(ctx: Ctx, argv: string[]): Promise<number> {
  if (argv[0] === 'resolve') return resolve(ctx, argv.slice(1));
  const { values } = parseArgs({ args: argv, options: { user: { type: 'string' }, device: { type: 'string' }, open: { type: 'boolean' }, json: { type: 'boolean' } } });
  const list = await (await ctx.store()).incidents.list({
    ...(values.user ? { principalKind: 'user' as const, name: values.user } : {}),
    ...(values.device ? { principalKind: 'device' as const, name: values.device } : {}),
    open: Boolean(values.open),
  });
  if (values.json) {
    printJson(
      ctx.io,
      list.map((i) => ({ id: i.id, at: iso(i.createdAt), principal: `${i.principalKind}:${i.principalName}`, kind: i.kind, client_ip: i.clientIp, sender: i.sender, state: i.resolvedAt === null ? 'open' : 'resolved', detail: detailOf(i.detail), notified: i.notified, resolved: i.resolvedAt === null ? null : iso(i.resolvedAt), resolved_by: i.resolvedBy })),
    );
  } else if (!list.length) {
    ctx.io.stdout(values.open ? 'no open incidents\n' : 'no incidents\n');
  } else {
    ctx.io.stdout(
      table([
        ['ID', 'AT', 'PRINCIPAL', 'KIND', 'CLIENT_IP', 'SENDER', 'STATE'],
        ...list.map((i) => [String(i.id), iso(i.createdAt), `${i.principalKind}:${i.principalName}`, i.kind, i.clientIp ?? '-', i.sender ?? '-', i.resolvedAt === null ? 'open' : `resolved by ${i.resolvedBy}`]),
      ]),
    );
  }
  return 0;
}

async function resolve(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { by: { type: 'string' }, reason: { type: 'string' } } });
  const words = positionals.includes('-') ? [...positionals.filter((p) => p !== '-'), ...(await ctx.io.stdin()).split(/\s+/).filter(Boolean)] : positionals;
  if (!words.length) throw new UsageError(`postern incidents resolve needs incident ids (or - for ids on stdin)\n\n${INCIDENTS_HELP}`);
  const bad = words.find((w) => !/^[1-9]\d{0,15}$/.test(w));
  if (bad !== undefined) throw new CliError(`not an incident id: ${JSON.stringify(bad)} (ids are the numbers in the ID column of postern incidents)`);
  const actor = values.by ?? ctx.io.env.SUDO_USER ?? userInfo().username;
  const store = await ctx.store();
  let failed = 0;
  for (const id of [...new Set(words.map(Number))]) {
    const r = await store.incidents.resolve(id, { actor, reason: values.reason ?? null, now: Date.now() });
    if (r === 'resolved') ctx.io.stdout(`incident ${id} resolved\n`);
    else {
      failed++;
      ctx.io.stderr(r === 'not-found' ? `postern: no such incident: ${id} (see: postern incidents)\n` : `postern: incident ${id} is already resolved\n`);
    }
  }
  return failed ? 1 : 0;
}
