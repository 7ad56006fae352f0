import { parseArgs } from 'node:util';
import { simpleParser } from 'mailparser';
import { QUEUE_STATES, type PrincipalRef, type QueueState } from '../domain/types.js';
import { summarize } from '../quarantine/summary.js';
import { QuarantineError, type DecidedMessage, type QuarantinedMessage } from '../store/quarantine.js';
import { actor, CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const QUARANTINE_HELP = `Usage: postern quarantine COMMAND [options]

Reading:
  list [--user NAME] [--state STATE] [--json]
                                   held messages, oldest first: id, age, user, From:,
                                   recipients, subject, score and top reasons
                                   (STATE: held (default), waiting-quota, all)
  show ID [--raw] [--json]         envelope, reasons, headers and a text preview;
                                   --raw prints the whole message as stored
Changing (recorded in the audit log under --by, default your login name, with --reason):
  release ID... | - | --user NAME --all [--by NAME] [--reason TEXT]
                                   move to the delivery queue, byte for byte as held
  delete ID... | - | --user NAME --all [--by NAME] [--reason TEXT]
                                   remove for good (no notice, no DSN)
  Ids may come on stdin with -. --all acts on every held message (of --user NAME).

Examples:
  postern quarantine list --user alice
  postern quarantine release 0RZ4K8W2MBCDFG --reason "invoice run, confirmed by phone"
  postern quarantine release --user alice --all --reason "false positives after the newsletter"
  postern quarantine list --json | jq -r '.[] | select(.score >= 20) | .id' | postern quarantine delete -
`;

const WAITING = QUEUE_STATES.filter((s) => s !== 'queued');

export async function quarantineCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'list':
      return list(ctx, rest);
    case 'show':
      return show(ctx, rest);
    case 'release':
      return decide(ctx, 'release', rest);
    case 'delete':
      return decide(ctx, 'delete', rest);
    default:
      throw new UsageError(sub ? `unknown command: quarantine ${sub}\n\n${QUARANTINE_HELP}` : QUARANTINE_HELP);
  }
}

function states(s: string | undefined): QueueState[] {
  if (!s || s === 'held') return ['held'];
  if (s === 'all') return [...WAITING];
  if (!(WAITING as string[]).includes(s)) throw new UsageError(`unknown state ${s}: use one of ${[...WAITING, 'all'].join(', ')}`);
  return [s as QueueState];
}

async function principalOf(ctx: Ctx, user: string | undefined): Promise<PrincipalRef | undefined> {
  if (user === undefined) return undefined;
  const u = await (await ctx.store()).users.find(user);
  if (!u) throw new CliError(`no such user: ${user} (see: postern user list)`);
  return u.principalRef;
}

/** "3d", "5h", "12m": how long a message has waited, at a glance. */
function age(ms: number): string {
  const m = Math.max(0, Math.floor(ms / 60_000));
  if (m < 60) return `${m}m`;
  if (m < 48 * 60) return `${Math.floor(m / 60)}h`;
  return `${Math.floor(m / 1440)}d`;
}

const userOf = (principal: string | null) => (principal ? principal.replace(/^user:/, '') : '-');
const oneLine = (s: string, n: number) => {
  const t = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
};
const topReasons = (m: QuarantinedMessage, n = 3) =>
  [...m.reasons].sort((a, b) => b.weight - a.weight).slice(0, n);

async function list(ctx: Ctx, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, user: { type: 'string' }, state: { type: 'string' } } });
  const msgs = await (await ctx.store()).quarantine.list({ states: states(values.state), principal: await principalOf(ctx, values.user) });
  const now = Date.now();
  const rows = await Promise.all(msgs.map(async (m) => ({ m, h: await summarize(m.header) })));
  if (values.json) {
    printJson(
      ctx.io,
      rows.map(({ m, h }) => ({
        id: m.id,
        state: m.state,
        age_seconds: Math.floor((now - m.receivedAt) / 1000),
        received: iso(m.receivedAt),
        held: m.heldAt === null ? null : iso(m.heldAt),
        principal: m.principal,
        user: m.principal?.startsWith('user:') ? m.principal.slice(5) : null,
        envelope_from: m.mailFrom,
        from: h.from,
        recipients: m.rcptTo,
        subject: h.subject,
        size: m.size,
        score: m.score,
        reasons: m.reasons,
      })),
    );
    return 0;
  }
  if (!rows.length) {
    const what = values.state === 'all' ? 'held or waiting' : (values.state ?? 'held');
    ctx.io.stdout(`no ${what} messages${values.user ? ` of ${values.user}` : ''}\n`);
    return 0;
  }
  const out = [['ID', 'AGE', 'USER', 'FROM', 'RCPTS', 'SCORE', 'SUBJECT', 'REASONS']];
  for (const { m, h } of rows) {
    out.push([
      m.id,
      age(now - m.receivedAt),
      userOf(m.principal),
      oneLine(h.from || m.mailFrom || '<>', 40),
      String(m.rcptTo.length),
      m.score === null ? '-' : String(m.score),
      oneLine(h.subject, 40),
      topReasons(m).map((r) => r.id).join(',') || (m.state === 'held' ? '-' : m.state),
    ]);
  }
  ctx.io.stdout(table(out) + `${rows.length} message${rows.length === 1 ? '' : 's'}\n`);
  return 0;
}

async function show(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { raw: { type: 'boolean' }, json: { type: 'boolean' } } });
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new UsageError(`postern quarantine show needs one message id\n\n${QUARANTINE_HELP}`);
  const store = await ctx.store();
  const m = await store.quarantine.get(id);
  if (!m) {
    const d = await store.quarantine.decision(id);
    throw new CliError(d ? `message ${id} was ${d.action} on ${iso(d.at)} by ${d.actor}` : `no such message: ${id} (see: postern quarantine list)`);
  }
  const body = await store.queue.body(id) ?? Buffer.alloc(0);
  if (values.raw) {
    if (ctx.io.stdoutBytes) ctx.io.stdoutBytes(body);
    else ctx.io.stdout(body.toString('utf8'));
    return 0;
  }
  const mail = await simpleParser(body, { skipImageLinks: true, skipTextToHtml: true, skipTextLinks: true });
  const preview = (mail.text ?? '').split(/\r?\n/).slice(0, 30).join('\n').slice(0, 3000).trimEnd();
  const headers = m.header.toString('utf8').trimEnd();
  if (values.json) {
    printJson(ctx.io, {
      id: m.id,
      state: m.state,
      principal: m.principal,
      received: iso(m.receivedAt),
      held: m.heldAt === null ? null : iso(m.heldAt),
      size: m.size,
      envelope: { from: m.mailFrom, to: m.rcptTo },
      score: m.score,
      reasons: m.reasons,
      headers,
      preview,
    });
    return 0;
  }
  const lines = [
    `id:        ${m.id}`,
    `state:     ${m.state}`,
    `principal: ${m.principal ?? '-'}`,
    `received:  ${iso(m.receivedAt)} (${age(Date.now() - m.receivedAt)} ago)`,
    `size:      ${m.size}`,
    `envelope from: <${m.mailFrom}>`,
    `envelope to:   ${m.rcptTo.map((r) => `<${r}>`).join(', ')}`,
    `score:     ${m.score ?? '-'}`,
    'reasons:',
    ...(m.reasons.length ? m.reasons.map((r) => `  ${String(r.weight).padStart(4)}  ${r.id}${r.detail ? `  ${r.detail}` : ''}`) : ['  -']),
    '',
    'headers:',
    ...headers.split(/\r?\n/).map((l) => `  ${l}`),
    '',
    'preview:',
    ...(preview ? preview.split('\n').map((l) => `  ${l}`) : ['  (no text part)']),
    '',
  ];
  ctx.io.stdout(lines.join('\n'));
  return 0;
}

async function decide(ctx: Ctx, verb: 'release' | 'delete', args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { all: { type: 'boolean' }, user: { type: 'string' }, state: { type: 'string' }, by: { type: 'string' }, reason: { type: 'string' } },
  });
  let ids = positionals.includes('-') ? [...positionals.filter((p) => p !== '-'), ...(await ctx.io.stdin()).split(/\s+/)] : positionals;
  ids = [...new Set(ids.filter(Boolean))];
  const store = await ctx.store();
  if (values.all) {
    if (ids.length) throw new UsageError(`postern quarantine ${verb}: give ids or --all, not both`);
    ids = (await store.quarantine.list({ states: states(values.state), principal: await principalOf(ctx, values.user) })).map((m) => m.id);
    if (!ids.length) {
      ctx.io.stdout(`no ${values.state ?? 'held'} messages${values.user ? ` of ${values.user}` : ''}\n`);
      return 0;
    }
  } else if (values.user !== undefined) {
    // A bulk action must be asked for in so many words (house rule 9).
    throw new UsageError(`postern quarantine ${verb} --user ${values.user} acts on all of the user's held mail: add --all`);
  } else if (!ids.length) {
    throw new UsageError(`postern quarantine ${verb} needs message ids, - (ids on stdin) or --user NAME --all\n\n${QUARANTINE_HELP}`);
  }
  // No log line here: the CLI prints text, and the audit row written with each decision
  // reaches the server's log as an admin.action event (obs/admin-log.ts).
  const by = { actor: actor(values.by, ctx.io.env), reason: values.reason ?? null };
  let failed = 0;
  for (const id of ids) {
    let m: DecidedMessage;
    try {
      m = verb === 'release' ? await store.quarantine.release(id, { ...by, now: Date.now() }) : await store.quarantine.delete(id, { ...by, now: Date.now() });
    } catch (e) {
      if (!(e instanceof QuarantineError)) throw e;
      ctx.io.stderr(`postern: ${e.message}${e.message.startsWith('no such') ? ' (see: postern quarantine list)' : ''}\n`);
      failed++;
      continue;
    }
    ctx.io.stdout(verb === 'release' ? `message ${m.id} released to the delivery queue\n` : `message ${m.id} deleted\n`);
  }
  return failed ? 1 : 0;
}
