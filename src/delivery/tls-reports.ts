import { randomBytes, randomUUID } from 'node:crypto';
import { domainToASCII } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { Clock } from '../domain/clock.js';
import type { NewMessage } from '../domain/types.js';
import type { Logger } from '../obs/log.js';
import { newQueueId, rfc5322Date } from '../spool/message.js';
import type { Store } from '../store/index.js';
import { processOwner } from '../store/shared.js';
import type { TlsReportEntry, TlsReportKey } from '../store/tls-reports.js';

/** One delivery session's TLS, as the deliverer tells the reporter. */
export interface TlsSessionResult {
  policyDomain: string;
  policyType: 'sts' | 'tlsa' | 'no-policy-found';
  /** The MTA-STS policy's lines (or the TLSA records), [] for none. */
  policyString: string[];
  mxHost: string | null;
  sendingIp: string | null;
  receivingIp: string | null;
  /** 'success', else an RFC 8460 result-type ('starttls-not-supported', 'certificate-host-mismatch', ...). */
  result: 'success' | (string & {});
  /** When the session ended (ms epoch, the injected clock): it counts towards this UTC day. */
  at: number;
}

export interface TlsReporterDeps {
  store: Pick<Store, 'tlsReports' | 'leases'>;
  resolver: { resolveTxt(name: string): Promise<string[][]> };
  /** The spool's accept: reports are queued like notices, with no principal. */
  accept: (msg: NewMessage) => Promise<void>;
  clock: Clock;
  log: Logger;
  /** Envelope and header sender, and the report's contact-info: [notify] from, or postmaster@hostname. */
  from: string;
  /** organization-name and TLS-Report-Submitter: [server] hostname. */
  organization: string;
  /** [delivery] tls_reports: off, nothing is counted or sent. */
  enabled: boolean;
  /** This process in the lease; default host:pid:random. */
  owner?: string;
  /** How often the timer looks for finished days (default 5 minutes). */
  intervalMs?: number;
}

const DAY_MS = 86_400_000;
/** The lease naming the node that sends reports; renewed per domain, so a dead node's successor starts within it. */
const LEASE = 'tls-reports';
const LEASE_MS = 10 * 60_000;
/**
 * A day is reported once it has been over this long: a session that ended just before
 * midnight is counted by its node a moment later (the store may even be busy for a few
 * seconds), and a count landing after its day's report would make a second report for it.
 */
export const TLS_REPORT_SETTLE_MS = 5 * 60_000;
/** Counts of a day that could not be reported for this long (DNS or the spool kept failing) are dropped. */
const GIVE_UP_DAYS = 7;

/** 'YYYY-MM-DD', the UTC day of `ms`. */
export const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);
const dayStart = (day: string): number => Date.parse(`${day}T00:00:00Z`);
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const normName = (s: string | null): string => (s ?? '').trim().toLowerCase().replace(/\.$/, '');
/** Keeps a header field on one line and in ASCII: domains come from recipients' addresses. */
const oneLine = (s: string): string => s.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?').slice(0, 900);
/** A domain as RFC 8460 5.1 wants it in file names and headers: A-labels. */
const aLabel = (d: string): string => domainToASCII(d) || d;

/** What `_smtp._tls.<domain>` says: where reports go, and the URIs Postern cannot use (https). */
export interface TlsRptRecord {
  mailto: string[];
  ignored: string[];
}

/**
 * The TLSRPT record among a name's TXT records (RFC 8460 3): records not beginning with
 * "v=TLSRPTv1;" are discarded, and anything but exactly one left means no reporting. rua is
 * a comma-separated list of URIs (commas inside one encoded as %2C); mailto: ones give
 * addresses, others (https: POST) are returned as ignored.
 */
export function parseTlsRpt(txt: string[][]): TlsRptRecord | null {
  const records = txt.map((chunks) => chunks.join('')).filter((r) => /^v=TLSRPTv1[ \t]*;/.test(r));
  if (records.length !== 1) return null;
  const fields = records[0]!.split(';').map((f) => f.trim());
  const rua = fields.find((f) => f.startsWith('rua='));
  if (rua === undefined) return null;
  const out: TlsRptRecord = { mailto: [], ignored: [] };
  for (const uri of rua.slice(4).split(',').map((u) => u.trim()).filter(Boolean)) {
    if (!/^mailto:/i.test(uri)) {
      out.ignored.push(uri);
      continue;
    }
    let addresses: string;
    try {
      addresses = decodeURIComponent(uri.slice(7).split('?')[0]!);
    } catch {
      out.ignored.push(uri);
      continue;
    }
    for (const a of addresses.split(',').map((x) => x.trim())) {
      // An address goes into To: and RCPT TO: nothing that could end a field or a command.
      if (/^[^\s<>@,;"]+@[A-Za-z0-9.-]+$/.test(a)) {
        if (!out.mailto.includes(a)) out.mailto.push(a);
      } else out.ignored.push(uri);
    }
  }
  return out;
}

/** The RFC 8460 4.4 report of one policy domain's day, from its counts. */
export function buildTlsReport(o: { day: string; domain: string; entries: TlsReportEntry[]; organization: string; contact: string; reportId: string }): TlsReportJson {
  const start = dayStart(o.day);
  const policies = new Map<string, TlsReportJson['policies'][number]>();
  for (const e of o.entries) {
    const key = `${e.policyType}\n${e.policyString}`;
    let p = policies.get(key);
    if (!p) {
      const lines = e.policyString === '' ? [] : e.policyString.split('\n');
      // For MTA-STS the patterns of the policy's mx: lines (RFC 8460 4.3); otherwise the MX hosts met.
      const patterns = e.policyType === 'sts' ? lines.flatMap((l) => /^mx:\s*(\S+)\s*$/.exec(l)?.[1] ?? []) : [];
      p = {
        policy: { 'policy-type': e.policyType, 'policy-string': lines, 'policy-domain': o.domain, 'mx-host': patterns },
        summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 0 },
        'failure-details': [],
      };
      policies.set(key, p);
    }
    if (e.policyType !== 'sts' && e.mxHost && !p.policy['mx-host'].includes(e.mxHost)) p.policy['mx-host'].push(e.mxHost);
    if (e.result === 'success') {
      p.summary['total-successful-session-count'] += e.count;
      continue;
    }
    p.summary['total-failure-session-count'] += e.count;
    // Unknown addresses and hosts are left out rather than sent as "" (not an address).
    p['failure-details'].push({
      'result-type': e.result,
      ...(e.sendingIp ? { 'sending-mta-ip': e.sendingIp } : {}),
      ...(e.mxHost ? { 'receiving-mx-hostname': e.mxHost } : {}),
      ...(e.receivingIp ? { 'receiving-ip': e.receivingIp } : {}),
      'failed-session-count': e.count,
    });
  }
  return {
    'organization-name': o.organization,
    'date-range': { 'start-datetime': iso(start), 'end-datetime': iso(start + DAY_MS - 1000) },
    'contact-info': o.contact,
    'report-id': o.reportId,
    policies: [...policies.values()],
  };
}

export interface TlsReportJson {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: Array<{
    policy: { 'policy-type': string; 'policy-string': string[]; 'policy-domain': string; 'mx-host': string[] };
    summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
    'failure-details': Array<{ 'result-type': string; 'sending-mta-ip'?: string; 'receiving-mx-hostname'?: string; 'receiving-ip'?: string; 'failed-session-count': number }>;
  }>;
}

/**
 * The report as mail (RFC 8460 5.3): multipart/report; report-type="tlsrpt" with a
 * human-readable part and the JSON gzipped as application/tlsrpt+gzip, named as 5.1
 * recommends, with the TLS-Report-Domain and TLS-Report-Submitter fields and the Subject 5.3
 * gives.
 */
export function composeTlsReport(o: { report: TlsReportJson; domain: string; from: string; to: string[]; organization: string; now: number }): NewMessage {
  const id = newQueueId(o.now);
  const r = o.report;
  const domain = oneLine(aLabel(o.domain));
  const submitter = oneLine(aLabel(o.organization));
  const begin = Math.floor(Date.parse(r['date-range']['start-datetime']) / 1000);
  const end = Math.floor(Date.parse(r['date-range']['end-datetime']) / 1000);
  const filename = `${submitter}!${domain}!${begin}!${end}!${r['report-id'].replace(/[^A-Za-z0-9]/g, '')}.json.gz`;
  const ok = r.policies.reduce((n, p) => n + p.summary['total-successful-session-count'], 0);
  const failed = r.policies.reduce((n, p) => n + p.summary['total-failure-session-count'], 0);
  const boundary = `${id}/${randomBytes(8).toString('hex')}`;
  const head = [
    `From: <${o.from}>`,
    `To: ${o.to.map((a) => `<${a}>`).join(', ')}`,
    `Subject: Report Domain: ${domain} Submitter: ${submitter} Report-ID: <${oneLine(r['report-id'])}>`,
    `Date: ${rfc5322Date(o.now)}`,
    `Message-ID: <${id}.tlsrpt.${randomBytes(6).toString('hex')}@${submitter}>`,
    `TLS-Report-Domain: ${domain}`,
    `TLS-Report-Submitter: ${submitter}`,
    'Auto-Submitted: auto-generated',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt";\r\n\tboundary="${boundary}"`,
  ].join('\r\n');
  const human = [
    `This is an aggregate TLS report (RFC 8460) from ${submitter} for ${domain},`,
    `covering ${r['date-range']['start-datetime']} to ${r['date-range']['end-datetime']}:`,
    `${ok} successful and ${failed} failed TLS sessions to its mail servers.`,
    '',
    `It is sent because ${domain} asks for TLS reports in the TXT record of _smtp._tls.${domain}.`,
    `The report itself is the attached ${filename}.`,
  ].join('\r\n');
  const gz = gzipSync(Buffer.from(JSON.stringify(r), 'utf8')).toString('base64').replace(/.{76}/g, '$&\r\n');
  const body = [
    `${head}\r\n`,
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
    '',
    human,
    `--${boundary}`,
    'Content-Type: application/tlsrpt+gzip',
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: attachment; filename="${filename}"`,
    '',
    gz.replace(/\r\n$/, ''),
    `--${boundary}--`,
    '',
  ].join('\r\n');
  return {
    id,
    envelope: { mailFrom: o.from, rcptTo: o.to },
    principal: null,
    clientIp: '127.0.0.1',
    receivedAt: o.now,
    state: 'queued',
    data: Buffer.from(body, 'latin1'),
  };
}

/**
 * True for a TLS report this relay queued: no principal (Postern's own mail) and a
 * TLS-Report-Domain field. RFC 8460 5.3: such a report is delivered despite TLS failures (an
 * enforcing MTA-STS or DANE policy must not hold back the report about that very failure, so
 * it may go in the clear) and its session is left out of the next report. A user's message
 * carrying the field is not one.
 */
export function isTlsReport(principal: unknown, message: Buffer): boolean {
  if (principal !== null) return false;
  const head = message.subarray(0, 64 * 1024).toString('latin1');
  const end = head.search(/\r?\n\r?\n/);
  return /^TLS-Report-Domain:/im.test(end === -1 ? head : head.slice(0, end));
}

/** DNS answers meaning "no such record", as opposed to "ask again later". */
const NO_RECORD = new Set(['ENODATA', 'ENOTFOUND']);

/**
 * TLS reports (RFC 8460): the deliverer records each session's TLS outcome, counted per
 * policy domain and UTC day in the store (every node adds to the same counts); after a day
 * ends, one node at a time (a lease) sends each policy domain that asks for reports (its
 * `_smtp._tls` TXT record, mailto: only) one report for the day, and clears the day's counts.
 */
export class TlsReporter {
  private readonly pending = new Set<Promise<void>>();
  private readonly owner: string;
  private timer: ReturnType<typeof setInterval> | null = null;
  private running: Promise<{ day: string; domain: string; to: string[] }[]> | null = null;

  constructor(private readonly d: TlsReporterDeps) {
    this.owner = d.owner ?? processOwner(d.organization);
  }

  /** Counts one session (when enabled). Never throws and is never waited for: a failure is logged. */
  record(r: TlsSessionResult): void {
    if (!this.d.enabled) return;
    const domain = normName(r.policyDomain);
    try {
      if (!domain) throw new Error('no policy domain');
      const key: TlsReportKey = {
        day: utcDay(r.at),
        policyDomain: domain,
        policyType: r.policyType,
        policyString: r.policyString.join('\n'),
        mxHost: normName(r.mxHost),
        result: r.result,
        sendingIp: r.sendingIp ?? '',
        receivingIp: r.receivingIp ?? '',
      };
      const p: Promise<void> = this.d.store.tlsReports.add(key).catch((e: unknown) => this.d.log.error({ event: 'tls_report.error', domain, err: (e as Error).message }));
      this.pending.add(p);
      void p.finally(() => this.pending.delete(p));
    } catch (e) {
      this.d.log.error({ event: 'tls_report.error', domain, err: (e as Error).message });
    }
  }

  /**
   * Sends every finished UTC day's reports (see TLS_REPORT_SETTLE_MS), one message per policy
   * domain that publishes a TLSRPT record with a mailto: rua, then clears that day's counts of
   * the domain; domains without one are cleared without a report. Only the node holding the
   * lease sends; the others return at once. Returns what it queued.
   */
  sendDue(): Promise<{ day: string; domain: string; to: string[] }[]> {
    if (!this.d.enabled) return Promise.resolve([]);
    this.running ??= this.round().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async round(): Promise<{ day: string; domain: string; to: string[] }[]> {
    const { store, clock, log } = this.d;
    const sent: { day: string; domain: string; to: string[] }[] = [];
    // This process's counts still on their way to the store belong in the report.
    await Promise.all([...this.pending]);
    const lease = () => store.leases.take(LEASE, this.owner, clock.now(), clock.now() + LEASE_MS);
    try {
      if (!(await lease())) return sent;
      try {
        const days = await store.tlsReports.daysBefore(utcDay(clock.now() - TLS_REPORT_SETTLE_MS));
        for (const day of days) {
          const byDomain = new Map<string, TlsReportEntry[]>();
          for (const e of await store.tlsReports.entries(day)) byDomain.set(e.policyDomain, [...(byDomain.get(e.policyDomain) ?? []), e]);
          for (const [domain, entries] of byDomain) {
            // Renewed per domain: a long round keeps it; one another node took over ends here.
            if (!(await lease())) return sent;
            const to = await this.sendOne(day, domain, entries);
            if (to) sent.push({ day, domain, to });
          }
        }
      } finally {
        await store.leases.give(LEASE, this.owner).catch(() => undefined);
      }
    } catch (e) {
      log.error({ event: 'tls_report.error', err: (e as Error).message });
    }
    return sent;
  }

  /** One domain's day: the addresses it was queued to, or null (nobody to send to, or a failure to retry). */
  private async sendOne(day: string, domain: string, entries: TlsReportEntry[]): Promise<string[] | null> {
    const { store, clock, log } = this.d;
    const stale = dayStart(day) + (GIVE_UP_DAYS + 1) * DAY_MS <= clock.now();
    const successes = entries.reduce((n, e) => n + (e.result === 'success' ? e.count : 0), 0);
    const failures = entries.reduce((n, e) => n + (e.result === 'success' ? 0 : e.count), 0);
    const skip = async (reason: string, extra: Record<string, unknown> = {}) => {
      await store.tlsReports.clear(day, domain);
      log.info({ event: 'tls_report.skipped', day, domain, reason, successes, failures, ...extra });
      return null;
    };
    let record: TlsRptRecord | null;
    try {
      record = parseTlsRpt(await this.d.resolver.resolveTxt(`_smtp._tls.${aLabel(domain)}`));
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      if (NO_RECORD.has(code)) record = null;
      else if (stale) return skip('unreported', { err: (e as Error).message });
      else {
        // SERVFAIL or a timeout says nothing about the record: the counts wait for the next round.
        log.warn({ event: 'tls_report.error', day, domain, err: `_smtp._tls.${domain} TXT: ${code || (e as Error).message}` });
        return null;
      }
    }
    if (!record) return skip('no TLSRPT record');
    if (!record.mailto.length) return skip('no mailto: rua', { ignored: record.ignored });
    const report = buildTlsReport({ day, domain, entries, organization: this.d.organization, contact: this.d.from, reportId: randomUUID() });
    const msg = composeTlsReport({ report, domain, from: this.d.from, to: record.mailto, organization: this.d.organization, now: clock.now() });
    try {
      await this.d.accept(msg);
    } catch (e) {
      if (stale) return skip('unreported', { err: (e as Error).message });
      log.error({ event: 'tls_report.error', day, domain, err: (e as Error).message });
      return null;
    }
    // Queued first, cleared after: a failure in between sends the day again rather than never.
    await store.tlsReports.clear(day, domain);
    log.info({ event: 'tls_report.sent', day, domain, to: record.mailto, queue_id: msg.id, report_id: report['report-id'], successes, failures, ...(record.ignored.length ? { ignored: record.ignored } : {}) });
    return record.mailto;
  }

  /** Looks for finished days every few minutes (a timer that does not keep the process alive). */
  start(): void {
    if (!this.d.enabled || this.timer) return;
    this.timer = setInterval(() => void this.sendDue(), this.d.intervalMs ?? 5 * 60_000);
    this.timer.unref();
  }

  /** Stops the timer and waits for a round under way (which gives the lease up). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
