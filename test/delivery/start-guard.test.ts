import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { outboundIdentityProblem } from '../../src/config/identity.js';
import { parseConfig } from '../../src/config/load.js';
import { startRelay } from '../../src/main.js';
import { createLogger } from '../../src/obs/log.js';
import { tempDir, testConfig } from '../helpers/relay.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('outbound identity guard', () => {
  it.each([
    ['mta-out.example.com', 'mail.example.com', null],
    ['mta-out.example.co.uk', 'mail.example.co.uk', null],
    ['mta-out.localhost.example', 'mail.localhost.example', null],
    ['mail.example.com', 'mail.example.com', /identity\.helo equals identity\.ptr \("mail\.example\.com"\): the HELO name must differ from the PTR name .* but share its registered domain/],
    ['MAIL.example.com.', 'mail.example.com', /equals identity\.ptr/],
    ['mta_out.example.com', 'mail.example.com', /contains "_", which RFC 5321 does not allow/],
    ['mta-out.example.net', 'mail.example.com', /registered domain example\.net\) is not in the registered domain of identity\.ptr "mail\.example\.com" \(example\.com\)/],
    // Two customers of one public suffix are not one operator.
    ['mta-out.alice.co.uk', 'mail.bob.co.uk', /not in the registered domain/],
    ['', 'mail.example.com', /identity\.helo is not set/],
    ['localhost', 'mail.example.com', /not a fully qualified host name/],
    ['mta-out.example.com', '', /identity\.ptr is not set/],
  ])('HELO %j with PTR %j -> %s', (helo, ptr, expected) => {
    const problem = outboundIdentityProblem({ helo, ptr });
    if (expected === null) expect(problem).toBeNull();
    else expect(problem).toMatch(expected);
  });

  it.each([
    ['HELO equal to the PTR name', { helo: 'mail.test.example', ptr: 'mail.test.example' }, /equals identity\.ptr/],
    ['an underscore in HELO', { helo: 'mta_out.test.example', ptr: 'mail.test.example' }, /contains "_"/],
    ['HELO in a foreign domain', { helo: 'mta-out.other.example', ptr: 'mail.test.example' }, /not in the registered domain/],
  ])('serve refuses to start with %s, before opening anything', async (_name, identity, message) => {
    const dir = tempDir();
    const cfg = testConfig(dir, { identity });
    await expect(startRelay(cfg, { log: createLogger('silent') })).rejects.toThrow(message);
    await expect(startRelay(cfg, { log: createLogger('silent') })).rejects.toThrow(/^refusing to start: /);
    expect(existsSync(path.join(dir, 'postern.db'))).toBe(false);
  });

  it('passes the shipped dev and example configs', () => {
    for (const file of ['config/postern.dev.toml', 'config/postern.example.toml']) {
      const cfg = parseConfig(parseToml(readFileSync(path.join(ROOT, file), 'utf8')), ROOT, file);
      expect(outboundIdentityProblem(cfg.identity), file).toBeNull();
    }
  });
});
