import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { User } from '../domain/types.js';
import { NO_PASSWORD } from '../identity/passwords.js';
import type { AuditDetail, NewAuditEntry } from '../store/audit.js';
import type { Store } from '../store/index.js';
import { UserExistsError } from '../store/users.js';
import { asnsArg, countriesArg, networksArg, refuseV6OnlyEverywhere, sendersArg } from './bindings.js';
import { actor, CliError, printJson, UsageError, type Ctx } from './io.js';
import { notifyAddressArg, userNameArg } from './user.js';

export const IMPORT_HELP = `Usage: postern user import FILE|- [--dry-run] [--json] [--by NAME] [--reason TEXT]

Adds and updates users from FILE (- reads standard input), all or nothing: if any line is
refused, nothing is written and every refused line is listed (line N: NAME: why). Otherwise
one transaction applies the file, with an audit entry (user.import) for each user added or
changed; a user the file leaves as it was is not written at all, so a re-import is harmless.

Each line is the state one user should be in. A kind of binding the line names (a column or
key, even an empty one) is replaced by exactly its values; kinds it does not name are left
alone, and so are time-limited exceptions (user allow --for). notify is set when given. A
new user needs a sender and a place (network, country or ASN), as with user add, and has no
password yet: under [auth] backend = "local" set one with postern user passwd NAME.

CSV: a header line names the columns: name (required), senders, networks, countries, asns,
notify. Values in one cell are separated by spaces, ";" or ","; quote a cell with "..." (RFC 4180).
JSON lines (when the first line starts with "{"): one object per line with those keys; a list
may also be a single string, and null is the same as leaving the key out.
Blank lines and lines starting with # are skipped. An unknown column or key is refused.

  name,senders,networks,countries,notify
  alice,alice@example.com,192.0.2.0/24,DE,alice@home.example
  {"name": "bob", "senders": ["bob@example.com"], "asns": [3320]}

Examples:
  postern user import staff.csv --dry-run
  postern user import staff.csv --by helpdesk-bob --reason "ticket 4711"
  ldap-export | postern user import - --json
`;

const FIELDS = ['senders', 'networks', 'countries', 'asns'] as const;
type Field = (typeof FIELDS)[number];
const KIND = { senders: 'sender', networks: 'network', countries: 'country', asns: 'asn' } as const;
const CHECK: Record<Field, (v: string[]) => string[]> = { senders: (v) => sendersArg(v), networks: networksArg, countries: countriesArg, asns: asnsArg };
const COLUMNS = ['name', ...FIELDS, 'notify'];
type Lists = Partial<Record<Field, string[]>>;

/** One line of the file as read, its values not yet checked; `error` when it could not be read. */
interface Entry {
  line: number;
  name: string | null;
  lists: Lists;
  notify: string | null;
  error?: string;
}

interface Refusal {
  line: number;
  name: string | null;
  error: string;
}

/** What the import does to one user. */
interface Step {
  line: number;
  name: string;
  /** null: a new user. */
  user: User | null;
  /** The line's values of each kind it names (checked, canonical). */
  lists: Lists;
  /** The kinds whose permanent bindings change (a user already there). */
  changed: Field[];
  /** A notification address to set (null: leave it). */
  notify: string | null;
}

/** Several values in one cell or string: "a@x.example b@x.example", "DE;AT", "DE, AT". */
const split = (s: string) => s.split(/[\s;,]+/).filter(Boolean);

/**
 * CSV records (RFC 4180: "..." quoting, "" for a quote, line breaks inside quotes) with the
 * line each starts on. Blank and # lines between records are skipped. After a record that
 * cannot be read the rest would be guesswork: reading stops there.
 */
function csvRecords(text: string): Array<{ line: number; cells: string[]; error?: string }> {
  const out: Array<{ line: number; cells: string[]; error?: string }> = [];
  const n = text.length;
  let i = 0;
  let line = 1;
  while (i < n) {
    const eol = text.indexOf('\n', i);
    const physical = text.slice(i, eol < 0 ? n : eol).trim();
    if (!physical || physical.startsWith('#')) {
      i = eol < 0 ? n : eol + 1;
      line++;
      continue;
    }
    const start = line;
    const cells: string[] = [];
    for (;;) {
      while (text[i] === ' ' || text[i] === '\t') i++;
      let cell = '';
      if (text[i] === '"') {
        i++;
        for (;;) {
          if (i >= n) {
            out.push({ line: start, cells, error: 'a quoted cell is not closed (a " is missing)' });
            return out;
          }
          if (text[i] === '"') {
            if (text[i + 1] !== '"') break;
            i++;
          } else if (text[i] === '\n') line++;
          cell += text[i++];
        }
        i++;
        while (text[i] === ' ' || text[i] === '\t' || text[i] === '\r') i++;
        if (i < n && text[i] !== ',' && text[i] !== '\n') {
          out.push({ line: start, cells, error: `text after the closing quote of cell ${cells.length + 1} (a quote inside a quoted cell is written "")` });
          return out;
        }
      } else {
        const next = text.slice(i).search(/[,\n]/);
        const end = next < 0 ? n : i + next;
        cell = text.slice(i, end);
        i = end;
      }
      cells.push(cell.trim());
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (i < n) {
        i++;
        line++;
      }
      break;
    }
    out.push({ line: start, cells });
  }
  return out;
}

function fromCsv(text: string, label: string): Entry[] {
  const [header, ...records] = csvRecords(text);
  if (!header) return [];
  const refuse = (why: string) => new CliError(`${label} line ${header.line}: ${why}: nothing was written (the columns are: ${COLUMNS.join(', ')})`);
  if (header.error) throw refuse(header.error);
  const columns = header.cells.map((c) => c.toLowerCase());
  const unknown = columns.filter((c) => !COLUMNS.includes(c));
  if (unknown.length) throw refuse(`unknown column${unknown.length > 1 ? 's' : ''} ${unknown.map((c) => JSON.stringify(c)).join(', ')}`);
  const twice = columns.find((c, k) => columns.indexOf(c) !== k);
  if (twice) throw refuse(`the column "${twice}" is named twice`);
  if (!columns.includes('name')) throw refuse('the header names no "name" column (is the first line a header?)');
  return records.map((r): Entry => {
    const cell = (c: string) => r.cells[columns.indexOf(c)];
    const name = cell('name') || null;
    if (r.error) return { line: r.line, name, lists: {}, notify: null, error: r.error };
    if (r.cells.length !== columns.length) {
      return { line: r.line, name, lists: {}, notify: null, error: `${r.cells.length} cell${r.cells.length === 1 ? '' : 's'} where the header (line ${header.line}) names ${columns.length} columns` };
    }
    const lists: Lists = {};
    for (const f of FIELDS) if (columns.includes(f)) lists[f] = split(cell(f)!);
    return { line: r.line, name, lists, notify: cell('notify') || null };
  });
}

function fromJsonLines(text: string): Entry[] {
  const out: Entry[] = [];
  text.split('\n').forEach((raw, k) => {
    const t = raw.trim();
    if (!t || t.startsWith('#')) return;
    const entry: Entry = { line: k + 1, name: null, lists: {}, notify: null };
    out.push(entry);
    let v: unknown;
    try {
      v = JSON.parse(t);
    } catch (e) {
      entry.error = `not valid JSON (${(e as Error).message})`;
      return;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      entry.error = 'not a JSON object: give one {"name": ...} per line';
      return;
    }
    const o = v as Record<string, unknown>;
    if (typeof o.name === 'string') entry.name = o.name.trim() || null;
    const unknown = Object.keys(o).filter((key) => !COLUMNS.includes(key));
    if (unknown.length) {
      entry.error = `unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((key) => JSON.stringify(key)).join(', ')} (the keys are: ${COLUMNS.join(', ')})`;
      return;
    }
    if (o.name !== undefined && typeof o.name !== 'string') {
      entry.error = '"name" must be a string';
      return;
    }
    for (const f of FIELDS) {
      const x = o[f];
      if (x === undefined || x === null) continue;
      const items = Array.isArray(x) ? x : [x];
      if (!items.every((y) => typeof y === 'string' || (typeof y === 'number' && f === 'asns'))) {
        entry.error = `"${f}" must be a list of strings${f === 'asns' ? ' or numbers' : ''}, or one string`;
        return;
      }
      entry.lists[f] = items.flatMap((y) => split(String(y)));
    }
    if (o.notify !== undefined && o.notify !== null && typeof o.notify !== 'string') {
      entry.error = '"notify" must be a string (one address)';
      return;
    }
    entry.notify = (o.notify as string | null | undefined)?.trim() || null;
  });
  return out;
}

/** The file's lines: JSON lines when the first line that is not blank or a comment starts with "{", else CSV. */
export function parseImport(text: string, label: string): Entry[] {
  const body = text.replace(/^\uFEFF/, '');
  const first = body.split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
  return first?.startsWith('{') ? fromJsonLines(body) : fromCsv(body, label);
}

const sameSet = (a: string[], b: string[]) => a.length === b.length && new Set([...a, ...b]).size === a.length;

/**
 * Compares each line with the user as stored (inside the import's transaction) and decides
 * what it changes; a line that cannot be applied is refused with why.
 */
async function plan(st: Store, entries: Entry[], now: number): Promise<{ steps: Step[]; refused: Refusal[] }> {
  const steps: Step[] = [];
  const refused: Refusal[] = [];
  const users = new Map((await st.users.list()).map((u) => [u.username.toLowerCase(), u]));
  const named = new Set(entries.map((e) => e.name?.toLowerCase()));
  const bindings = await st.bindings.listMany('user', [...users].filter(([key]) => named.has(key)).map(([, u]) => u.id), now);
  const seen = new Map<string, number>();
  for (const e of entries) {
    const refuse = (error: string) => refused.push({ line: e.line, name: e.name, error });
    if (e.error) {
      refuse(e.error);
      continue;
    }
    if (!e.name) {
      refuse('no name given');
      continue;
    }
    try {
      const name = userNameArg(e.name);
      const lists: Lists = {};
      for (const f of FIELDS) if (e.lists[f]) lists[f] = [...new Set(CHECK[f](e.lists[f]))];
      const notify = e.notify === null ? null : notifyAddressArg(e.notify);
      const key = name.toLowerCase();
      const earlier = seen.get(key);
      if (earlier !== undefined) {
        refuse(`also on line ${earlier}: name each user once`);
        continue;
      }
      seen.set(key, e.line);
      const user = users.get(key) ?? null;
      const current = (user && bindings.get(user.id)) || [];
      const permanent = (f: Field) => current.filter((b) => b.kind === KIND[f] && b.expiresAt === null).map((b) => b.value);
      const after = (f: Field) => lists[f] ?? permanent(f);
      if (lists.networks) refuseV6OnlyEverywhere(lists.networks, [...lists.networks, ...current.filter((b) => b.kind === 'network' && b.expiresAt !== null).map((b) => b.value)]);
      // As user add: a user without a sender or a place to log in from could not send. For
      // a user already there, only a line that names those kinds can take them all away.
      const noSender = (!user || lists.senders) && !after('senders').length;
      const placesNamed = !user || lists.networks || lists.countries || lists.asns;
      const noPlace = placesNamed && !after('networks').length && !after('countries').length && !after('asns').length;
      if (noSender || noPlace) {
        const missing = [noSender && 'a sender', noPlace && 'a place (networks, countries or asns)'].filter(Boolean).join(' and ');
        refuse(user ? `the line leaves ${name} without ${missing}: ${name} could not send` : `a new user needs ${missing}: without ${noSender && noPlace ? 'them' : 'it'} ${name} could not send`);
        continue;
      }
      const changed = user ? FIELDS.filter((f) => lists[f] && !sameSet(lists[f], permanent(f))) : [];
      steps.push({ line: e.line, name: user?.username ?? name, user, lists, changed, notify: notify !== null && notify !== user?.notifyAddress ? notify : null });
    } catch (err) {
      if (!(err instanceof CliError)) throw err;
      refuse(err.message);
    }
  }
  return { steps, refused };
}

const isChange = (s: Step) => s.user === null || s.changed.length > 0 || s.notify !== null;

/**
 * Writes the steps that change something, each with its audit entry; the caller's transaction
 * makes it all or nothing. New users and all bindings go in bulk: on PostgreSQL a verb per
 * user and binding would cost a round trip each, seconds for a thousand users.
 */
async function apply(st: Store, steps: Step[], now: number, audit: (name: string, detail: AuditDetail) => NewAuditEntry): Promise<void> {
  const todo = steps.filter(isChange);
  const fresh = todo.filter((s) => s.user === null);
  const made = await st.users.addMany(fresh.map((s) => ({ username: s.name, passwordHash: NO_PASSWORD, notifyAddress: s.notify })), now);
  const ids = new Map(fresh.map((s, k) => [s, made[k]!.id]));
  const sets: Array<{ id: number; kind: (typeof KIND)[Field]; values: string[] }> = [];
  for (const s of todo) {
    const kinds = s.user ? s.changed : FIELDS.filter((f) => s.lists[f]?.length);
    for (const f of kinds) sets.push({ id: s.user?.id ?? ids.get(s)!, kind: KIND[f], values: s.lists[f]! });
    if (s.user && s.notify) await st.users.setNotifyAddress(s.user.id, s.notify, now);
  }
  // A value bound now as a time-limited exception becomes permanent; other exceptions stay.
  await st.bindings.setPermanent('user', sets, now);
  const entries = todo.map((s) => {
    const detail: AuditDetail =
      s.user === null
        ? { change: 'added', line: s.line, ...Object.fromEntries(FIELDS.map((f) => [f, s.lists[f] ?? []])), notify: s.notify }
        : { change: 'changed', line: s.line, ...Object.fromEntries(s.changed.map((f) => [f, s.lists[f]])), ...(s.notify ? { notify: s.notify } : {}) };
    return audit(s.name, detail);
  });
  await st.audit.recordMany(entries);
}

async function readInput(ctx: Ctx, file: string): Promise<string> {
  if (file === '-') return ctx.io.stdin();
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as { code?: string }).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
    throw new CliError(`cannot read ${file}: ${why} (give a CSV or JSON-lines file, or - for standard input)`);
  }
}

export async function userImport(ctx: Ctx, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, by: { type: 'string' }, reason: { type: 'string' } },
  });
  const [file, extra] = positionals;
  if (file === undefined) throw new UsageError(`postern user import needs a FILE (or - for standard input)\n\n${IMPORT_HELP}`);
  if (extra !== undefined) throw new UsageError(`postern user import takes one FILE, got also ${JSON.stringify(extra)}\n\n${IMPORT_HELP}`);
  const label = file === '-' ? 'stdin' : file;
  const dryRun = Boolean(values['dry-run']);
  const entries = parseImport(await readInput(ctx, file), label);
  const now = Date.now();
  const who = actor(values.by, ctx.io.env);
  const reason = values.reason ?? null;
  const st = await ctx.store();
  let result: { steps: Step[]; refused: Refusal[] };
  try {
    // Read and write in one transaction: the comparison is with the rows the writes replace.
    result = await st.tx(async () => {
      const r = await plan(st, entries, now);
      if (!r.refused.length && !dryRun) {
        await apply(st, r.steps, now, (name, detail) => ({ at: now, actor: who, action: 'user.import', target: `user:${name}`, detail, reason }));
      }
      return r;
    });
  } catch (e) {
    if (e instanceof UserExistsError) throw new CliError(`${e.message}: it was added while the import ran; nothing of ${label} was written: run the import again`);
    throw e;
  }
  const { steps, refused } = result;
  const added = steps.filter((s) => s.user === null).length;
  const changed = steps.filter((s) => s.user !== null && isChange(s)).length;
  const unchanged = steps.length - added - changed;
  // Under "dovecot" the password is the directory's; under "local" nobody can log in as a new user yet.
  const withoutPassword = ctx.config().auth.backend === 'local' ? added : 0;
  if (values.json) {
    printJson(ctx.io, { added, changed, unchanged, refused, dry_run: dryRun, without_password: withoutPassword });
  } else {
    for (const r of refused) ctx.io.stderr(`line ${r.line}: ${r.name ?? '-'}: ${r.error}\n`);
    const written = refused.length ? ': nothing was written (correct the refused lines and run the import again)' : dryRun ? ' (dry run: nothing was written)' : '';
    ctx.io.stdout(`import ${label}: ${added} added, ${changed} changed, ${unchanged} unchanged, ${refused.length} refused${written}\n`);
    if (withoutPassword && !refused.length) {
      ctx.io.stdout(`${withoutPassword} new user${withoutPassword === 1 ? ' has' : 's have'} no password yet and cannot log in until one is set: postern user passwd NAME\n`);
    }
  }
  return refused.length ? 1 : 0;
}
