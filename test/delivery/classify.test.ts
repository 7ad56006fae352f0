import { describe, expect, it } from 'vitest';
import { classify } from '../../src/delivery/classify.js';
import { retryDelayMs } from '../../src/delivery/backoff.js';

describe('reply classification table', () => {
  it.each([
    ['250 2.0.0 Ok: queued as 12345', 'defer', 'unknown'],
    ['550 5.1.1 <x@y>: Recipient address rejected: User unknown', 'fail', 'recipient'],
    ['554 5.7.1 Message rejected as spam', 'fail', 'policy'],
    ['552 5.2.2 Mailbox full', 'fail', 'rejected'],
    ['552 4.2.2 Mailbox full, try later', 'defer', 'mailbox-full'],
    ['451 4.7.1 Greylisted', 'defer', 'transient'],
    ['421 4.7.0 Too many connections, closing', 'next-host', 'throttled'],
    ['ECONNREFUSED connect ECONNREFUSED 127.0.0.9:25', 'next-host', 'network'],
    ['ETIMEDOUT Connection timeout', 'next-host', 'network'],
    ['ETLS Error initiating TLS', 'next-host', 'tls'],
    ['EWEIRD something nobody planned for', 'defer', 'unknown'],
  ])('%s -> %s (%s)', (line, action, category) => {
    // An unknown answer is deferred, never bounced: losing mail is worse than retrying.
    expect(classify(line)).toMatchObject({ action, category });
  });

  it.each([
    ['550 5.1.1 User unknown', '5.1.1'],
    ['550 User unknown', '5.0.0'],
    ['451 Try later', '4.0.0'],
    ['ETLS handshake failed', '4.7.5'],
    ['ECONNREFUSED refused', '4.4.1'],
    ['ESOCKET reset', '4.4.2'],
  ])('%s carries status %s', (line, status) => {
    expect(classify(line).status).toBe(status);
  });
});

describe('backoff', () => {
  it('doubles from retry_initial_minutes and stops at retry_max_minutes', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => retryDelayMs(n, 5, 240) / 60_000)).toEqual([5, 10, 20, 40, 80, 160, 240, 240]);
  });
});
