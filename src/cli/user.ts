import { parseArgs } from 'node:util';
import type { Config } from '../config/schema.js';
import { USERNAME_RE } from '../domain/names.js';
import type { PrincipalRef, User } from '../domain/types.js';
import type { AppPassword } from '../store/app-passwords.js';
import type { Binding } from '../store/bindings.js';
import { generatePassword, hashPassword, NO_PASSWORD, passwordProblem } from '../identity/passwords.js';
import { canonicalAddress } from '../policy/bindings.js';
import { loginDetailParts } from '../policy/places.js';
import { UserExistsError } from '../store/users.js';
import { appPasswordCommand } from './app-passwords.js';
import { asnsArg, countriesArg, networksArg, notifyWarning, refuseV6OnlyEverywhere, sendersArg } from './bindings.js';
import { userLimits } from './limits.js';
import { suspendPrincipal } from '../notify/incidents.js';
import { actor, CliError, iso, many, parseDuration, printJson, table, UsageError, type Ctx } from './io.js';

export const USER_HELP = `Usage: postern user COMMAND [options]

Reading:
  list [--json]                          all users
  show NAME [--json]                     one user: status, networks, senders, notices, incidents
Changing (audited: --by NAME, default the OS user; --reason TEXT):
  add NAME --sender ADDR --network CIDR|--country CC|--asn N [--notify ADDR] [--password-stdin]
                                         create a user; without --password-stdin a strong
                                         password is generated and printed once
  allow NAME [--sender ADDR] [--network CIDR] [--country CC] [--asn N] [--for 7d]
                                         bind more senders or places; --for makes a
                                         time-limited exception that lapses by itself
  deny NAME [--sender ADDR] [--network CIDR] [--country CC] [--asn N]
                                         remove bindings
  notify NAME ADDR                       set the address notices about NAME go to
  passwd NAME [--password-stdin]         set a new password (cached logins are dropped)
  reset NAME [--password-stdin] [--revoke-app-passwords]
                                         after a compromise: new password, suspension
                                         lifted, open incidents resolved; app passwords
                                         stay unless --revoke-app-passwords. With
                                         auth.backend = "dovecot" no password is set: the
                                         one a compromise caught stays refused until the
                                         user changes it in the directory
                                         (--clear-compromised: it was a false alarm)
  password add|list|revoke ...           app passwords (one per device, own places):
                                         see postern user password --help
  import FILE|- [--dry-run] [--json]      add or update many users from CSV or JSON lines, all or
                                         nothing (see: postern user import --help)
  limits NAME [--messages-per-hour N] [--recipients-per-hour N] [--recipients-per-day N]
                                         NAME's own rate limits (see: postern limits --help)
  suspend NAME --reason TEXT             stop NAME from sending
  unsuspend NAME --reason TEXT [--clear-compromised]
                                         lift a suspension (a false alarm), same password
  delete NAME                            remove a user

Senders are addresses (alice@example.com) or whole domains (@example.com). A login is
allowed from the user's places: networks (CIDRs), countries (ISO 3166-1 codes: DE, AT) and
the networks of providers (autonomous system numbers: 3320). For people who travel, bind the
countries they work in and their providers rather than 0.0.0.0/0 and ::/0 (everywhere,
which switches the check off). Repeat a flag or separate values with commas.

Examples:
  postern user add alice --sender alice@example.com --network 192.0.2.0/24 --notify alice@home.example
  postern user add bob --sender bob@example.com --country DE --asn 3320
  postern user allow alice --country PT --for 7d --reason "conference in Lisbon"
  postern user reset alice --by helpdesk-bob --reason "phished, ticket 4711"
`;


/** A user name as `user add` takes it (user import too), or CliError saying what is allowed. */
export function userNameArg(n: string): string {
  if (!USERNAME_RE.test(n)) throw new CliError(`invalid user name ${JSON.stringify(n)}: use letters, digits and . _ @ + - (at most 64)`);
  return n;
}

/** A notification address in its canonical form (user import too), or CliError. */
export function notifyAddressArg(raw: string): string {
  const a = canonicalAddress(raw);
  if (!a) throw new CliError(`bad notification address ${JSON.stringify(raw)}: use one address such as alice@home.example`);
  return a;
}

function params(cfg: Config) {
  return { memoryCost: cfg.auth.argon2_memory_kib, timeCost: cfg.auth.argon2_time_cost, parallelism: cfg.auth.argon2_parallelism };
}

async function newPassword(ctx: Ctx, fromStdin: boolean): Promise<{ password: string; generated: boolean }> {
  if (!fromStdin) return { password: generatePassword(), generated: true };
  const text = await ctx.io.stdin();
  const password = text.replace(/\r?\n$/, '');
  const problem = passwordProblem(password);
  if (problem) throw new CliError(problem);
  return { password, generated: false };
}

async function mustFind(ctx: Ctx, name: string): Promise<User> {
  const u = await (await ctx.store()).users.find(name);
  if (!u) throw new CliError(`no such user: ${name} (see: postern user list)`);
  return u;
}

/** What `user list` fetched for every user at once (four queries, not four per user). */
interface Prefetched {
  bindings: Map<number, Binding[]>;
  apps: Map<number, AppPassword[]>;
  compromised: Map<number, number>;
  openIncidents: Map<PrincipalRef, number>;
}

async function prefetch(ctx: Ctx, users: User[], now: number): Promise<Prefetched> {
  const st = await ctx.store();
  const ids = users.map((u) => u.id);
  const [bindings, apps, compromised, open] = await Promise.all([
    st.bindings.listMany('user', ids, now),
    st.appPasswords.listMany(ids),
    st.credentials.countCompromisedMany(ids),
    st.incidents.countOpenMany(users.map((u) => u.principalRef)),
  ]);
  return { bindings, apps, compromised, openIncidents: open };
}

async function describe(ctx: Ctx, u: User, now: number, pre?: Prefetched) {
  const st = await ctx.store();
  const bindings = pre?.bindings.get(u.id) ?? (await st.bindings.list('user', u.id, now));
  const show = (kind: string) =>
    bindings.filter((b) => b.kind === kind).map((b) => (b.expiresAt ? `${b.value} (until ${iso(b.expiresAt)})` : b.value));
  const senders = bindings.filter((b) => b.kind === 'sender').map((b) => b.value);
  return {
    name: u.username,
    status: u.status,
    status_reason: u.statusReason,
    suspended: u.suspendedAt === null ? null : iso(u.suspendedAt),
    notify: u.notifyAddress ?? senders.find((s) => !s.startsWith('@')) ?? null,
    networks: show('network'),
    countries: show('country'),
    asns: show('asn'),
    senders: show('sender'),
    app_passwords: (pre?.apps.get(u.id) ?? (await st.appPasswords.list(u.id))).map((a) => a.label),
    // "directory": Dovecot checks it; "none": an imported user the admin has not given one yet.
    password: ctx.config().auth.backend === 'dovecot' ? 'directory' : u.passwordHash === NO_PASSWORD ? 'none' : 'set',
    compromised_passwords: pre ? (pre.compromised.get(u.id) ?? 0) : await st.credentials.countCompromised(u.id, u.username),
    open_incidents: pre ? (pre.openIncidents.get(u.principalRef) ?? 0) : (await st.incidents.list({ principal: u.principalRef, open: true })).length,
    created: iso(u.createdAt),
    updated: iso(u.updatedAt),
  };
}

/** What stays after a suspension is lifted: the directory password the compromise caught. */
function refusedPasswordNote(name: string, n: number): string {
  return `the ${n === 1 ? 'password' : `${n} passwords`} seen in a compromise stay${n === 1 ? 's' : ''} refused for sending until ${name} changes it in the directory (IMAP is not affected); if it was a false alarm: postern user reset ${name} --clear-compromised\n`;
}

/**
 * `user reset` when the directory holds the password: Postern cannot set a new one, so the
 * reset lifts the suspension and resolves the incidents, and the password the compromise
 * caught stays refused (its fingerprint stays) until the user changes it in the directory.
 */
async function resetDirectoryUser(ctx: Ctx, u: User, o: { now: number; by: string; reason: string | null; revokeApps: boolean; clear: boolean }): Promise<number> {
  const st = await ctx.store();
  const done = await st.tx(async () => {
    const lifted = await st.users.unsuspend(u.id, o.now);
    // Ends the user's cached logins on every node (the epoch moves) even when nothing was
    // suspended: a phished user calls before any signal fired. The directory holds the
    // password, so Postern keeps none of its own (a hash from the local backend goes too).
    await st.users.setPassword(u.id, NO_PASSWORD, o.now);
    const resolved = await st.incidents.resolveOpen(u.principalRef, o.by, o.now);
    const revoked = o.revokeApps ? await st.appPasswords.revokeAll(u.id, o.now) : 0;
    const cleared = o.clear ? await st.credentials.forgetCompromised(u.id, u.username) : 0;
    await st.audit.record({
      at: o.now,
      actor: o.by,
      action: 'user.reset',
      target: `user:${u.username}`,
      detail: { suspension_lifted: lifted, incidents_resolved: resolved, app_passwords_revoked: revoked, compromised_passwords_cleared: cleared },
      reason: o.reason,
    });
    return { lifted, resolved, revoked, cleared };
  });
  const apps = o.revokeApps ? `, ${done.revoked} app password${done.revoked === 1 ? '' : 's'} revoked` : '';
  const cleared = o.clear ? `, ${done.cleared} refused password${done.cleared === 1 ? '' : 's'} cleared` : '';
  ctx.io.stdout(`user ${u.username} reset: ${done.lifted ? 'suspension lifted' : 'was not suspended'}, ${done.resolved} open incident${done.resolved === 1 ? '' : 's'} resolved${apps}${cleared}; the password is the directory's (not changed by Postern)\n`);
  const kept = await st.credentials.countCompromised(u.id, u.username);
  if (kept) ctx.io.stdout(refusedPasswordNote(u.username, kept));
  return 0;
}

export async function userCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'limits') return userLimits(ctx, rest);
  if (sub === 'password') return appPasswordCommand(ctx, rest);
  if (sub === 'import') return (await import('./import.js')).userImport(ctx, rest);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      json: { type: 'boolean' },
      'password-stdin': { type: 'boolean' },
      sender: { type: 'string', multiple: true },
      network: { type: 'string', multiple: true },
      country: { type: 'string', multiple: true },
      asn: { type: 'string', multiple: true },
      'revoke-app-passwords': { type: 'boolean' },
      'clear-compromised': { type: 'boolean' },
      notify: { type: 'string' },
      for: { type: 'string' },
      by: { type: 'string' },
      reason: { type: 'string' },
    },
  });
  const name = positionals[0];
  const needName = () => {
    if (!name) throw new UsageError(`postern user ${sub} needs a user name\n\n${USER_HELP}`);
    return name;
  };
  const now = Date.now();
  const who = actor(values.by, ctx.io.env);
  const reason = values.reason ?? null;
  const audit = async (action: string, target: string, detail: Record<string, unknown> | null) =>
    (await ctx.store()).audit.record({ at: now, actor: who, action, target: `user:${target}`, detail, reason });
  const tx = async <T>(fn: () => Promise<T>): Promise<T> => (await ctx.store()).tx(fn);
  // [auth] backend = "dovecot": passwords are the directory's; Postern neither sets nor knows them.
  const directory = ctx.config().auth.backend === 'dovecot';
  if (directory && values['password-stdin']) {
    throw new UsageError(`postern user ${sub}: --password-stdin has no use with auth.backend = "dovecot": passwords are the directory's (change them there)`);
  }
  if (values['clear-compromised'] && sub !== 'reset' && sub !== 'unsuspend') throw new UsageError('--clear-compromised goes with reset or unsuspend');
  const notifyArg = (): string | null => (values.notify === undefined ? null : notifyAddressArg(values.notify));

  switch (sub) {
    case 'add': {
      const n = userNameArg(needName());
      const senders = sendersArg(many(values.sender));
      const networks = networksArg(many(values.network));
      const countries = countriesArg(many(values.country));
      const asns = asnsArg(many(values.asn));
      refuseV6OnlyEverywhere(networks, networks);
      // A user without senders or places cannot send, and the natural retry with the flags
      // would then meet "already exists": ask for both before anything is written.
      const placed = networks.length + countries.length + asns.length > 0;
      if (!senders.length || !placed) {
        const missing = [!senders.length && '--sender ADDR', !placed && '--network CIDR (or --country CC, --asn N)'].filter(Boolean).join(' and ');
        throw new UsageError(`postern user add ${n} needs ${missing}: without ${senders.length || placed ? 'it' : 'them'} ${n} could not send`);
      }
      const notify = notifyArg();
      const { password, generated } = directory ? { password: '', generated: false } : await newPassword(ctx, Boolean(values['password-stdin']));
      const hash = directory ? NO_PASSWORD : await hashPassword(password, params(ctx.config()));
      const st = await ctx.store();
      try {
        await tx(async () => {
          const u = await st.users.add(n, hash, now);
          for (const s of senders) await st.bindings.add('user', u.id, 'sender', s, now);
          for (const net of networks) await st.bindings.add('user', u.id, 'network', net, now);
          for (const c of countries) await st.bindings.add('user', u.id, 'country', c, now);
          for (const a of asns) await st.bindings.add('user', u.id, 'asn', a, now);
          if (notify) await st.users.setNotifyAddress(u.id, notify, now);
          await audit('user.add', n, { senders, networks, countries, asns, notify });
        });
      } catch (e) {
        if (e instanceof UserExistsError) {
          const passwd = directory ? '' : `to change the password: postern user passwd ${n}; `;
          throw new CliError(`user ${n} already exists (${passwd}to bind more senders or places: postern user allow ${n} --sender ADDR --network CIDR)`);
        }
        throw e;
      }
      ctx.io.stdout(
        directory
          ? `user ${n} added; it logs in with its directory password (auth.backend = "dovecot")\n`
          : generated
            ? `user ${n} added; password (shown once): ${password}\n`
            : `user ${n} added\n`,
      );
      const warn = notifyWarning(n, notify ?? senders.find((s) => !s.startsWith('@')) ?? null, senders);
      if (warn) ctx.io.stderr(warn);
      return 0;
    }
    case 'allow':
    case 'deny': {
      const u = await mustFind(ctx, needName());
      const senders = sendersArg(many(values.sender));
      const networks = networksArg(many(values.network));
      const countries = countriesArg(many(values.country));
      const asns = asnsArg(many(values.asn));
      if (!senders.length && !networks.length && !countries.length && !asns.length) throw new UsageError(`postern user ${sub} needs --sender, --network, --country or --asn\n\n${USER_HELP}`);
      if (values.for && sub === 'deny') throw new UsageError('--for goes with allow');
      const expires = values.for ? now + parseDuration(values.for) : null;
      const st = await ctx.store();
      if (sub === 'allow') refuseV6OnlyEverywhere(networks, [...networks, ...(await st.bindings.values('user', u.id, 'network', now))]);
      const changed: string[] = [];
      const bound = { senders: [] as string[], networks: [] as string[], countries: [] as string[], asns: [] as string[] };
      const lists = [['sender', senders, bound.senders], ['network', networks, bound.networks], ['country', countries, bound.countries], ['asn', asns, bound.asns]] as const;
      await tx(async () => {
        for (const [kind, list, done] of lists) {
          for (const v of list) {
            const did = sub === 'allow' ? await st.bindings.add('user', u.id, kind, v, now, expires) : await st.bindings.remove('user', u.id, kind, v);
            if (did || (sub === 'allow' && expires)) {
              changed.push(`${kind} ${v}`);
              done.push(v);
            }
          }
        }
        if (changed.length) await audit(`user.${sub}`, u.username, { ...bound, until: expires === null ? null : iso(expires) });
      });
      ctx.io.stdout(
        changed.length
          ? `${sub === 'allow' ? 'allowed' : 'denied'} for ${u.username}: ${changed.join(', ')}${expires ? ` (until ${iso(expires)})` : ''}\n`
          : `nothing changed for ${u.username}\n`,
      );
      return 0;
    }
    case 'notify': {
      const u = await mustFind(ctx, needName());
      const raw = positionals[1] ?? values.notify;
      if (!raw) throw new UsageError(`postern user notify NAME ADDR\n\n${USER_HELP}`);
      const a = notifyAddressArg(raw);
      await tx(async () => {
        await (await ctx.store()).users.setNotifyAddress(u.id, a, now);
        await audit('user.notify', u.username, { notify: a });
      });
      ctx.io.stdout(`notices for ${u.username} go to ${a}\n`);
      const warn = notifyWarning(u.username, a, await (await ctx.store()).bindings.values('user', u.id, 'sender', now));
      if (warn) ctx.io.stderr(warn);
      return 0;
    }
    case 'passwd':
      if (directory) {
        const u = await mustFind(ctx, needName());
        throw new CliError(
          `the password of ${u.username} is the directory's (auth.backend = "dovecot"): change it there, with the tool that manages the directory; a device can get a password of its own: postern user password add ${u.username} LABEL`,
        );
      }
    // falls through
    case 'reset': {
      if (directory) return resetDirectoryUser(ctx, await mustFind(ctx, needName()), { now, by: who, reason, revokeApps: Boolean(values['revoke-app-passwords']), clear: Boolean(values['clear-compromised']) });
      if (values['clear-compromised']) throw new UsageError('--clear-compromised is for directory passwords (auth.backend = "dovecot"): a reset here sets a new password');
      const u = await mustFind(ctx, needName());
      const { password, generated } = await newPassword(ctx, Boolean(values['password-stdin']));
      const hash = await hashPassword(password, params(ctx.config()));
      const st = await ctx.store();
      let resolved = 0;
      let lifted = false;
      let revoked = 0;
      // App passwords the open incidents name (their detail ends "; app password LABEL"): a
      // reset keeps app passwords, so say that the one seen abroad still works.
      const named =
        sub === 'reset' && !values['revoke-app-passwords']
          ? new Set((await st.incidents.list({ principal: u.principalRef, open: true })).map((i) => (i.detail ? loginDetailParts(i.detail).appLabel : null)).filter((l): l is string => l !== null))
          : new Set<string>();
      await tx(async () => {
        await st.users.setPassword(u.id, hash, now);
        if (sub === 'reset') {
          lifted = await st.users.unsuspend(u.id, now);
          resolved = await st.incidents.resolveOpen(u.principalRef, who, now);
          if (values['revoke-app-passwords']) revoked = await st.appPasswords.revokeAll(u.id, now);
        }
        await audit(`user.${sub}`, u.username, sub === 'reset' ? { suspension_lifted: lifted, incidents_resolved: resolved, app_passwords_revoked: revoked } : null);
      });
      const apps = sub === 'reset' ? (values['revoke-app-passwords'] ? `, ${revoked} app password${revoked === 1 ? '' : 's'} revoked` : (await st.appPasswords.list(u.id)).length ? ', app passwords kept (--revoke-app-passwords to revoke them)' : '') : '';
      const what = sub === 'reset' ? `user ${u.username} reset: password changed, ${lifted ? 'suspension lifted' : 'was not suspended'}, ${resolved} open incident${resolved === 1 ? '' : 's'} resolved${apps}` : `password of ${u.username} changed`;
      ctx.io.stdout(generated ? `${what}; new password (shown once): ${password}\n` : `${what}\n`);
      for (const label of named) {
        if (!(await st.appPasswords.find(u.id, label))) continue;
        ctx.io.stderr(`warning: an incident just resolved names the app password ${label} of ${u.username}, and it still works: revoke it unless that login was the user's own: postern user password revoke ${u.username} ${label} --reason "..."\n`);
      }
      return 0;
    }
    case 'suspend':
    case 'unsuspend': {
      const u = await mustFind(ctx, needName());
      if (!reason) throw new UsageError(`postern user ${sub} ${u.username} needs --reason "..." (it goes into the audit log)`);
      const st = await ctx.store();
      const done = await tx(async () => {
        const ok = sub === 'suspend' ? (await suspendPrincipal(st, { kind: 'user', id: u.id, name: u.username, ref: u.principalRef }, `manual: ${reason}`, now)).changed : await st.users.unsuspend(u.id, now);
        const cleared = ok && values['clear-compromised'] ? await st.credentials.forgetCompromised(u.id, u.username) : 0;
        if (ok) await audit(`user.${sub}`, u.username, values['clear-compromised'] ? { compromised_passwords_cleared: cleared } : null);
        return ok;
      });
      if (!done) throw new CliError(
          sub === 'suspend'
            ? `user ${u.username} is already suspended (to lift it: postern user unsuspend ${u.username} --reason "..."; after a compromise: postern user reset ${u.username})`
            : `user ${u.username} is not suspended (see: postern user show ${u.username})`,
        );
      ctx.io.stdout(`user ${u.username} ${sub}ed\n`);
      if (sub === 'unsuspend') {
        const kept = await st.credentials.countCompromised(u.id, u.username);
        if (kept) ctx.io.stdout(refusedPasswordNote(u.username, kept));
      }
      return 0;
    }
    case 'list': {
      const st = await ctx.store();
      const users = await st.users.list();
      const pre = await prefetch(ctx, users, now);
      const described = await Promise.all(users.map((u) => describe(ctx, u, now, pre)));
      if (values.json) printJson(ctx.io, described);
      else if (!users.length) ctx.io.stdout('no users (add one: postern user add NAME --sender ADDR --network CIDR)\n');
      else
        ctx.io.stdout(
          table([
            ['NAME', 'STATUS', 'NETWORKS', 'COUNTRIES', 'ASNS', 'SENDERS', 'APP PASSWORDS', 'CREATED'],
            ...users.map((u, i) => {
              const d = described[i]!;
              return [u.username, u.status, String(d.networks.length), String(d.countries.length), String(d.asns.length), String(d.senders.length), String(d.app_passwords.length), iso(u.createdAt)];
            }),
          ]),
        );
      return 0;
    }
    case 'show': {
      const u = await mustFind(ctx, needName());
      const d = await describe(ctx, u, now);
      if (values.json) printJson(ctx.io, d);
      else {
        const line = (k: string, v: unknown) => `${k.padEnd(15)}${Array.isArray(v) ? (v.length ? v.join('\n' + ' '.repeat(15)) : '-') : (v ?? '-')}\n`;
        ctx.io.stdout(Object.entries(d).map(([k, v]) => line(k, v)).join(''));
        if (u.status === 'suspended') ctx.io.stdout(`\nto restore sending: postern user reset ${u.username}  (or: postern user unsuspend ${u.username} --reason "false alarm")\n`);
      }
      return 0;
    }
    case 'delete': {
      const u = await mustFind(ctx, needName());
      const st = await ctx.store();
      await tx(async () => {
        await st.bindings.removeAll('user', u.id);
        await st.users.delete(u.id, now);
        // Mail still waiting for quota would never drain for a user who is gone: hold it for an admin.
        await st.limits.holdWaiting(u.principalRef, 'user deleted', now);
        await audit('user.delete', u.username, null);
      });
      ctx.io.stdout(`user ${u.username} deleted\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown command: user ${sub}\n\n${USER_HELP}` : USER_HELP);
  }
}
