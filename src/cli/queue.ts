import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { QUEUE_STATES, type QueuedMessage, type QueueState } from '../domain/types.js';
import { ownerNode } from '../store/shared.js';
import { MessageNotFoundError, MessageStateError, type ChangedMessage, type RecipientState } from '../store/delivery.js';
import type { Store } from '../store/index.js';
import type { QuarantinedMessage } from '../store/quarantine.js';
import { CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const QUEUE_HELP = `Usage: postern queue COMMAND [options]

Reading:
  list [--state STATE] [--json]    messages in the spool with each recipient's delivery state,
                                   the node that accepted each one and the node delivering it
                                   now (STATE: ${QUEUE_STATES.join(', ')})
  show ID [--raw] [--json]         one message: envelope, state and why, attempts, each
                                   recipient's state and last error, the headers and size;
                                   --raw writes the message exactly as stored (postcat -q)
Changing (ids on stdin with -; hold, retry --ignore-quota and delete are recorded in the
audit log under --by, default your login name, with --reason):
  retry ID... | - | --all          try queued messages now
  retry --ignore-quota ID... | -   send messages waiting for quota now, outside the rate limit
                                   (audited)
  hold ID... | -                   stop delivery (postsuper -h): queued or waiting messages go
                                   to held with the reason admin-hold; an attempt already
                                   under way finishes. postern quarantine release ID sends them
  delete ID... | - | ALL | --all   remove messages for good, without a DSN (audited); ALL (in
                                   capitals) or --all removes every message in the spool

Examples:
  postern queue list --json | jq -r '.[] | select(.state == "queued") | .id'
  postern queue show 0RZ4K8W2MBCDFGH --raw > message.eml
  postern queue hold 0RZ4K8W2MBCDFGH --reason "customer says the invoice is wrong"
  postern queue retry --ignore-quota 0RZ4K8W2MBCDFGH --reason "board meeting papers"
  postern queue delete 0RZ4K8W2MBCDFGH --reason "phishing run from a stolen account"
`;

/** JSON's "not yet" (or never): null, where the text listing prints "-". */
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));

/** Who is making a change, for the audit log: --by NAME, else the admin behind sudo, else the login name. */
const actorOf = (ctx: Ctx, by: string | undefined) => by ?? ctx.io.env.SUDO_USER ?? userInfo().username;

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
    case 'show':
      return show(ctx, rest);
    case 'retry':
      return retry(ctx, rest);
    case 'hold':
      return hold(ctx, rest);
    case 'delete':
      return remove(ctx, rest);
    default:
      throw new UsageError(sub ? `unknown command: queue ${sub}\n\n${QUEUE_HELP}` : QUEUE_HELP);
  }
}

async function list(ctx: Ctx, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, state: { type: 'string' } } });
  const state = values.state as QueueState | undefined;
  if (state !== undefined && !QUEUE_STATES.includes(state)) throw new UsageError(`unknown state ${state}: use one of ${QUEUE_STATES.join(', ')}`);
  const store = await ctx.store();
  const now = Date.now();
  const msgs = await Promise.all((await store.queue.list(state)).map(async (m) => ({ m, rcpts: await store.delivery.recipients(m.id) })));
  // A claim counts while it has not lapsed: a node that died holds nothing.
  if (values.json) {
    printJson(ctx.io, msgs.map(({ m, rcpts }) => messageJson(m, rcpts, now)));
  } else if (!msgs.length) {
    ctx.io.stdout(state ? `no ${state} messages\n` : 'queue is empty\n');
  } else {
    // A recipient's row under its message: address, state, tries, last try, next try, then
    // its status and last error in columns of their own at the end.
    const rows = [['ID', 'STATE', 'SIZE', 'RECEIVED', 'NEXT TRY', 'FROM', 'ACCEPTED BY', 'DELIVERING', 'STATUS', 'LAST ERROR']];
    for (const { m, rcpts } of msgs) {
      rows.push([m.id, m.state, String(m.size), iso(m.receivedAt), iso(m.nextAttemptAt), m.mailFrom || '<>', m.acceptedBy ?? '-', delivering(m, now) ?? '-']);
      for (const r of rcpts) {
        rows.push([`  ${r.address}`, rcptState(r), `${r.attempts} tries`, iso(r.lastAttemptAt), iso(rcptNext(m, r)), '', '', '', r.statusCode ?? '-', ...lastError(r)]);
      }
    }
    ctx.io.stdout(table(rows) + `${msgs.length} message${msgs.length === 1 ? '' : 's'}\n`);
  }
  return 0;
}

// A claim counts while it has not lapsed: a node that died holds nothing.
const delivering = (m: QueuedMessage, now: number) => (m.claimOwner && (m.claimUntil ?? 0) > now ? ownerNode(m.claimOwner) : null);

/** Recipients still to do share their message's next attempt. */
const rcptNext = (m: QueuedMessage, r: RecipientState) => (r.status === 'pending' ? m.nextAttemptAt : null);

/** The LAST ERROR cell: the remote reply on one line of at most 100 characters; none (no trailing blanks) without one. */
const lastError = (r: RecipientState) => (r.lastError ? [r.lastError.replace(/\s+/g, ' ').trim().slice(0, 100)] : []);

/** A message and its recipients as queue list --json and queue show --json give them. */
function messageJson(m: QueuedMessage, rcpts: RecipientState[], now: number) {
  return {
    id: m.id,
    state: m.state,
    from: m.mailFrom,
    principal: m.principal,
    client_ip: m.clientIp,
    size: m.size,
    received: iso(m.receivedAt),
    attempts: m.attempts,
    next_attempt: isoOrNull(m.nextAttemptAt),
    accepted_by: m.acceptedBy,
    delivering_node: delivering(m, now),
    recipients: rcpts.map((r) => ({
      address: r.address,
      state: rcptState(r),
      attempts: r.attempts,
      last_attempt: isoOrNull(r.lastAttemptAt),
      next_attempt: isoOrNull(rcptNext(m, r)),
      status: r.statusCode,
      remote_mta: r.remoteMta,
      // The last attempt's TLS: {version, verified, policy}; null before any connection.
      tls: r.lastTls,
      last_error: r.lastError,
    })),
  };
}

async function show(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { raw: { type: 'boolean' }, json: { type: 'boolean' } } });
  const id = positionals[0];
  if (!id || positionals.length > 1) throw new UsageError(`postern queue show needs one message id\n\n${QUEUE_HELP}`);
  if (values.raw && values.json) throw new UsageError('postern queue show: --raw or --json, not both');
  const store = await ctx.store();
  if (values.raw) {
    // The bytes as accepted (the store holds them; nothing in data_dir), for a mail client or a diff.
    const body = await store.queue.body(id);
    if (!body) throw new CliError(await missing(store, id));
    if (ctx.io.stdoutBytes) ctx.io.stdoutBytes(body);
    else ctx.io.stdout(body.toString('utf8'));
    return 0;
  }
  const [m, q, rcpts] = [await store.queue.get(id), await store.quarantine.get(id), await store.delivery.recipients(id)];
  // Gone between the reads (delivered, deleted): as if it had never been there.
  if (!m || !q) throw new CliError(await missing(store, id));
  const now = Date.now();
  const headers = q.header.toString('utf8').trimEnd();
  if (values.json) {
    printJson(ctx.io, { ...messageJson(m, rcpts, now), held: isoOrNull(q.heldAt), score: q.score, reasons: q.reasons, why: why(m, q, now), headers });
    return 0;
  }
  const node = delivering(m, now);
  const lines = [
    `id:           ${m.id}`,
    `state:        ${m.state} (${why(m, q, now)})`,
    `from:         <${m.mailFrom}>`,
    `principal:    ${m.principal ?? '-'}`,
    `client ip:    ${m.clientIp}`,
    `accepted by:  ${m.acceptedBy ?? '-'}`,
    `received:     ${iso(m.receivedAt)}`,
    `size:         ${m.size} bytes`,
    ...(q.heldAt === null ? [] : [`held since:   ${iso(q.heldAt)}`]),
    `attempts:     ${m.attempts}`,
    `next attempt: ${iso(m.nextAttemptAt)}`,
    `delivering:   ${node ? `${node} (claim until ${iso(m.claimUntil)})` : '-'}`,
    ...(q.score === null && !q.reasons.length
      ? []
      : [`score:        ${q.score ?? '-'}`, 'reasons:', ...(q.reasons.length ? q.reasons.map((r) => `  ${String(r.weight).padStart(4)}  ${r.id}${r.detail ? `  ${r.detail}` : ''}`) : ['  -'])]),
    '',
    'recipients:',
    ...table([
      ['ADDRESS', 'STATE', 'TRIES', 'LAST TRY', 'NEXT TRY', 'STATUS', 'LAST ERROR'],
      ...rcpts.map((r) => [r.address, rcptState(r), String(r.attempts), iso(r.lastAttemptAt), iso(rcptNext(m, r)), r.statusCode ?? '-', ...lastError(r)]),
    ])
      .trimEnd()
      .split('\n')
      .map((l) => `  ${l}`),
    '',
    'headers:',
    ...headers.split(/\r?\n/).map((l) => `  ${l}`),
    '',
    `(the body is not shown: postern queue show ${m.id} --raw writes the whole message, ${m.size} bytes)`,
    '',
  ];
  ctx.io.stdout(lines.join('\n'));
  return 0;
}

/** Why a message is in its state, and what moves it on. */
function why(m: QueuedMessage, q: QuarantinedMessage, now: number): string {
  if (m.state === 'held') {
    const reasons = [...q.reasons].sort((a, b) => b.weight - a.weight).map((r) => r.id);
    return `${reasons.join(', ') || 'held'}; nothing is sent until postern quarantine release ${m.id}`;
  }
  if (m.state === 'waiting-quota') {
    const [kind, name] = m.principal ? [m.principal.slice(0, m.principal.indexOf(':')), m.principal.slice(m.principal.indexOf(':') + 1)] : [null, null];
    const usage = name === null ? '' : ` (postern limits show ${name}${kind === 'device' ? ' --device' : ''})`;
    return `over ${m.principal ?? 'its sender'}'s rate limit; it leaves, oldest first, as quota frees${usage}, or now with postern queue retry --ignore-quota ${m.id}`;
  }
  const node = delivering(m, now);
  if (node) return `being delivered by ${node}`;
  if (m.nextAttemptAt === null || m.nextAttemptAt <= now) return 'due now';
  return `next attempt at ${iso(m.nextAttemptAt)} (postern queue retry ${m.id} makes it due now)`;
}

/** Why an id names no message: never was, or gone (delivered, deleted by an admin or by expiry). */
async function missing(store: Store, id: string): Promise<string> {
  const d = await store.quarantine.decision(id);
  if (d && d.action !== 'released') return `message ${id} was ${d.action} on ${iso(d.at)} by ${d.actor}`;
  return `no such message: ${id} (delivered mail leaves the spool; see: postern queue list, postern audit)`;
}

async function retry(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { all: { type: 'boolean' }, 'ignore-quota': { type: 'boolean' }, by: { type: 'string' }, reason: { type: 'string' } },
  });
  const list = await ids(ctx, positionals);
  const ignoreQuota = Boolean(values['ignore-quota']);
  if (!values.all && !list.length) throw new UsageError(`postern queue retry needs message ids, - (ids on stdin) or --all\n\n${QUEUE_HELP}`);
  if (values.all && list.length) throw new UsageError('postern queue retry: give ids or --all, not both');
  // Setting every principal's rate limit aside at once is not a retry: name the messages, or
  // release one user's waiting mail on purpose.
  if (values.all && ignoreQuota) {
    throw new UsageError('postern queue retry --ignore-quota takes message ids, not --all (for all of one user\'s waiting mail: postern quarantine release --user NAME --all --state waiting-quota)');
  }
  const store = await ctx.store();
  const by = { actor: actorOf(ctx, values.by), reason: values.reason ?? null };
  let n = 0;
  let failed = 0;
  if (values.all) n = await store.delivery.retry('all', Date.now());
  for (const id of list) {
    const problem = await retryOne(ctx, store, id, ignoreQuota, by);
    if (problem === null) n++;
    else {
      ctx.io.stderr(`postern: ${problem}\n`);
      failed++;
    }
  }
  const what = `${n} message${n === 1 ? '' : 's'}`;
  const aside = values.all ? ' (held and waiting ones are not retried)' : '';
  if (ctx.config().delivery.enabled) ctx.io.stdout(`${what} will be tried now${aside}\n`);
  else {
    // The schedule is the store's, so the change stands; but this config's relay sends nothing.
    ctx.io.stdout(`${what} due now${aside}\n`);
    ctx.io.stderr('postern: delivery is disabled in the config ([delivery] enabled = false): nothing is sent until it is set to true and postern serve restarted\n');
  }
  return failed ? 1 : 0;
}

/** Makes one message due now; null when done, else what stood in the way and what would work. */
async function retryOne(ctx: Ctx, store: Store, id: string, ignoreQuota: boolean, by: { actor: string; reason: string | null }): Promise<string | null> {
  const m = await store.queue.get(id);
  if (m?.state === 'queued' && (await store.delivery.retry([id], Date.now())) === 1) return null;
  if (m?.state === 'waiting-quota' && ignoreQuota) {
    try {
      const c = await store.delivery.ignoreQuota(id, { ...by, now: Date.now() });
      ctx.io.stdout(`message ${id} leaves the quota wait: sent outside ${c.principal ?? 'its sender'}'s rate limit (audited)\n`);
      return null;
    } catch (e) {
      if (!(e instanceof MessageNotFoundError || e instanceof MessageStateError)) throw e;
    }
  }
  // Read again: the state may have moved since (delivered, released, held).
  const cur = await store.quarantine.get(id);
  if (!cur) return missing(store, id);
  if (cur.state === 'held') {
    const reasons = [...cur.reasons].sort((a, b) => b.weight - a.weight).map((r) => r.id);
    return `message ${id} is held${reasons.length ? ` (${reasons.join(', ')})` : ''}: postern quarantine release ${id} sends it`;
  }
  if (cur.state === 'waiting-quota') {
    return `message ${id} is waiting for quota (${cur.principal ?? 'its sender'}'s rate limit): postern queue retry --ignore-quota ${id} sends it now, audited; or raise the limit with postern user limits`;
  }
  return `message ${id} could not be retried (it is ${cur.state} now): see postern queue show ${id}`;
}

async function hold(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { by: { type: 'string' }, reason: { type: 'string' } } });
  const list = await ids(ctx, positionals);
  if (!list.length) throw new UsageError(`postern queue hold needs message ids (or - for ids on stdin)\n\n${QUEUE_HELP}`);
  const store = await ctx.store();
  const by = { actor: actorOf(ctx, values.by), reason: values.reason ?? null };
  let failed = 0;
  for (const id of list) {
    let m: ChangedMessage;
    const now = Date.now();
    try {
      m = await store.delivery.hold(id, { ...by, now });
    } catch (e) {
      if (e instanceof MessageNotFoundError) ctx.io.stderr(`postern: ${await missing(store, id)}\n`);
      else if (e instanceof MessageStateError) ctx.io.stderr(`postern: message ${id} is already held (see: postern quarantine show ${id})\n`);
      else throw e;
      failed++;
      continue;
    }
    // An attempt under way cannot be recalled (Postfix, too, holds a message after its delivery
    // attempt): it finishes, what it delivers stays delivered, and no further attempt starts.
    const live = m.claimOwner !== null && (m.claimUntil ?? 0) > now;
    const note = live ? `; ${ownerNode(m.claimOwner!)} is delivering it now: that attempt finishes, and what it delivers stays delivered` : '';
    ctx.io.stdout(`message ${id} held${note} (postern quarantine release ${id} sends it on)\n`);
  }
  return failed ? 1 : 0;
}

async function remove(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { all: { type: 'boolean' }, by: { type: 'string' }, reason: { type: 'string' } },
  });
  // Every message at once must be asked for in so many words (postsuper -d ALL): "all" in any
  // other case could be a slip of the keyboard, or a variable that expanded to the word.
  const slip = positionals.find((p) => p !== 'ALL' && p.toLowerCase() === 'all');
  if (slip !== undefined) throw new UsageError(`postern queue delete ${slip}: to delete every message in the spool type ALL in capitals, or use --all`);
  const all = Boolean(values.all) || positionals.includes('ALL');
  const list = all ? positionals.filter((p) => p !== 'ALL') : await ids(ctx, positionals);
  if (all && list.length) throw new UsageError('postern queue delete: give ids or ALL (--all), not both');
  if (!all && !list.length) throw new UsageError(`postern queue delete needs message ids, - (ids on stdin), or ALL\n\n${QUEUE_HELP}`);
  const store = await ctx.store();
  const by = { actor: actorOf(ctx, values.by), reason: values.reason ?? null };
  if (all) {
    // One transaction, an audit row per message (who sent what is on record, as for one id).
    const gone = await store.delivery.deleteAll({ ...by, now: Date.now() });
    const n = gone.length;
    ctx.io.stdout(n ? `${n} message${n === 1 ? '' : 's'} deleted (${n === 1 ? '' : 'each '}recorded in the audit log)\n` : 'queue is empty: nothing deleted\n');
    return 0;
  }
  let failed = 0;
  for (const id of list) {
    try {
      await store.delivery.deleteAudited(id, { ...by, now: Date.now() });
      ctx.io.stdout(`message ${id} deleted\n`);
    } catch (e) {
      if (!(e instanceof MessageNotFoundError)) throw e;
      ctx.io.stderr(`postern: no such message: ${id} (see: postern queue list)\n`);
      failed++;
    }
  }
  return failed ? 1 : 0;
}
