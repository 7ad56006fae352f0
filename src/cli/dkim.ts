import { parseArgs } from 'node:util';
import type { Config } from '../config/schema.js';
import { newDkimKey, txtZoneLine } from '../delivery/dkim.js';
import { storedDkimKey } from '../dns/local.js';
import { dkimStates, DkimKeyExistsError, type DkimKey } from '../store/dkim.js';
import { actor, CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';

export const DKIM_HELP = `Usage: postern dkim COMMAND [options]

  keygen DOMAIN --selector SELECTOR [--json]
            create an RSA-2048 signing key in the store (shared by every node), inactive:
            mail goes on being signed as before. Prints the DNS TXT record to publish
  activate DOMAIN SELECTOR [--force] [--by NAME] [--reason TEXT]
            make that key sign DOMAIN's mail (From: in DOMAIN), once DNS publishes it:
            looks up SELECTOR._domainkey.DOMAIN through [delivery] dns_servers (else the
            system's resolvers) and refuses while the record is missing or holds another
            key; --force switches anyway. Every node signs with it within a minute. The
            key that signed before is kept, retired: activate it again to roll back.
            Audited as dkim.activate on dkim:DOMAIN (--by: default your login name)
  list [--json]
            every key in the store: domain, selector, state, when it was made and last
            activated. signing: signs DOMAIN's mail now (the key activated last);
            retired: signed before; inactive: never activated

Rotating a key: keygen a new selector, publish its record, see it pass in postern doctor,
activate it, and keep the old selector's record published for a few days so mail in
transit still verifies.

Keys in data_dir/dkim/DOMAIN/SELECTOR.key (PKCS#8 PEM, where keygen wrote before) are
imported into the store when the relay starts, active as of the file's modification time:
put there on purpose, they sign as they did before. The files are left in place.

Run as root on the SQLite store, a dkim command warns when data_dir belongs to another
user: the database files SQLite creates there would be root's, and the relay could not
open them. Run it as that user instead (sudo -u OWNER postern dkim ...).

Examples:
  postern dkim keygen example.com --selector pst2026
  postern doctor --domain example.com
  postern dkim activate example.com pst2026
  postern dkim list
`;

export async function dkimCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'keygen') return keygen(ctx, rest);
  if (sub === 'activate') return activate(ctx, rest);
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
  const store = await ctx.store();
  try {
    await store.dkim.add(made.key);
  } catch (e) {
    if (e instanceof DkimKeyExistsError) throw new CliError(`${e.message} in the store: choose a new selector to rotate (see: postern dkim list)`);
    throw e;
  }
  const { key } = made;
  const signing = await store.dkim.signing(key.domain);
  // key_file stays in the JSON for scripts written when keys were files: the key is in the store now.
  if (values.json) printJson(ctx.io, { domain: key.domain, selector: key.selector, state: 'inactive', stored: 'store', key_file: null, txt_name: made.name, txt_value: made.value });
  else {
    const now = signing ? `mail from ${key.domain} is still signed with selector ${signing.selector}` : `mail from ${key.domain} stays unsigned until it is activated`;
    ctx.io.stdout(
      `key stored for selector ${key.selector} of ${key.domain}, inactive: ${now}\n` +
        `1. publish this DNS record:\n\n${txtZoneLine(made.name, made.value)}\n\n` +
        `2. check that DNS has it: postern doctor --domain ${key.domain}\n` +
        `3. switch signing to it: postern dkim activate ${key.domain} ${key.selector}\n`,
    );
  }
  return 0;
}

async function list(ctx: Ctx, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } } });
  const keys = await (await ctx.store()).dkim.list();
  const states = dkimStates(keys);
  if (values.json) {
    printJson(
      ctx.io,
      // signing (true when state is "signing") stays for scripts written before keys had states.
      keys.map((k, i) => ({ domain: k.domain, selector: k.selector, state: states[i], created: iso(k.createdAt), activated: k.activatedAt === null ? null : iso(k.activatedAt), signing: states[i] === 'signing' })),
    );
  } else if (!keys.length) {
    ctx.io.stdout('no DKIM keys (create one: postern dkim keygen DOMAIN --selector SELECTOR)\n');
  } else {
    ctx.io.stdout(table([['DOMAIN', 'SELECTOR', 'STATE', 'CREATED', 'ACTIVATED'], ...keys.map((k, i) => [k.domain, k.selector, states[i]!, iso(k.createdAt), iso(k.activatedAt)])]));
  }
  return 0;
}

async function activate(ctx: Ctx, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { force: { type: 'boolean' }, by: { type: 'string' }, reason: { type: 'string' } },
  });
  if (positionals.length !== 2) throw new UsageError(`postern dkim activate needs a DOMAIN and a SELECTOR\n\n${DKIM_HELP}`);
  const domain = positionals[0]!.toLowerCase().replace(/\.$/, '');
  const selector = positionals[1]!.toLowerCase();
  const store = await ctx.store();
  const keys = (await store.dkim.list()).filter((k) => k.domain === domain);
  const key = keys.find((k) => k.selector === selector);
  if (!key) {
    const have = keys.length ? `${domain} has ${keys.map((k) => k.selector).join(', ')}` : `${domain} has no keys`;
    throw new CliError(`no key for selector ${selector} of ${domain} in the store (${have}; see: postern dkim list, or make one: postern dkim keygen ${domain} --selector ${selector})`);
  }
  if (dkimStates(keys)[keys.indexOf(key)] === 'signing') {
    ctx.io.stdout(`selector ${selector} already signs for ${domain}: nothing changed\n`);
    return 0;
  }
  const problem = await recordProblem(ctx.config(), key);
  if (problem && !values.force) throw new CliError(`not activated: ${problem}\n\nOnce the record is published, run this again (postern doctor --domain ${domain} shows what DNS answers), or add --force to switch anyway`);
  if (problem) ctx.io.stderr(`postern: warning: activating anyway (--force): ${problem}\n`);
  const done = await store.dkim.activate(domain, selector, { actor: actor(values.by, ctx.io.env), reason: values.reason ?? null, now: Date.now(), forced: problem !== null });
  if (done.outcome === 'not-found') throw new CliError(`the key for selector ${selector} of ${domain} is gone from the store (see: postern dkim list)`);
  if (done.outcome === 'already-signing') {
    ctx.io.stdout(`selector ${selector} already signs for ${domain}: nothing changed\n`);
    return 0;
  }
  const before = done.previous
    ? `selector ${done.previous} is retired (to roll back: postern dkim activate ${domain} ${done.previous}); keep its record published for a few days, for mail in transit`
    : `${domain} was not signed before`;
  ctx.io.stdout(`selector ${selector} of ${domain} activated: it signs ${domain}'s mail from now on, on every node within a minute; ${before}\n`);
  return 0;
}

/**
 * The doctor's DKIM check for one stored key (dns/checks/domain.ts dkimRecord): null when DNS
 * publishes its public half, else what was found and the record to publish.
 */
async function recordProblem(cfg: Config, key: DkimKey): Promise<string | null> {
  // Loaded here: only activate asks DNS (and the public-suffix list comes with the checks).
  const [{ dkimRecord }, { doctorDns }, { createResolver }] = await Promise.all([import('../dns/checks/domain.js'), import('../dns/lookup.js'), import('../dns/resolver.js')]);
  const servers = cfg.delivery.dns_servers;
  const via = servers.length ? `[delivery] dns_servers ${servers.join(', ')}` : "the system's resolvers";
  const name = `${key.selector}._domainkey.${key.domain}`;
  let r;
  try {
    r = await dkimRecord(doctorDns(createResolver(servers)), storedDkimKey(key));
  } catch (e) {
    const code = (e as { code?: string }).code;
    return `could not look up the TXT record of ${name} through ${via}${code ? ` (${code})` : ''}: ${(e as Error).message}`;
  }
  if (r.state === 'published') return null;
  if (r.state === 'unusable') throw new CliError(`not activated: ${r.reason}`);
  const found = r.found.map((t) => JSON.stringify(t)).join(', ');
  const what = {
    missing: `${name} has no DKIM record${found ? `, only TXT ${found}` : ''} (asked ${via}): receivers could not verify a single signature`,
    revoked: `${name} publishes a revoked key, ${found} (asked ${via}): every signature would fail`,
    different: `${name} publishes another key than the stored one, ${found} (asked ${via}): every signature would fail`,
  }[r.state];
  return `${what}. Publish:\n\n${r.fix}`;
}
