import { isIP } from 'node:net';
import { cpSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { simpleParser, type ParsedMail } from 'mailparser';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/domain/clock.js';
import { createResolver } from '../../src/dns/resolver.js';
import { isTlsReport, parseTlsRpt, TlsReporter, type TlsSessionResult } from '../../src/delivery/tls-reports.js';
import { createLogger } from '../../src/obs/log.js';
import { Spool } from '../../src/spool/spool.js';
import { openStore, type Store } from '../../src/store/index.js';
import { startDnsServer, type DnsServer, type Rr } from '../helpers/dnsd.js';
import { closeDeliveryFixtures, startHarness } from '../helpers/delivery.js';
import { LogCapture, tempDir } from '../helpers/relay.js';

const DAY = 86_400_000;
/** Noon, 22 November 2026 (UTC): the ManualClock's start. */
const NOON = Date.UTC(2026, 10, 22, 12);
const MIDNIGHT = Date.UTC(2026, 10, 23);

const STS = ['version: STSv1', 'mode: enforce', 'mx: mx1.a.example', 'mx: *.a.example', 'max_age: 604800'];
const TLSA = ['_25._tcp.mx.b.example. IN TLSA 3 1 1 8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1'];

/** The RFC 8460 result types (4.3), and the keys 4.4 defines at each level (required ones first). */
const RESULT_TYPES = ['starttls-not-supported', 'certificate-host-mismatch', 'certificate-expired', 'certificate-not-trusted', 'validation-failure', 'tlsa-invalid', 'dnssec-invalid', 'dane-required', 'sts-policy-fetch-error', 'sts-policy-invalid', 'sts-webpki-invalid'];
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Every way `r` departs from the report format of RFC 8460 4.4 (required fields, their JSON
 * types, RFC 3339 date-times, non-negative integer counts, known keys only), and summaries
 * that do not add up to their failure details. [] for a valid report.
 */
function rfc8460Problems(r: unknown): string[] {
  const out: string[] = [];
  const obj = (v: unknown, at: string, required: string[], optional: string[] = []): Record<string, unknown> | null => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      out.push(`${at}: not an object`);
      return null;
    }
    const o = v as Record<string, unknown>;
    for (const k of required) if (!(k in o)) out.push(`${at}.${k}: missing`);
    for (const k of Object.keys(o)) if (!required.includes(k) && !optional.includes(k)) out.push(`${at}.${k}: not an RFC 8460 field`);
    return o;
  };
  const str = (v: unknown, at: string) => typeof v === 'string' && v !== '' ? true : (out.push(`${at}: not a non-empty string`), false);
  const count = (v: unknown, at: string) => (Number.isInteger(v) && (v as number) >= 0 ? true : (out.push(`${at}: not a non-negative integer`), false));
  const strings = (v: unknown, at: string) => (Array.isArray(v) && v.every((s) => typeof s === 'string') ? true : (out.push(`${at}: not an array of strings`), false));
  const ip = (v: unknown, at: string) => (typeof v === 'string' && isIP(v) ? true : (out.push(`${at}: not an IP address`), false));

  const top = obj(r, 'report', ['organization-name', 'date-range', 'contact-info', 'report-id', 'policies']);
  if (!top) return out;
  str(top['organization-name'], 'organization-name');
  str(top['contact-info'], 'contact-info');
  str(top['report-id'], 'report-id');
  const range = obj(top['date-range'], 'date-range', ['start-datetime', 'end-datetime']);
  if (range) {
    for (const k of ['start-datetime', 'end-datetime']) if (typeof range[k] !== 'string' || !RFC3339.test(range[k] as string) || Number.isNaN(Date.parse(range[k] as string))) out.push(`date-range.${k}: not an RFC 3339 date-time`);
    if (Date.parse(range['start-datetime'] as string) >= Date.parse(range['end-datetime'] as string)) out.push('date-range: ends before it starts');
  }
  if (!Array.isArray(top.policies) || !top.policies.length) return [...out, 'policies: not a non-empty array'];
  top.policies.forEach((p: unknown, i) => {
    const at = `policies[${i}]`;
    const pol = obj(p, at, ['policy', 'summary'], ['failure-details']);
    if (!pol) return;
    const policy = obj(pol.policy, `${at}.policy`, ['policy-type', 'policy-domain'], ['policy-string', 'mx-host']);
    if (policy) {
      if (!['tlsa', 'sts', 'no-policy-found'].includes(policy['policy-type'] as string)) out.push(`${at}.policy.policy-type: ${String(policy['policy-type'])}`);
      str(policy['policy-domain'], `${at}.policy.policy-domain`);
      if ('policy-string' in policy) strings(policy['policy-string'], `${at}.policy.policy-string`);
      if ('mx-host' in policy) strings(policy['mx-host'], `${at}.policy.mx-host`);
    }
    const summary = obj(pol.summary, `${at}.summary`, ['total-successful-session-count', 'total-failure-session-count']);
    if (summary) for (const k of ['total-successful-session-count', 'total-failure-session-count']) count(summary[k], `${at}.summary.${k}`);
    let failed = 0;
    if ('failure-details' in pol) {
      if (!Array.isArray(pol['failure-details'])) out.push(`${at}.failure-details: not an array`);
      else
        pol['failure-details'].forEach((f: unknown, j) => {
          const fat = `${at}.failure-details[${j}]`;
          const d = obj(f, fat, ['result-type', 'failed-session-count'], ['sending-mta-ip', 'receiving-mx-hostname', 'receiving-mx-helo', 'receiving-ip', 'additional-information', 'failure-reason-code']);
          if (!d) return;
          if (!RESULT_TYPES.includes(d['result-type'] as string)) out.push(`${fat}.result-type: ${String(d['result-type'])}`);
          if (count(d['failed-session-count'], `${fat}.failed-session-count`)) failed += d['failed-session-count'] as number;
          if ('sending-mta-ip' in d) ip(d['sending-mta-ip'], `${fat}.sending-mta-ip`);
          if ('receiving-ip' in d) ip(d['receiving-ip'], `${fat}.receiving-ip`);
          if ('receiving-mx-hostname' in d) str(d['receiving-mx-hostname'], `${fat}.receiving-mx-hostname`);
        });
    }
    if (summary && summary['total-failure-session-count'] !== failed) out.push(`${at}: total-failure-session-count ${String(summary['total-failure-session-count'])} but failure-details add up to ${failed}`);
  });
  return out;
}

/** The zone: two domains that ask for reports, one without a record, one that asks by https only. */
const ZONE: Rr[] = [
  { type: 'TXT', name: '_smtp._tls.a.example', data: 'v=TLSRPTv1; rua=mailto:tlsrpt@a.example' },
  // One record in two strings, https beside mailto, two addresses in one mailto (the comma encoded).
  { type: 'TXT', name: '_smtp._tls.b.example', data: ['v=TLSRPTv1;rua=https://reports.b.example/tlsrpt,', 'mailto:tlsrpt@b.example%2Cnoc@b.example'] },
  { type: 'TXT', name: '_smtp._tls.b.example', data: 'google-site-verification=abc' },
  { type: 'TXT', name: '_smtp._tls.d.example', data: 'v=TLSRPTv1; rua=https://reports.d.example/v1' },
];

let dns: DnsServer;
/** A migrated data dir each test starts from a copy of (a migration costs ~100 ms of fsyncs). */
let template: string;
beforeAll(async () => {
  dns = await startDnsServer(ZONE);
  template = tempDir('postern-tls-reports-template-');
  openStore(template).close();
});
afterAll(async () => {
  await dns.close();
  rmSync(template, { recursive: true, force: true });
});

describe('TLS reports', () => {
  let dir: string;
  let store: Store;
  let spool: Spool;
  let clock: ManualClock;
  let logs: LogCapture;
  const reporter = (o: { enabled?: boolean; store?: Store; owner?: string } = {}) =>
    new TlsReporter({
      store: o.store ?? store,
      resolver: createResolver([dns.address]),
      accept: (m) => spool.accept(m),
      clock,
      log: createLogger('info', logs),
      from: 'postmaster@relay.test.example',
      organization: 'relay.test.example',
      enabled: o.enabled ?? true,
      owner: o.owner,
    });
  const session = (o: Partial<TlsSessionResult>): TlsSessionResult => ({ policyDomain: 'a.example', policyType: 'sts', policyString: STS, mxHost: 'mx1.a.example', sendingIp: '198.51.100.1', receivingIp: '192.0.2.10', result: 'success', at: NOON, ...o });
  const times = (n: number, r: TlsReporter, s: TlsSessionResult) => Array.from({ length: n }, () => r.record(s));
  /** The queued messages, parsed, by first recipient (queued in one turn, their order is the ids'). */
  const queued = async () => Promise.all((await store.queue.list('queued')).sort((x, y) => x.rcptTo[0]!.localeCompare(y.rcptTo[0]!)).map(async (m) => ({ ...m, parsed: await simpleParser((await store.queue.body(m.id))!) })));

  beforeEach(() => {
    dns.setRecords(ZONE);
    dir = tempDir('postern-tls-reports-');
    cpSync(template, dir, { recursive: true });
    store = openStore(dir);
    spool = new Spool(store.queue);
    clock = new ManualClock(NOON);
    logs = new LogCapture();
  });
  afterEach(async () => {
    await spool.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends each policy domain that asks for reports one report of the finished day, with its counts, and clears the day', async () => {
    const r = reporter();
    times(3, r, session({}));
    times(2, r, session({ mxHost: 'MX2.a.example.', receivingIp: '192.0.2.11', result: 'certificate-host-mismatch' }));
    r.record(session({ mxHost: 'mx2.a.example', receivingIp: '192.0.2.11', result: 'starttls-not-supported', at: MIDNIGHT - 1 }));
    // The policy changed during the day (testing before): a second policy in the same report.
    r.record(session({ policyString: STS.map((l) => l.replace('enforce', 'testing')), at: NOON - 6 * 3600_000 }));
    times(2, r, session({ policyDomain: 'B.example', policyType: 'tlsa', policyString: TLSA, mxHost: 'mx.b.example', receivingIp: '192.0.2.20' }));
    r.record(session({ policyDomain: 'b.example', policyType: 'tlsa', policyString: TLSA, mxHost: 'mx.b.example', sendingIp: null, receivingIp: null, result: 'validation-failure' }));
    times(4, r, session({ policyDomain: 'c.example', policyType: 'no-policy-found', policyString: [], mxHost: 'mx.c.example' }));
    r.record(session({ policyDomain: 'd.example', policyType: 'no-policy-found', policyString: [], mxHost: null, result: 'success' }));
    // The next day's session, counted for tomorrow's report.
    r.record(session({ at: MIDNIGHT + 60_000 }));

    // Not before the day is over, and not in its first minutes (counts of its last sessions may be on their way).
    expect(await r.sendDue()).toEqual([]);
    clock.set(MIDNIGHT + 60_000);
    expect(await r.sendDue()).toEqual([]);
    clock.set(MIDNIGHT + 30 * 60_000);
    expect(await r.sendDue()).toEqual([
      { day: '2026-11-22', domain: 'a.example', to: ['tlsrpt@a.example'] },
      { day: '2026-11-22', domain: 'b.example', to: ['tlsrpt@b.example', 'noc@b.example'] },
    ]);

    // Nothing is left of the day; the next day's count stays.
    expect(await store.tlsReports.entries('2026-11-22')).toEqual([]);
    expect(await store.tlsReports.daysBefore('2026-11-24')).toEqual(['2026-11-23']);
    expect(await store.tlsReports.entries('2026-11-23')).toEqual([
      { day: '2026-11-23', policyDomain: 'a.example', policyType: 'sts', policyString: STS.join('\n'), mxHost: 'mx1.a.example', result: 'success', sendingIp: '198.51.100.1', receivingIp: '192.0.2.10', count: 1 },
    ]);
    expect(logs.events('tls_report.skipped').map((l) => [l.domain, l.reason, l.successes, l.failures, l.ignored])).toEqual([
      ['c.example', 'no TLSRPT record', 4, 0, undefined],
      ['d.example', 'no mailto: rua', 1, 0, ['https://reports.d.example/v1']],
    ]);
    expect(logs.events('tls_report.sent').map((l) => [l.domain, l.to, l.successes, l.failures, l.ignored])).toEqual([
      ['a.example', ['tlsrpt@a.example'], 4, 3, undefined],
      ['b.example', ['tlsrpt@b.example', 'noc@b.example'], 2, 1, ['https://reports.b.example/tlsrpt']],
    ]);
    expect(logs.events('tls_report.error')).toEqual([]);

    const msgs = await queued();
    expect(msgs.map((m) => [m.mailFrom, m.rcptTo, m.principal, m.state])).toEqual([
      ['postmaster@relay.test.example', ['tlsrpt@a.example'], null, 'queued'],
      ['postmaster@relay.test.example', ['tlsrpt@b.example', 'noc@b.example'], null, 'queued'],
    ]);
    const begin = Date.UTC(2026, 10, 22) / 1000;
    const reports = msgs.map((m) => {
      const mail: ParsedMail = m.parsed;
      // RFC 8460 5.3: multipart/report; report-type="tlsrpt", a human part, the gzipped JSON.
      expect(mail.headers.get('content-type')).toMatchObject({ value: 'multipart/report', params: { 'report-type': 'tlsrpt' } });
      expect(mail.text).toMatch(/aggregate TLS report \(RFC 8460\)/);
      expect(mail.attachments).toHaveLength(1);
      const att = mail.attachments[0]!;
      expect(att.contentType).toBe('application/tlsrpt+gzip');
      const domain = mail.headers.get('tls-report-domain');
      expect(att.filename).toMatch(new RegExp(`^relay\\.test\\.example!${String(domain).replace('.', '\\.')}!${begin}!${begin + 86_399}![A-Za-z0-9]+\\.json\\.gz$`));
      expect(mail.headers.get('tls-report-submitter')).toBe('relay.test.example');
      const json = JSON.parse(gunzipSync(att.content).toString('utf8')) as Record<string, unknown>;
      expect(rfc8460Problems(json)).toEqual([]);
      expect(mail.subject).toBe(`Report Domain: ${String(domain)} Submitter: relay.test.example Report-ID: <${String(json['report-id'])}>`);
      expect(mail.from?.text).toBe('postmaster@relay.test.example');
      // The deliverer knows it for a report (RFC 8460 5.3: delivered despite TLS failures); a user's look-alike is not one.
      expect(isTlsReport(m.principalRef, Buffer.from(m.parsed.headerLines.map((l) => l.line).join('\r\n') + '\r\n\r\n'))).toBe(true);
      return { domain, json };
    });
    expect(reports.map((x) => x.domain)).toEqual(['a.example', 'b.example']);
    expect(reports[0]!.json['report-id']).not.toBe(reports[1]!.json['report-id']);
    const common = {
      'organization-name': 'relay.test.example',
      'date-range': { 'start-datetime': '2026-11-22T00:00:00Z', 'end-datetime': '2026-11-22T23:59:59Z' },
      'contact-info': 'postmaster@relay.test.example',
      'report-id': expect.any(String),
    };
    expect(reports[0]!.json).toEqual({
      ...common,
      policies: [
        {
          policy: { 'policy-type': 'sts', 'policy-string': STS, 'policy-domain': 'a.example', 'mx-host': ['mx1.a.example', '*.a.example'] },
          summary: { 'total-successful-session-count': 3, 'total-failure-session-count': 3 },
          'failure-details': [
            { 'result-type': 'certificate-host-mismatch', 'sending-mta-ip': '198.51.100.1', 'receiving-mx-hostname': 'mx2.a.example', 'receiving-ip': '192.0.2.11', 'failed-session-count': 2 },
            { 'result-type': 'starttls-not-supported', 'sending-mta-ip': '198.51.100.1', 'receiving-mx-hostname': 'mx2.a.example', 'receiving-ip': '192.0.2.11', 'failed-session-count': 1 },
          ],
        },
        {
          policy: { 'policy-type': 'sts', 'policy-string': STS.map((l) => l.replace('enforce', 'testing')), 'policy-domain': 'a.example', 'mx-host': ['mx1.a.example', '*.a.example'] },
          summary: { 'total-successful-session-count': 1, 'total-failure-session-count': 0 },
          'failure-details': [],
        },
      ],
    });
    expect(reports[1]!.json).toEqual({
      ...common,
      policies: [
        {
          policy: { 'policy-type': 'tlsa', 'policy-string': TLSA, 'policy-domain': 'b.example', 'mx-host': ['mx.b.example'] },
          summary: { 'total-successful-session-count': 2, 'total-failure-session-count': 1 },
          // Unknown addresses are left out, not sent as "".
          'failure-details': [{ 'result-type': 'validation-failure', 'receiving-mx-hostname': 'mx.b.example', 'failed-session-count': 1 }],
        },
      ],
    });

    // A second round finds nothing due: the next day is not over.
    expect(await r.sendDue()).toEqual([]);
    expect(await store.queue.list('queued')).toHaveLength(2);
    expect(await store.tlsReports.entries('2026-11-23')).toHaveLength(1);
  });

  it('off ([delivery] tls_reports = false): counts nothing and sends nothing', async () => {
    const r = reporter({ enabled: false });
    times(3, r, session({}));
    clock.set(MIDNIGHT + DAY);
    expect(await r.sendDue()).toEqual([]);
    expect(await store.tlsReports.daysBefore('2027-01-01')).toEqual([]);
    expect(await store.queue.list('queued')).toEqual([]);
  });

  it('sends nothing while another node holds the lease, and the day once it has lapsed', async () => {
    const r = reporter({ owner: 'node-a' });
    r.record(session({}));
    clock.set(MIDNIGHT + 30 * 60_000);
    expect(await store.leases.take('tls-reports', 'node-b', clock.now(), clock.now() + 600_000)).toBe(true);
    expect(await r.sendDue()).toEqual([]);
    expect(await store.tlsReports.entries('2026-11-22')).toHaveLength(1);
    clock.advance(600_000);
    expect(await r.sendDue()).toEqual([{ day: '2026-11-22', domain: 'a.example', to: ['tlsrpt@a.example'] }]);
    // The round gave the lease up: another node may take it at once.
    expect(await store.leases.take('tls-reports', 'node-b', clock.now(), clock.now() + 600_000)).toBe(true);
  });

  it('keeps the counts when the TXT lookup fails (SERVFAIL) and sends them at a later round', async () => {
    const r = reporter();
    r.record(session({}));
    clock.set(MIDNIGHT + 30 * 60_000);
    dns.setRecords([{ type: 'SERVFAIL', name: '_smtp._tls.a.example' }]);
    expect(await r.sendDue()).toEqual([]);
    expect(logs.events('tls_report.error').map((l) => [l.domain, l.err])).toEqual([['a.example', '_smtp._tls.a.example TXT: ESERVFAIL']]);
    expect(await store.tlsReports.entries('2026-11-22')).toHaveLength(1);
    dns.setRecords(ZONE);
    expect(await r.sendDue()).toEqual([{ day: '2026-11-22', domain: 'a.example', to: ['tlsrpt@a.example'] }]);
  });

  it('logs a count the store refused (tls_report.error) and never throws to the deliverer', async () => {
    store.close();
    const r = reporter();
    expect(() => r.record(session({}))).not.toThrow();
    expect(() => r.record(session({ policyDomain: '' }))).not.toThrow();
    await logs.logged('tls_report.error', 2);
    expect(logs.events('tls_report.error').map((l) => l.domain).sort()).toEqual(['', 'a.example']);
  });
});

describe('the RFC 8460 check of this file', () => {
  it('the report check finds what RFC 8460 requires missing or of the wrong type', () => {
    const bad = {
      'organization-name': 'x',
      'date-range': { 'start-datetime': '2026-11-22 00:00:00', 'end-datetime': '2026-11-22T23:59:59Z' },
      'report-id': 'r',
      policies: [{ policy: { 'policy-type': 'dane', 'policy-domain': 'a.example', mx_host: [] }, summary: { 'total-successful-session-count': 1.5, 'total-failure-session-count': 2 }, 'failure-details': [{ 'result-type': 'tls-broken', 'receiving-ip': '', 'failed-session-count': 1 }] }],
    };
    expect(rfc8460Problems(bad)).toEqual([
      'report.contact-info: missing',
      'contact-info: not a non-empty string',
      'date-range.start-datetime: not an RFC 3339 date-time',
      'policies[0].policy.mx_host: not an RFC 8460 field',
      'policies[0].policy.policy-type: dane',
      'policies[0].summary.total-successful-session-count: not a non-negative integer',
      'policies[0].failure-details[0].result-type: tls-broken',
      'policies[0].failure-details[0].receiving-ip: not an IP address',
      'policies[0]: total-failure-session-count 2 but failure-details add up to 1',
    ]);
  });
});

describe('isTlsReport', () => {
  it('is a message of no principal with a TLS-Report-Domain field in its header section', () => {
    const msg = (head: string) => Buffer.from(`${head}\r\n\r\nbody\r\n`);
    expect(isTlsReport(null, msg('From: <p@r.example>\r\nTLS-Report-Domain: a.example'))).toBe(true);
    expect(isTlsReport(null, msg('From: <p@r.example>\r\ntls-report-domain: a.example'))).toBe(true);
    expect(isTlsReport({ kind: 'user', id: 1, name: 'alice', ref: 1 }, msg('TLS-Report-Domain: a.example'))).toBe(false);
    expect(isTlsReport(null, msg('From: <p@r.example>\r\nSubject: x'))).toBe(false);
    expect(isTlsReport(null, Buffer.from('From: <p@r.example>\r\n\r\nTLS-Report-Domain: a.example\r\n'))).toBe(false);
  });
});

describe('the TLSRPT record (RFC 8460 3)', () => {
  const cases: Array<[string, string[][], ReturnType<typeof parseTlsRpt>]> = [
    ['one mailto', [['v=TLSRPTv1; rua=mailto:r@a.example']], { mailto: ['r@a.example'], ignored: [] }],
    ['strings of one record joined, spaces around delimiters', [['v=TLSRPTv1 ;  rua=mailto:r@a.e', 'xample , mailto:s@a.example ;']], { mailto: ['r@a.example', 's@a.example'], ignored: [] }],
    ['https ignored', [['v=TLSRPTv1; rua=https://r.a.example/x,mailto:r@a.example']], { mailto: ['r@a.example'], ignored: ['https://r.a.example/x'] }],
    ['a query after the address dropped', [['v=TLSRPTv1; rua=mailto:r@a.example?subject=x']], { mailto: ['r@a.example'], ignored: [] }],
    ['an address that could break a header ignored', [['v=TLSRPTv1; rua=mailto:r@a.example%0D%0ABcc:x@y']], { mailto: [], ignored: ['mailto:r@a.example%0D%0ABcc:x@y'] }],
    ['other TXT records beside it discarded', [['spf?'], ['v=TLSRPTv1; rua=mailto:r@a.example']], { mailto: ['r@a.example'], ignored: [] }],
    ['two TLSRPT records: none', [['v=TLSRPTv1; rua=mailto:r@a.example'], ['v=TLSRPTv1; rua=mailto:s@a.example']], null],
    ['another version: none', [['v=TLSRPTv2; rua=mailto:r@a.example']], null],
    ['the version is case-sensitive', [['v=tlsrptv1; rua=mailto:r@a.example']], null],
    ['no rua: none', [['v=TLSRPTv1; ext=1']], null],
    ['no record', [], null],
  ];
  it.each(cases)('%s', (_name, txt, want) => {
    expect(parseTlsRpt(txt)).toEqual(want);
  });
});

describe('TLS reports wired into delivery', () => {
  afterEach(closeDeliveryFixtures);

  it('[delivery] tls_reports = true: the deliverer records, and the report goes from [notify] from or postmaster@hostname', async () => {
    // a.example's address refuses connections: the report is deferred and stays in the queue to be read.
    const h = await startHarness({ records: [...ZONE, { type: 'A', name: 'a.example', data: '127.0.0.1' }], port: 1, config: { delivery: { tls_reports: true } } });
    const rec = { policyDomain: 'a.example', policyType: 'sts' as const, policyString: STS, mxHost: 'mx1.a.example', sendingIp: null, receivingIp: null, result: 'success', at: h.clock.now() };
    h.delivery.tlsReports.record(rec);
    h.clock.advance(DAY);
    expect(await h.delivery.tlsReports.sendDue()).toEqual([{ day: '2026-11-22', domain: 'a.example', to: ['tlsrpt@a.example'] }]);
    const [m] = await h.store.queue.list('queued');
    expect([m!.mailFrom, m!.rcptTo]).toEqual([`postmaster@${h.cfg.server.hostname}`, ['tlsrpt@a.example']]);
  });

  it('off by default', async () => {
    const h = await startHarness({ records: ZONE, port: 1 });
    expect(h.cfg.delivery.tls_reports).toBe(false);
    h.delivery.tlsReports.record({ policyDomain: 'a.example', policyType: 'sts', policyString: STS, mxHost: null, sendingIp: null, receivingIp: null, result: 'success', at: h.clock.now() });
    h.clock.advance(DAY);
    expect(await h.delivery.tlsReports.sendDue()).toEqual([]);
    expect(await h.store.tlsReports.daysBefore('2030-01-01')).toEqual([]);
  });
});
