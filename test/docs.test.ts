import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { parseConfig } from '../src/config/load.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const example = readFileSync(path.join(ROOT, 'config/postern.example.toml'), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('documentation', () => {
  it('lists every log event name the code emits (event names are a public interface)', () => {
    const names = new Set<string>();
    for (const f of sources(path.join(ROOT, 'src'))) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(/event: '([a-z][a-z._-]+)'/g)) names.add(m[1]!);
      for (const m of text.matchAll(/'([a-z]+\.(?:refused|fail|busy|throttled))'/g)) names.add(m[1]!);
    }
    names.add('user.suspended').add('device.suspended');
    expect(names.size).toBeGreaterThan(40);
    const missing = [...names].filter((n) => !readme.includes(`\`${n}\``));
    expect(missing).toEqual([]);
  });

  it('shows the example config in the README exactly as the file has it', () => {
    expect(readme).toContain('```toml\n' + example.trimEnd() + '\n```');
  });

  it('documents every config key in the example config, and the example parses', () => {
    const defaults = parseConfig({ server: { hostname: 'x.example' } }, '/') as unknown as Record<string, unknown>;
    const doc = parseToml(example) as Record<string, unknown>;
    expect(() => parseConfig(doc, '/')).not.toThrow();
    const missing: string[] = [];
    const walk = (d: Record<string, unknown>, e: Record<string, unknown> | undefined, at: string) => {
      for (const [k, v] of Object.entries(d)) {
        const here = at ? `${at}.${k}` : k;
        if (!e || !(k in e)) missing.push(here);
        else if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length) walk(v as Record<string, unknown>, e[k] as Record<string, unknown>, here);
      }
    };
    walk(defaults, doc, '');
    expect(missing).toEqual([]);
  });
});
