import { parseArgs } from 'node:util';
import { generatePassword, hashPassword, passwordProblem } from '../identity/passwords.js';
import { UserExistsError } from '../store/users.js';
import type { User } from '../domain/types.js';
import { CliError, iso, printJson, table, UsageError, type Ctx } from './io.js';
import type { Config } from '../config/schema.js';

export const USER_HELP = `Usage: postern user COMMAND [options]

  add NAME [--password-stdin]      create a user; without --password-stdin a strong
                                   password is generated and printed once
  list [--json]                    all users
  show NAME [--json]               one user
  passwd NAME [--password-stdin]   set a new password (cached logins are dropped)
  delete NAME                      remove a user

Example:
  printf '%s\\n' 'correct horse battery' | postern user add alice --password-stdin
`;

const USERNAME_RE = /^[a-z0-9][a-z0-9._@+-]{0,63}$/i;

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

function publicUser(u: User) {
  return { name: u.username, status: u.status, status_reason: u.statusReason, created: iso(u.createdAt), updated: iso(u.updatedAt) };
}

function mustFind(ctx: Ctx, name: string): User {
  const u = ctx.store().users.find(name);
  if (!u) throw new CliError(`no such user: ${name} (see: postern user list)`);
  return u;
}

export async function userCommand(ctx: Ctx, argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, 'password-stdin': { type: 'boolean' } },
  });
  const name = positionals[0];
  const needName = () => {
    if (!name) throw new UsageError(`postern user ${sub} needs a user name\n\n${USER_HELP}`);
    return name;
  };
  const now = Date.now();
  switch (sub) {
    case 'add': {
      const n = needName();
      if (!USERNAME_RE.test(n)) throw new CliError(`invalid user name ${JSON.stringify(n)}: use letters, digits and . _ @ + - (at most 64)`);
      const { password, generated } = await newPassword(ctx, Boolean(values['password-stdin']));
      const hash = await hashPassword(password, params(ctx.config()));
      try {
        ctx.store().users.add(n, hash, now);
      } catch (e) {
        if (e instanceof UserExistsError) throw new CliError(`user ${n} already exists (to change the password: postern user passwd ${n})`);
        throw e;
      }
      ctx.io.stdout(generated ? `user ${n} added; password (shown once): ${password}\n` : `user ${n} added\n`);
      return 0;
    }
    case 'passwd': {
      const u = mustFind(ctx, needName());
      const { password, generated } = await newPassword(ctx, Boolean(values['password-stdin']));
      ctx.store().users.setPassword(u.id, await hashPassword(password, params(ctx.config())), now);
      ctx.io.stdout(generated ? `password of ${u.username} changed; new password (shown once): ${password}\n` : `password of ${u.username} changed\n`);
      return 0;
    }
    case 'list': {
      const users = ctx.store().users.list();
      if (values.json) printJson(ctx.io, users.map(publicUser));
      else if (!users.length) ctx.io.stdout('no users (add one: postern user add NAME)\n');
      else ctx.io.stdout(table([['NAME', 'STATUS', 'CREATED'], ...users.map((u) => [u.username, u.status, iso(u.createdAt)])]));
      return 0;
    }
    case 'show': {
      const u = mustFind(ctx, needName());
      if (values.json) printJson(ctx.io, publicUser(u));
      else {
        const p = publicUser(u);
        ctx.io.stdout(Object.entries(p).map(([k, v]) => `${k}: ${v ?? '-'}`).join('\n') + '\n');
      }
      return 0;
    }
    case 'delete': {
      const u = mustFind(ctx, needName());
      ctx.store().users.delete(u.id);
      ctx.io.stdout(`user ${u.username} deleted\n`);
      return 0;
    }
    default:
      throw new UsageError(sub ? `unknown command: user ${sub}\n\n${USER_HELP}` : USER_HELP);
  }
}
