import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const STORE = path.join(import.meta.dirname, '../../src/store');

/** Every SQL statement written as a string in src/store, whitespace folded, with where it is. */
function statements(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const file of readdirSync(STORE, { recursive: true }) as string[]) {
    if (!file.endsWith('.ts')) continue;
    const text = readFileSync(path.join(STORE, file), 'utf8');
    for (const m of text.matchAll(/(['`])((?:SELECT|INSERT|UPDATE|DELETE|WITH)\b(?:(?!\1)[\s\S])*)\1/g)) {
      const sql = m[2]!.split(/\s+/).join(' ');
      const at = `${file}:${text.slice(0, m.index).split('\n').length}`;
      found.set(sql, [...(found.get(sql) ?? []), at]);
    }
  }
  return found;
}

describe('SQL in the store', () => {
  it('writes no statement twice: shared ones live in store/sql.ts', () => {
    const all = statements();
    expect(all.size).toBeGreaterThan(50);
    expect([...all].filter(([, at]) => at.length > 1)).toEqual([]);
  });
});
