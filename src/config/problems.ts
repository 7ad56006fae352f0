import { templateFor, type ProvisionTemplate } from '../policy/template.js';
/**
 * One problem with the config, as `postern config check` lists it and as `postern serve`
 * refuses to start with it: the key, its value, what is wrong and what to do. Both print
 * `message`, so the admin sees the same line whichever ran first.
 */
export interface Problem {
  /** "tls.cert", "submission.listen[1]"; null when no key is at fault (a TOML syntax error). */
  key: string | null;
  /** The value as the config has it (secrets redacted); null when there is none. */
  value: unknown;
  problem: string;
  /** The next step; null when `problem` already says it. */
  fix: string | null;
  /** `key = value: problem; fix`, one line. */
  message: string;
}

/** A key holds a secret by its name: its value is never printed. */
const SECRET_KEY = /password|passphrase|secret|token/i;

/**
 * The value with its secrets replaced by "(redacted)": the whole value of a key named like a
 * secret; the password of a URL (postgres://user:PASSWORD@host, redis://:PASSWORD@host) and
 * password-like query parameters (?password=, ?sslpassword=).
 */
export function redact(key: string, value: unknown): unknown {
  if (typeof value !== 'string' || value === '') return value;
  if (SECRET_KEY.test(key.split('.').pop() ?? '')) return '(redacted)';
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value);
  if (!scheme) return value;
  const rest = value.slice(scheme[0].length);
  // The user information ends at the last "@" before the query: a password with a raw "@"
  // or "/" in it is then redacted whole rather than half shown.
  const cut = rest.search(/[?#]/);
  const head = cut < 0 ? rest : rest.slice(0, cut);
  const at = head.lastIndexOf('@');
  let out = value;
  if (at >= 0) {
    const colon = head.slice(0, at).indexOf(':');
    if (colon >= 0) out = scheme[0] + head.slice(0, colon + 1) + '(redacted)' + rest.slice(at);
  }
  return out.replace(/([?&][^=&#]*(?:password|passphrase|secret|token)[^=&#]*=)[^&#]*/gi, '$1(redacted)');
}

/** A value as TOML writes it: strings quoted, arrays and tables inline. */
export function tomlValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v);
    return entries.length ? `{ ${entries.map(([k, x]) => `${tomlKey(k)} = ${tomlValue(x)}`).join(', ')} }` : '{}';
  }
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/** A key as TOML writes it: bare when it can be, else quoted ("bank.example"). */
export const tomlKey = (k: string): string => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k));

export function problem(key: string | null, value: unknown, what: string, fix: string | null): Problem {
  const shown = key === null ? null : redact(key, value === undefined ? null : value);
  const where = key === null ? '' : shown === null ? `${key}: ` : `${key} = ${tomlValue(shown)}: `;
  return { key, value: shown, problem: what, fix, message: `${where}${what}${fix ? `; ${fix}` : ''}` };
}

/**
 * Checks between keys that the schema cannot express, for every command (parseConfig) and for
 * `config check`. Paths are compared as given.
 */
export function crossCheckProblems(cfg: {
  tls: { cert: string; key: string };
  submission: { proxy_protocol: boolean; trusted_proxies: string[] };
  delivery?: { dane: string; dns_servers: string[]; tls_policy: Record<string, string> };
  auth?: { backend: string; dovecot_socket: string; provision: string; template: ProvisionTemplate };
}): Problem[] {
  const out: Problem[] = [];
  if (Boolean(cfg.tls.cert) !== Boolean(cfg.tls.key)) {
    const [set, unset] = cfg.tls.cert ? ['tls.cert', 'tls.key'] : ['tls.key', 'tls.cert'];
    out.push(
      problem(unset, '', 'tls.cert and tls.key must be set together (or both left empty)', `set ${unset} too, or empty ${set} for a self-signed certificate`),
    );
  }
  if (cfg.submission.proxy_protocol && cfg.submission.trusted_proxies.length === 0) {
    out.push(
      problem(
        'submission.trusted_proxies',
        [],
        "submission.proxy_protocol = true needs submission.trusted_proxies (the load balancers' networks)",
        'list the balancers\' networks, e.g. ["10.0.0.0/8"], or set proxy_protocol = false',
      ),
    );
  }
  if (cfg.auth) out.push(...authProblems(cfg.auth));
  const d = cfg.delivery;
  if (d && (d.dane === 'auto' || Object.values(d.tls_policy).includes('dane'))) {
    // The AD bit is worth only what the path to the resolver is: on this host, nobody can forge it.
    const far = d.dns_servers.filter((s) => !/^(127\.|\[::1\]|::1$)/.test(s));
    if (!d.dns_servers.length || far.length) {
      out.push(
        problem(
          'delivery.dns_servers',
          d.dns_servers,
          `DANE (delivery.dane = "auto" or a tls_policy "dane") trusts the resolver's DNSSEC validation, so it must be a validating resolver on this host${far.length ? `, not ${far.join(', ')}` : ''}`,
          'run unbound on loopback and set dns_servers = ["127.0.0.1:53"], or set delivery.dane = "off"',
        ),
      );
    }
  }
  return out;
}

/** [auth]: the Dovecot backend needs its socket; provisioning needs the backend and a template that can make a user. */
function authProblems(a: NonNullable<Parameters<typeof crossCheckProblems>[0]['auth']>): Problem[] {
  const out: Problem[] = [];
  if (a.backend === 'dovecot' && !a.dovecot_socket) {
    out.push(problem('auth.dovecot_socket', '', 'auth.backend = "dovecot" needs the socket of Dovecot\'s auth service', 'set it, e.g. "/run/dovecot/auth-postern" or "inet:127.0.0.1:12345" (see README, "Using Dovecot\'s passwords")'));
  }
  if (a.provision === 'template') {
    if (a.backend !== 'dovecot') {
      out.push(problem('auth.provision', 'template', 'provisioning at first login is for directory users (auth.backend = "dovecot")', 'set auth.backend = "dovecot", or provision = "none" and add users with postern user add / import'));
    } else {
      const made = templateFor(a.template, 'user@example.com');
      if ('problem' in made) out.push(problem('auth.template', null, `auth.provision = "template" cannot make a user: ${made.problem}`, 'set auth.template.senders (e.g. ["{user}"]) and networks, countries or asns'));
    }
  }
  return out;
}
