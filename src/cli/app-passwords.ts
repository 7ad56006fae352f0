import { parseArgs } from 'node:util';
import { generateAppPassword, hashPassword } from '../identity/passwords.js';
import { placesOf, type LoginPlaces } from '../policy/places.js';
import { AppPasswordExistsError, type AppPassword } from '../store/app-passwords.js';
import type { Store } from '../store/index.js';
import { asnsArg, countriesArg, networksArg, refuseV6OnlyEverywhere } from './bindings.js';
import { actor, CliError, iso, many, printJson, table, UsageError, type Ctx } from './io.js';

export const APP_PASSWORD_HELP = `Usage: postern user password COMMAND [options]

App passwords: one per device (a phone, a tablet), generated, shown once. Each logs in as its
user and sends as the user's senders; one with places of its own (--network, --country,
--asn) may log in only from those, one without from the user's. A login from elsewhere
suspends the user like the main password would, and the incident names the app password.
Revoking one leaves the others and the main password as they are.

  add NAME --label LABEL [--network CIDR] [--country CC] [--asn N] [--json]
                                   generate one and print it once
  list NAME [--json]               labels, places, created, last used (never the secret)
  revoke NAME LABEL --reason TEXT  remove one; its sessions' cached logins are dropped
Changes are audited (--by NAME, default the OS user; --reason TEXT).

Examples:
  postern user password add alice --label phone --country DE --asn 3320
  postern user password revoke alice phone --reason "phone lost"
`;

const LABEL_RE = /^[a-z0-9][a-z0-9._-]{0,31}$/i;

type Places = LoginPlaces;

const ownPlaces = async (st: Store, a: AppPassword, now: number): Promise<Places> => placesOf(await st.bindings.list('app-password', a.id, now));

const placesText = (p: Places) => {
  const parts = [...p.networks, ...p.countries, ...p.asns.map((n) => `AS${n}`)];
  return parts.length ? parts.join(',') : "the user's";
};

export async function appPasswordCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub) throw new UsageError(APP_PASSWORD_HELP);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      label: { type: 'string' },
      network: { type: 'string', multiple: true },
      country: { type: 'string', multiple: true },
      asn: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      by: { type: 'string' },
      reason: { type: 'string' },
    },
  });
  const name = positionals[0];
  if (!['add', 'list', 'revoke'].includes(sub)) throw new UsageError(`unknown command: user password ${sub}\n\n${APP_PASSWORD_HELP}`);
  if (!name) throw new UsageError(`postern user password ${sub} needs a user name\n\n${APP_PASSWORD_HELP}`);
  const st = await ctx.store();
  const user = await st.users.find(name);
  if (!user) throw new CliError(`no such user: ${name} (see: postern user list)`);
  const now = Date.now();
  const audit = (action: string, detail: Record<string, unknown>) =>
    st.audit.record({ at: now, actor: actor(values.by, ctx.io.env), action, target: `user:${user.username}`, detail, reason: values.reason ?? null });

  switch (sub) {
    case 'add': {
      const label = values.label;
      if (!label) throw new UsageError(`postern user password add ${user.username} needs --label LABEL (what the device is: phone, tablet)\n\n${APP_PASSWORD_HELP}`);
      if (!LABEL_RE.test(label)) throw new CliError(`invalid label ${JSON.stringify(label)}: use letters, digits and . _ - (at most 32), e.g. phone`);
      const places = { networks: networksArg(many(values.network)), countries: countriesArg(many(values.country)), asns: asnsArg(many(values.asn)) };
      refuseV6OnlyEverywhere(places.networks, places.networks);
      const { publicId, password } = generateAppPassword();
      const cfg = ctx.config();
      const hash = await hashPassword(password, { memoryCost: cfg.auth.argon2_memory_kib, timeCost: cfg.auth.argon2_time_cost, parallelism: cfg.auth.argon2_parallelism });
      let added: AppPassword;
      try {
        added = await st.tx(async (t) => {
          const a = await t.appPasswords.add(user.id, label, publicId, hash, now);
          for (const [kind, list] of [['network', places.networks], ['country', places.countries], ['asn', places.asns]] as const) {
            for (const v of list) await t.bindings.add('app-password', a.id, kind, v, now);
          }
          await audit('user.app_password.add', { label: a.label, ...places });
          return a;
        });
      } catch (e) {
        if (e instanceof AppPasswordExistsError) throw new CliError(`${user.username} already has an app password labelled ${label} (see: postern user password list ${user.username}; to replace it, revoke it first)`);
        throw e;
      }
      if (values.json) {
        printJson(ctx.io, { user: user.username, label: added.label, password, ...places, created: iso(added.createdAt) });
      } else {
        ctx.io.stdout(`app password ${added.label} for ${user.username} (shown once): ${password}\n`);
        ctx.io.stdout(`it logs in as ${user.username} from ${placesText(places) === "the user's" ? `${user.username}'s places` : placesText(places)}\n`);
      }
      return 0;
    }
    case 'list': {
      const apps = await st.appPasswords.list(user.id);
      const rows = await Promise.all(apps.map(async (a) => ({ a, p: await ownPlaces(st, a, now) })));
      if (values.json) {
        printJson(
          ctx.io,
          rows.map(({ a, p }) => ({ label: a.label, ...p, created: iso(a.createdAt), last_used: a.lastUsedAt === null ? null : iso(a.lastUsedAt) })),
        );
      } else if (!rows.length) {
        ctx.io.stdout(`${user.username} has no app passwords (add one: postern user password add ${user.username} --label phone)\n`);
      } else {
        ctx.io.stdout(table([['LABEL', 'PLACES', 'CREATED', 'LAST USED'], ...rows.map(({ a, p }) => [a.label, placesText(p), iso(a.createdAt), iso(a.lastUsedAt)])]));
      }
      return 0;
    }
    default: {
      const label = positionals[1];
      if (!label) throw new UsageError(`postern user password revoke ${user.username} needs the LABEL (see: postern user password list ${user.username})`);
      if (!values.reason) throw new UsageError(`postern user password revoke ${user.username} ${label} needs --reason "..." (it goes into the audit log)`);
      const a = await st.appPasswords.find(user.id, label);
      if (!a) throw new CliError(`${user.username} has no app password labelled ${label} (see: postern user password list ${user.username})`);
      await st.tx(async (t) => {
        await t.appPasswords.revoke(a.id, now);
        await audit('user.app_password.revoke', { label: a.label });
      });
      ctx.io.stdout(`app password ${a.label} of ${user.username} revoked\n`);
      return 0;
    }
  }
}
