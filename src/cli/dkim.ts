import { parseArgs } from 'node:util';
import { newDkimKey, txtZoneLine } from '../delivery/dkim.js';
import { DkimKeyExistsError } from '../store/dkim.js';
import { CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const DKIM_HELP = `Usage: postern dkim COMMAND [options]

  keygen DOMAIN --selector SELECTOR [--json]
            create an RSA-2048 signing key in the store (shared by every node) and print
            the DNS TXT record to publish; mail whose From: is in DOMAIN is signed with the
            newest key of DOMAIN from then on (within a minute), so publish the record first
  list [--json]
            every key in the store: domain, selector, when it was made, and which one signs

Keys in data_dir/dkim/DOMAIN/SELECTOR.key (PKCS#8 PEM, where keygen wrote before) are
imported into the store when the relay starts; the files are left in place.

Examples:
  postern dkim keygen example.com --selector pst2026
  postern dkim list
`;

export async function dkimCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'keygen') return keygen(ctx, rest);
  if (sub === 'list') return list(ctx, rest);
  throw new UsageError(sub ? `unknown command: dkim ${sub}\n\n${DKIM_HELP}` : DKIM_HELP);
}

async function keygen(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { selector: { type: 'string' }, json: { type: 'boolean' } } });
  const domain = positionals[0]?.toLowerCase().replace(/\.$/, '');
  if (!domain || !values.selector) throw new UsageError(`postern dkim keygen needs a DOMAIN and --selector\n\n${DKIM_HELP}`);
  let made;
  try {
    made = newDkimKey(domain, values.selector, Date.now());
  } catch (e) {
    throw new CliError(`${(e as Error).message} (postern dkim keygen DOMAIN --selector SELECTOR)`);
  }
  try {
    await (await ctx.store()).dkim.add(made.key);
  } catch (e) {
    if (e instanceof DkimKeyExistsError) throw new CliError(`${e.message} in the store: choose a new selector to rotate (see: postern dkim list)`);
    throw e;
  }
  const { key } = made;
  // key_file stays in the JSON for scripts written when keys were files: the key is in the store now.
  if (values.json) printJson(ctx.io, { domain: key.domain, selector: key.selector, stored: 'store', key_file: null, txt_name: made.name, txt_value: made.value });
  else ctx.io.stdout(`key stored for selector ${key.selector} of ${key.domain}\npublish this DNS record:\n\n${txtZoneLine(made.name, made.value)}\n`);
  return 0;
}

async function list(ctx: Ctx, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } } });
  const keys = await (await ctx.store()).dkim.list();
  // list() is newest first within a domain: the first of each domain signs.
  const signs = (i: number) => i === 0 || keys[i - 1]!.domain !== keys[i]!.domain;
  if (values.json) {
    printJson(
      ctx.io,
      keys.map((k, i) => ({ domain: k.domain, selector: k.selector, created: iso(k.createdAt), signing: signs(i) })),
    );
  } else if (!keys.length) {
    ctx.io.stdout('no DKIM keys (create one: postern dkim keygen DOMAIN --selector SELECTOR)\n');
  } else {
    ctx.io.stdout(table([['DOMAIN', 'SELECTOR', 'CREATED', 'SIGNING'], ...keys.map((k, i) => [k.domain, k.selector, iso(k.createdAt), signs(i) ? 'yes' : 'no'])]));
  }
  return 0;
}
