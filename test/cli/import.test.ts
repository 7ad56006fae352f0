import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NO_PASSWORD } from '../../src/identity/passwords.js';
import { openConfiguredStore, type Store } from '../../src/store/index.js';
import { cli, writeConfig } from '../helpers/cli.js';
import { onTestEngine, tempDir } from '../helpers/relay.js';

let dir: string;
let cfg: string;
let st: Store;
beforeEach(async () => {
  dir = tempDir();
  // On the "postgres" project a database of its own (vitest.config.ts BOTH_ENGINES).
  const url = (await onTestEngine<{ store?: { url?: string } }>({})).store?.url ?? '';
  cfg = writeConfig(dir, url ? `[store]\nurl = "${url}"\n` : '');
  st = await openConfiguredStore({ server: { data_dir: path.join(dir, 'data') }, store: { url } });
});
afterEach(() => {
  st.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The CLI, then this test's store brought up to date with what it committed (PostgreSQL's policy cache). */
async function run(argv: string[], stdin = '') {
  const r = await cli(cfg, argv, stdin);
  await st.syncPolicy();
  return r;
}
const put = (name: string, text: string) => {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
};
const NO_PASSWORD_LINE = (n: number) => `${n} new user${n === 1 ? ' has' : 's have'} no password yet and cannot log in until one is set: postern user passwd NAME\n`;
const REFUSED = ': nothing was written (correct the refused lines and run the import again)';

/** Every user with its notification address, password state, last change and bindings ("kind value", "+" for an exception). */
async function state() {
  const users = await st.users.list();
  const bindings = await st.bindings.listMany('user', users.map((u) => u.id), Date.now());
  return users.map((u) => ({
    name: u.username,
    notify: u.notifyAddress,
    password: u.passwordHash === NO_PASSWORD ? 'none' : 'set',
    updated: u.updatedAt,
    bindings: bindings.get(u.id)!.map((b) => `${b.kind} ${b.value}${b.expiresAt === null ? '' : '+'}`),
  }));
}
const imports = async () => (await st.audit.list({ limit: 5000 })).filter((e) => e.action === 'user.import').reverse();

describe('postern user import: 1,000 users', () => {
  it('imports 1,000 users from CSV in under 2 s, and importing the same file again changes and writes nothing', async () => {
    const rows = Array.from({ length: 1000 }, (_, i) => {
      const n = `user${String(i).padStart(4, '0')}`;
      return `${n},${n}@example.com${i % 3 ? '' : ' @dept.example'},10.${i >> 8}.${i & 255}.0/24,${i % 2 ? 'DE;AT' : ''},${i % 5 ? '' : 3320},${i % 4 ? '' : `${n}@home.example`}`;
    });
    const file = put('staff.csv', `name,senders,networks,countries,asns,notify\n${rows.join('\n')}\n`);
    let t0 = performance.now();
    const first = await run(['user', 'import', file, '--by', 'hr-sync']);
    const took = performance.now() - t0;
    expect(first).toEqual({ code: 0, out: `import ${file}: 1000 added, 0 changed, 0 unchanged, 0 refused\n${NO_PASSWORD_LINE(1000)}`, err: '' });
    // Measured 0.65-0.8 s on either engine, a re-import 0.2-0.4 s (in-process, 2 busy cores); the issue asks for under 2 s.
    expect(took).toBeLessThan(2000);
    const after = await state();
    expect(after).toHaveLength(1000);
    expect(after[0]).toEqual({ name: 'user0000', notify: 'user0000@home.example', password: 'none', updated: expect.any(Number), bindings: ['asn 3320', 'network 10.0.0.0/24', 'sender user0000@example.com', 'sender @dept.example'] });
    expect(after[999]).toMatchObject({ name: 'user0999', notify: null, bindings: ['country DE', 'country AT', 'network 10.3.231.0/24', 'sender user0999@example.com', 'sender @dept.example'] });
    const audit = await imports();
    expect(audit).toHaveLength(1000);
    expect(audit[1]).toMatchObject({
      actor: 'hr-sync',
      target: 'user:user0001',
      reason: null,
      detail: { change: 'added', line: 3, senders: ['user0001@example.com'], networks: ['10.0.1.0/24'], countries: ['DE', 'AT'], asns: [], notify: null },
    });

    t0 = performance.now();
    const again = await run(['user', 'import', file]);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(again).toEqual({ code: 0, out: `import ${file}: 0 added, 0 changed, 1000 unchanged, 0 refused\n`, err: '' });
    expect(await state()).toEqual(after);
    expect(await imports()).toHaveLength(1000);
  });

  it('imports 1,000 users from JSON lines in under 2 s and says so in JSON', async () => {
    const lines = Array.from({ length: 1000 }, (_, i) =>
      JSON.stringify({ name: `j${i}`, senders: i % 2 ? `j${i}@example.com` : [`j${i}@example.com`], networks: ['192.0.2.0/24'], asns: [i + 1], ...(i % 2 ? { countries: 'FR' } : {}) }),
    );
    const file = put('staff.jsonl', `${lines.join('\n')}\n`);
    const t0 = performance.now();
    const r = await run(['user', 'import', file, '--json']);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ added: 1000, changed: 0, unchanged: 0, refused: [], dry_run: false, without_password: 1000 });
    expect((await state()).find((u) => u.name === 'j7')).toMatchObject({ bindings: ['asn 8', 'country FR', 'network 192.0.2.0/24', 'sender j7@example.com'] });
    expect(JSON.parse((await run(['user', 'import', file, '--json'])).out)).toMatchObject({ added: 0, changed: 0, unchanged: 1000 });
  });
});

describe('postern user import', () => {
  it('refuses a file with bad lines: each with its number and why, and nothing of the file is applied', async () => {
    await run(['user', 'add', 'alice', '--sender', 'alice@example.com', '--network', '192.0.2.0/24']);
    const before = await state();
    const file = put(
      'bad.csv',
      [
        '# staff, exported 2026-11-30',
        'name,senders,networks,countries,notify',
        'alice,alice@example.com,10.0.0.0/8,,',
        'bob,bob@example.com,192.0.2.0/33,,',
        '',
        'carol,carol@example.com,,,',
        'dave,dave@,192.0.2.0/24,DE,',
        'erin,erin@example.com,192.0.2.0/24,UK,',
        'fred,fred@example.com,192.0.2.0/24,DE,fred-at-home',
        '"gina","gina@example.com","192.0.2.0/24","DE"',
        'h i,hi@example.com,192.0.2.0/24,,',
        'ivy,ivy@example.com,::/0,,',
        ',nobody@example.com,192.0.2.0/24,,',
        'Alice,alice@example.com,,DE,',
        'joe,joe@example.com,198.51.100.0/24,,',
        '',
      ].join('\n'),
    );
    const r = await run(['user', 'import', file]);
    expect(r.code).toBe(1);
    expect(r.out).toBe(`import ${file}: 1 added, 1 changed, 0 unchanged, 10 refused${REFUSED}\n`);
    expect(r.err).toBe(
      [
        'line 4: bob: bad network "192.0.2.0/33": the address has neither IPv6 nor IPv4 CIDR format (use CIDR like 192.0.2.0/24 or 2001:db8::/32; 0.0.0.0/0 and ::/0 for roaming)',
        'line 6: carol: a new user needs a place (networks, countries or asns): without it carol could not send',
        'line 7: dave: bad sender "dave@": use an address (alice@example.com) or @domain (@example.com)',
        'line 8: erin: bad country "UK": the ISO 3166-1 code of the United Kingdom is GB',
        'line 9: fred: bad notification address "fred-at-home": use one address such as alice@home.example',
        'line 10: gina: 4 cells where the header (line 2) names 5 columns',
        'line 11: h i: invalid user name "h i": use letters, digits and . _ @ + - (at most 64)',
        'line 12: ivy: --network ::/0 matches IPv6 clients only, never an IPv4 one (not even one a dual-stack listener shows as ::ffff:192.0.2.7): to allow every client give both, --network 0.0.0.0/0 --network ::/0',
        'line 13: -: no name given',
        'line 14: Alice: also on line 3: name each user once',
        '',
      ].join('\n'),
    );
    expect(await state()).toEqual(before);
    expect(await imports()).toEqual([]);

    // JSON lines: what cannot be read is refused like any other line.
    const json = put('bad.jsonl', ['{"name": "kim", "senders": "kim@example.com", "networks": ["192.0.2.0/24"]}', '{"name": "lee", "sendrs": ["lee@example.com"], "nets": []}', '{"name": "max", "senders": [1]}', '{"name": "ned",', '["not an object"]', '{"name": "ola", "senders": "ola@example.com", "countries": "DE", "notify": 7}'].join('\n'));
    const j = await run(['user', 'import', json, '--json']);
    expect(j.code).toBe(1);
    expect(j.err).toBe('');
    expect(JSON.parse(j.out)).toEqual({
      added: 1,
      changed: 0,
      unchanged: 0,
      refused: [
        { line: 2, name: 'lee', error: 'unknown keys "sendrs", "nets" (the keys are: name, senders, networks, countries, asns, notify)' },
        { line: 3, name: 'max', error: '"senders" must be a list of strings, or one string' },
        { line: 4, name: null, error: expect.stringMatching(/^not valid JSON \(/) },
        { line: 5, name: null, error: 'not a JSON object: give one {"name": ...} per line' },
        { line: 6, name: 'ola', error: '"notify" must be a string (one address)' },
      ],
      dry_run: false,
      without_password: 1,
    });
    expect(await state()).toEqual(before);
  });

  it('sets each kind of binding a line names to exactly its values, leaves the other kinds and time-limited exceptions alone', async () => {
    await run(['user', 'add', 'alice', '--sender', 'alice@example.com,@example.org', '--network', '192.0.2.0/24', '--country', 'DE', '--notify', 'alice@home.example']);
    await run(['user', 'allow', 'alice', '--country', 'PT', '--network', '198.51.100.0/24', '--for', '7d']);
    await run(['user', 'add', 'bob', '--sender', 'bob@example.com', '--asn', '3320']);
    const file = put('update.csv', 'Name, Senders ,countries\nALICE,alice@example.com,"AT, PT"\nbob,bob@example.com,\n');
    const r = await run(['user', 'import', file, '--by', 'helpdesk-bob', '--reason', 'ticket 4711']);
    expect(r).toEqual({ code: 0, out: `import ${file}: 0 added, 1 changed, 1 unchanged, 0 refused\n`, err: '' });
    expect((await state()).map(({ name, notify, bindings }) => ({ name, notify, bindings }))).toEqual([
      // The exception for PT became permanent: the file names it. The one for 198.51.100.0/24 is kept.
      { name: 'alice', notify: 'alice@home.example', bindings: ['country PT', 'country AT', 'network 192.0.2.0/24', 'network 198.51.100.0/24+', 'sender alice@example.com'] },
      { name: 'bob', notify: null, bindings: ['asn 3320', 'sender bob@example.com'] },
    ]);
    expect(await imports()).toEqual([
      { id: expect.any(Number), at: expect.any(Number), actor: 'helpdesk-bob', action: 'user.import', target: 'user:alice', reason: 'ticket 4711', detail: { change: 'changed', line: 2, senders: ['alice@example.com'], countries: ['AT', 'PT'] } },
    ]);

    // JSON: a new notification address, networks replaced (the exception still kept), no place left out.
    const json = put('update.jsonl', '{"name": "alice", "notify": "Alice@New.Example", "networks": "10.0.0.0/8"}\n{"name": "bob", "asns": []}\n');
    const j = await run(['user', 'import', json]);
    expect(j).toEqual({ code: 1, out: `import ${json}: 0 added, 1 changed, 0 unchanged, 1 refused${REFUSED}\n`, err: 'line 2: bob: the line leaves bob without a place (networks, countries or asns): bob could not send\n' });
    const fixed = put('update2.jsonl', '{"name": "alice", "notify": "Alice@New.Example", "networks": "10.0.0.0/8"}\n');
    expect(await run(['user', 'import', fixed])).toMatchObject({ code: 0, out: `import ${fixed}: 0 added, 1 changed, 0 unchanged, 0 refused\n` });
    expect((await state())[0]).toMatchObject({ notify: 'alice@new.example', bindings: ['country PT', 'country AT', 'network 198.51.100.0/24+', 'network 10.0.0.0/8', 'sender alice@example.com'] });
    expect((await imports())[1]!.detail).toEqual({ change: 'changed', line: 1, networks: ['10.0.0.0/8'], notify: 'alice@new.example' });
  });

  it('--dry-run reports what would change and writes nothing', async () => {
    await run(['user', 'add', 'alice', '--sender', 'alice@example.com', '--network', '192.0.2.0/24']);
    const before = await state();
    const file = put('staff.csv', 'name,networks,senders\nalice,10.0.0.0/8,alice@example.com\nbob,10.0.0.0/8,bob@example.com\n');
    expect(await run(['user', 'import', file, '--dry-run'])).toEqual({ code: 0, out: `import ${file}: 1 added, 1 changed, 0 unchanged, 0 refused (dry run: nothing was written)\n${NO_PASSWORD_LINE(1)}`, err: '' });
    expect(JSON.parse((await run(['user', 'import', file, '--dry-run', '--json'])).out)).toEqual({ added: 1, changed: 1, unchanged: 0, refused: [], dry_run: true, without_password: 1 });
    expect(await state()).toEqual(before);
    expect(await imports()).toEqual([]);
  });

  it('refuses an unknown or repeated CSV column, naming it', async () => {
    const file = put('typo.csv', 'name,sender,networks,Notfiy\nalice,alice@example.com,192.0.2.0/24,\n');
    expect(await run(['user', 'import', file])).toEqual({
      code: 1,
      out: '',
      err: `postern: ${file} line 1: unknown columns "sender", "notfiy": nothing was written (the columns are: name, senders, networks, countries, asns, notify)\n`,
    });
    const twice = put('twice.csv', '\n# header\nname,senders,senders\n');
    expect((await run(['user', 'import', twice])).err).toBe(`postern: ${twice} line 3: the column "senders" is named twice: nothing was written (the columns are: name, senders, networks, countries, asns, notify)\n`);
    expect((await run(['user', 'import', put('noname.csv', 'senders,networks\n')])).err).toMatch(/ line 1: the header names no "name" column \(is the first line a header\?\)/);
  });

  it('reads RFC 4180 quoting: separators and line breaks inside quotes, "" for a quote, lines counted as in the file', async () => {
    const file = put(
      'quoted.csv',
      'name,senders,networks,notify\r\n"alice","alice@example.com\r\n@example.org", "192.0.2.0/24;198.51.100.0/24" ,\r\n# a comment\r\nbob,bob@example.com,"192.0.2.0/24 ""x""",\r\n',
    );
    expect(await run(['user', 'import', file])).toMatchObject({ code: 1, err: 'line 5: bob: bad network "\\"x\\"": the address has neither IPv6 nor IPv4 format (use CIDR like 192.0.2.0/24 or 2001:db8::/32; 0.0.0.0/0 and ::/0 for roaming)\n' });
    const ok = put('ok.csv', readFileSync(file, 'utf8').replace(' ""x""', ''));
    expect(await run(['user', 'import', ok])).toMatchObject({ code: 0 });
    expect((await state()).map((u) => u.bindings)).toEqual([
      ['network 192.0.2.0/24', 'network 198.51.100.0/24', 'sender alice@example.com', 'sender @example.org'],
      ['network 192.0.2.0/24', 'sender bob@example.com'],
    ]);
    const open = put('open.csv', 'name,senders,networks\ncarol,"carol@example.com,192.0.2.0/24\n');
    expect(await run(['user', 'import', open])).toMatchObject({ code: 1, err: 'line 2: carol: a quoted cell is not closed (a " is missing)\n' });
  });

  it('reads standard input with -, and says nothing of passwords under the dovecot backend', async () => {
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('[auth]\n', '[auth]\nbackend = "dovecot"\ndovecot_socket = "inet:127.0.0.1:1"\n'));
    const r = await run(['user', 'import', '-'], 'name,senders,networks\nalice,alice@example.com,192.0.2.0/24\n');
    expect(r).toEqual({ code: 0, out: 'import stdin: 1 added, 0 changed, 0 unchanged, 0 refused\n', err: '' });
    expect(JSON.parse((await run(['user', 'import', '-', '--json'], '{"name": "bob", "senders": "bob@example.com", "countries": "DE"}')).out)).toMatchObject({ added: 1, without_password: 0 });
  });

  it('exits 2 without a FILE, 1 for a file it cannot read, naming it', async () => {
    const none = await run(['user', 'import']);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/^postern: postern user import needs a FILE \(or - for standard input\)\n\nUsage: postern user import FILE\|- /);
    expect(await run(['user', 'import', 'a.csv', 'b.csv'])).toMatchObject({ code: 2, err: expect.stringMatching(/^postern: postern user import takes one FILE, got also "b.csv"\n/) });
    const missing = path.join(dir, 'nope.csv');
    expect(await run(['user', 'import', missing])).toEqual({ code: 1, out: '', err: `postern: cannot read ${missing}: no such file (give a CSV or JSON-lines file, or - for standard input)\n` });
    expect(await run(['user', 'import', dir])).toMatchObject({ code: 1, err: `postern: cannot read ${dir}: it is a directory (give a CSV or JSON-lines file, or - for standard input)\n` });
    expect(await run(['user', 'import', '--help'])).toMatchObject({ code: 0, out: expect.stringMatching(/^Usage: postern user import FILE/) });
  });
});
