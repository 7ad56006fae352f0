import { parseArgs } from 'node:util';
import { DkimKeyExistsError, generateDkimKey, txtZoneLine } from '../delivery/dkim.js';
import { CliError, printJson, UsageError, type Ctx } from './io.js';

export const DKIM_HELP = `Usage: postern dkim keygen DOMAIN --selector SELECTOR [--json]

  keygen    create an RSA-2048 signing key in data_dir/dkim/DOMAIN/SELECTOR.key and print
            the DNS TXT record to publish; mail whose From: is in DOMAIN is signed with the
            newest key of DOMAIN from then on, so publish the record before sending

Example:
  postern dkim keygen example.com --selector pst2026
`;

export function dkimCommand(ctx: Ctx, argv: string[]): number {
  const [sub, ...rest] = argv;
  if (sub !== 'keygen') throw new UsageError(sub ? `unknown command: dkim ${sub}\n\n${DKIM_HELP}` : DKIM_HELP);
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { selector: { type: 'string' }, json: { type: 'boolean' } } });
  const domain = positionals[0]?.toLowerCase().replace(/\.$/, '');
  if (!domain || !values.selector) throw new UsageError(`postern dkim keygen needs a DOMAIN and --selector\n\n${DKIM_HELP}`);
  let key;
  try {
    key = generateDkimKey(ctx.config().server.data_dir, domain, values.selector);
  } catch (e) {
    if (e instanceof DkimKeyExistsError) throw new CliError(`a key for selector ${values.selector} of ${domain} already exists (${e.message}): choose a new selector to rotate`);
    throw new CliError((e as Error).message);
  }
  if (values.json) printJson(ctx.io, { domain, selector: values.selector, key_file: key.path, txt_name: key.name, txt_value: key.value });
  else ctx.io.stdout(`key written to ${key.path}\npublish this DNS record:\n\n${txtZoneLine(key.name, key.value)}\n`);
  return 0;
}
