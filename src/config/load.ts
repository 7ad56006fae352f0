import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import type { z } from 'zod';
import { crossCheckProblems } from './problems.js';
import { configSchema, type Config } from './schema.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function describe(issue: z.core.$ZodIssue): string {
  const key = issue.path.join('.') || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    const prefix = issue.path.length ? `${issue.path.join('.')}.` : '';
    return `unknown key ${issue.keys.map((k) => prefix + k).join(', ')}`;
  }
  return `${key}: ${issue.message}`;
}

/** Validates an already-parsed TOML document; relative paths are resolved against baseDir. */
export function parseConfig(doc: unknown, baseDir: string, source = 'config'): Config {
  const result = configSchema.safeParse(doc);
  if (!result.success) {
    throw new ConfigError(`${source}: ${result.error.issues.map(describe).join('; ')}`);
  }
  const cfg = result.data;
  cfg.server.data_dir = path.resolve(baseDir, cfg.server.data_dir);
  if (cfg.tls.cert) cfg.tls.cert = path.resolve(baseDir, cfg.tls.cert);
  if (cfg.tls.key) cfg.tls.key = path.resolve(baseDir, cfg.tls.key);
  if (cfg.delivery.tls_ca_file) cfg.delivery.tls_ca_file = path.resolve(baseDir, cfg.delivery.tls_ca_file);
  cfg.geo.country_db = resolveGeoPaths(baseDir, cfg.geo.country_db);
  cfg.geo.asn_db = resolveGeoPaths(baseDir, cfg.geo.asn_db);
  // Cross-checks between keys run here, beside the schema, so every command sees them
  // (and config check lists them the same way: problems.ts).
  const cross = crossCheckProblems(cfg);
  if (cross.length) throw new ConfigError(`${source}: ${cross.map((p) => p.message).join('; ')}`);
  return cfg;
}

/** [geo] country_db / asn_db against the config file's directory; "" (the bundled data) stays "". */
export function resolveGeoPaths(baseDir: string, v: string | string[]): string | string[] {
  if (typeof v === 'string') return v ? path.resolve(baseDir, v) : v;
  return v.map((p) => path.resolve(baseDir, p));
}

/** Reads --config FILE, else $POSTERN_CONFIG, else /etc/postern/postern.toml. */
export function loadConfig(file?: string): Config {
  const { file: p, doc } = readConfigDoc(file);
  return parseConfig(doc, path.dirname(p), p);
}

/** The config file's path and its TOML parsed, not yet validated (config check validates it key by key). */
export function readConfigDoc(file?: string): { file: string; doc: unknown } {
  const p = path.resolve(file ?? process.env.POSTERN_CONFIG ?? '/etc/postern/postern.toml');
  let text: string;
  try {
    text = readFileSync(p, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${p}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseToml(text);
  } catch (e) {
    // smol-toml says where (line, column) and shows the lines around it: both are kept.
    const err = e as Error & { line?: number; column?: number; codeblock?: string };
    const where = typeof err.line === 'number' ? `:${err.line}:${err.column ?? 1}` : '';
    const what = err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
    throw new ConfigError(`${p}${where}: not valid TOML: ${what}${err.codeblock ? `\n${err.codeblock.trimEnd()}` : ''}`);
  }
  return { file: p, doc };
}
