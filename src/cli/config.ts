import { parseArgs } from 'node:util';
import { checkConfigFile } from '../config/check.js';
import { parseConfig } from '../config/load.js';
import { redact, tomlKey, tomlValue } from '../config/problems.js';
import { printJson, UsageError, type Ctx } from './io.js';

export const CONFIG_HELP = `Usage: postern config check [--json]
       postern config show [--all] [--json]

check  reads the config file as "serve" would and lists every problem, one per line: the
       key, its value, what is wrong and what to do. Beyond TOML syntax, the schema, the
       checks between keys and the HELO guard, it reads tls.cert and tls.key and checks
       they are one pair, that server.data_dir can be written (or created), that the
       files geo.country_db and geo.asn_db name can be read (not loaded), and that every
       listen address (submission.listen, submission.listen_tls, metrics.listen) is free:
       while the relay runs, its own addresses are in use. Run it as the user the relay
       runs as. Exit 0 with one OK line, 1 when anything is wrong.
show   the effective config as "section.key = value" lines, like postconf -n: the keys
       whose value differs from the default, or every key with --all. Relative paths are
       shown resolved; passwords (in store.url, limits.redis) show as (redacted).

Examples:
  postern --config /etc/postern/postern.toml config check
  sudo -u postern node /opt/postern/bin/postern.js config check    # as the service user
  postern config show
  postern config show --all --json | jq .submission
`;

export async function configCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'check') return check(ctx, rest);
  if (sub === 'show') return show(ctx, rest);
  throw new UsageError(`${sub === undefined ? 'postern config needs check or show' : `unknown config command: ${sub}`}\n\n${CONFIG_HELP}`);
}

async function check(ctx: Ctx, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } } });
  const unprivileged = process.getuid?.() !== 0;
  const r = await checkConfigFile(ctx.configPath ?? ctx.io.env.POSTERN_CONFIG, { unprivileged });
  if (values.json) {
    printJson(ctx.io, { file: r.file, ok: r.problems.length === 0, problems: r.problems.map(({ key, value, problem, fix, message }) => ({ key, value, problem, fix, message })), notes: r.notes });
    return r.problems.length ? 1 : 0;
  }
  for (const p of r.problems) ctx.io.stdout(`${p.message}\n`);
  for (const n of r.notes) ctx.io.stderr(`postern: note: ${n}\n`);
  if (r.problems.length) {
    const n = r.problems.length;
    ctx.io.stderr(`postern: ${n} problem${n === 1 ? '' : 's'} in ${r.file}\n`);
    return 1;
  }
  const { certificate, dataDir, listen } = r.checked;
  ctx.io.stdout(`OK: ${r.file} (certificate ${certificate}; data_dir ${dataDir}; ${listen.length ? `listening on ${listen.join(', ')}` : 'no listen addresses'})\n`);
  return 0;
}

/** Every leaf of the config as [path segments, value]; an empty table is a leaf. */
function leaves(v: unknown, at: string[] = []): Array<[string[], unknown]> {
  if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) {
    return Object.entries(v).flatMap(([k, x]) => leaves(x, [...at, k]));
  }
  return [[at, v]];
}

function show(ctx: Ctx, args: string[]): number {
  const { values } = parseArgs({ args, options: { all: { type: 'boolean' }, json: { type: 'boolean' } } });
  const cfg = ctx.config();
  const defaults = new Map(leaves(parseConfig({}, '/')).map(([at, v]) => [at.join('\0'), JSON.stringify(v)]));
  const rows = leaves(cfg)
    .filter(([at, v]) => values.all || defaults.get(at.join('\0')) !== JSON.stringify(v))
    .map(([at, v]) => ({ at, key: at.map(tomlKey).join('.'), value: redact(at.join('.'), v) }));
  if (values.json) {
    const out: Record<string, unknown> = {};
    for (const { at, value } of rows) {
      let o = out;
      for (const k of at.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
      o[at.at(-1)!] = value;
    }
    printJson(ctx.io, out);
    return 0;
  }
  ctx.io.stdout(rows.map((r) => `${r.key} = ${tomlValue(r.value)}\n`).join(''));
  return 0;
}
