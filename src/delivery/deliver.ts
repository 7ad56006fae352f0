import type { Clock } from '../domain/clock.js';
import type { NewMessage } from '../domain/types.js';
import { principalFields, type Logger } from '../obs/log.js';
import { headerEnd, newQueueId } from '../spool/message.js';
import { ClaimLostError, type AttemptRecord, type DeliveryJob, type RecipientState, type RecipientUpdate } from '../store/delivery.js';
import type { Store } from '../store/index.js';
import { GroupCommit } from '../store/group-commit.js';
import { expired, retryDelayMs } from './backoff.js';
import { classify } from './classify.js';
import type { DkimSigner } from './dkim.js';
import { buildDsn, type FailedRecipient } from './dsn.js';
import type { Reputation } from './reputation.js';
import type { Router } from './routing.js';
import { SendError, type TlsLevel, type TlsOutcome, type Transport } from './transport.js';
import { stsMxMatches, type MtaSts, type StsPolicy } from './mta-sts.js';
import type { Dane, DaneHost, Tlsa } from './dane.js';
import type { DeliveryTls } from '../store/delivery.js';
import { isTlsReport, type TlsSessionResult } from './tls-reports.js';

export interface DelivererDeps {
  repo: Store['delivery'];
  queue: Store['queue'];
  /** This process's name in claims: outcomes are written only while the claim is still its own. */
  owner?: string;
  /** Only the spool writes new messages, DSNs included (Postfix's cleanup). */
  accept: (msg: NewMessage) => Promise<void>;
  router: Router;
  transport: Transport;
  dkim: DkimSigner;
  reputation: Reputation;
  clock: Clock;
  log: Logger;
  /** Name in Reporting-MTA and MAILER-DAEMON@ of DSNs. */
  reportingMta: string;
  /** [delivery.tls_policy]: a level, "mta-sts" (the domain's policy even with MTA-STS off) or "dane". */
  tlsPolicy: Record<string, TlsLevel | 'mta-sts' | 'dane'>;
  /** DANE lookups through a trusted validating resolver ([delivery] dane = "auto"); null: off. */
  dane?: Dane | null;
  /** [delivery] dane = "auto": every domain; else only those whose tls_policy says "dane". */
  daneDefault?: boolean;
  /** MTA-STS policies ([delivery] mta_sts); null: only domains whose tls_policy says "mta-sts" would use it, and there is none. */
  mtaSts?: MtaSts | null;
  /** [delivery] mta_sts: apply published policies to domains without a tls_policy entry. */
  mtaStsDefault?: boolean;
  /** Everything goes through a smarthost: recipient domains' policies do not apply to it. */
  smarthost?: boolean;
  /** Counts each session's TLS outcome for TLS reports (RFC 8460); never throws. */
  tlsReport?: (r: TlsSessionResult) => void;
  /** [identity] outbound_ip, for TLS reports ("" = unknown). */
  sendingIp?: string;
  maxQueueDays: number;
  retryInitialMinutes: number;
  retryMaxMinutes: number;
  /** True once delivery is stopping: an outcome the store cannot take is then given up on. */
  stopping?: () => boolean;
}

/** Pauses between tries to write an attempt's outcome while the store is away. */
const OUTCOME_RETRY_MS = [250, 500, 1000, 2000, 5000];

/** One recipient's outcome in this attempt, before it is written down. */
interface Outcome {
  rcpt: RecipientState;
  status: 'delivered' | 'deferred' | 'failed';
  /** RFC 3463 status. */
  code: string;
  /** Remote reply line or our reason. */
  text: string;
  remote: boolean;
  mx: string | null;
  tls: TlsOutcome | null;
  /** How TLS was decided for this attempt. */
  tlsPolicy: DeliveryTls['policy'];
  category: string;
}

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

const tlsSummary = (t: TlsOutcome | null) =>
  !t ? null : t.used ? `${t.protocol ?? 'TLS'} ${t.cipher ?? ''}${t.verified ? ' verified' : ' unverified'}`.replace(/\s+/g, ' ').trim() : `none (${t.note ?? 'not-offered'})`;

/**
 * One delivery attempt of one message (Postfix's smtp(8) plus the qmgr bookkeeping): route
 * each recipient domain, send, and turn every reply into a per-recipient outcome written in
 * one transaction. Failures become one DSN per attempt that produced them.
 */
export class Deliverer {
  /** Outcomes of attempts finishing in one turn share a transaction (on the NORMAL-sync connection). */
  private readonly writer: GroupCommit<AttemptRecord, boolean>;

  constructor(private readonly d: DelivererDeps) {
    this.writer = new GroupCommit(async (recs) => {
      const removed = await d.repo.recordAttempts(recs);
      return recs.map((r) => removed.has(r.id));
    });
  }

  async attempt(id: string): Promise<void> {
    const job = await this.d.repo.job(id);
    if (!job) return;
    const body = await this.d.queue.body(id);
    // Thrown, not returned: the scheduler then postpones the message instead of retrying it at once.
    if (!body) throw new Error(`message ${id} has no body in the spool`);
    const pending = job.recipients.filter((r) => r.status === 'pending');
    if (pending.length) {
      const signed = await this.d.dkim.sign(body);
      if (signed.domain) this.d.log.debug({ event: 'delivery.dkim', queue_id: id, domain: signed.domain, selector: signed.selector });

      const byDomain = new Map<string, RecipientState[]>();
      for (const r of pending) byDomain.set(domainOf(r.address), [...(byDomain.get(domainOf(r.address)) ?? []), r]);
      // RFC 8460 3, 5.3: a TLS report goes out even where the TLS it reports on fails, and is
      // not itself counted. Only Postern's own (no principal) count as one.
      const report = isTlsReport(job.principal, body);
      const outcomes = (await Promise.all([...byDomain].map(([domain, rcpts]) => (report ? this.deliverReport(job, domain, rcpts, signed.raw) : this.deliverDomain(job, domain, rcpts, signed.raw))))).flat();
      if (await this.record(job, outcomes)) {
        this.d.log.info({ event: 'delivery.done', queue_id: id });
        return;
      }
    }
    await this.finish(job.id, body.subarray(0, headerEnd(body)));
  }

  /**
   * A TLS report: under the domain's MTA-STS or DANE policy first, as any message (a report
   * says which of the domain's hosts failed, and whose), and, for the recipients that policy
   * refused, at once again without it (RFC 8460 3: delivered despite any TLS-related
   * failure, in the clear if it must be). Its sessions are counted in no report.
   */
  private async deliverReport(job: DeliveryJob, domain: string, rcpts: RecipientState[], raw: Buffer): Promise<Outcome[]> {
    const first = await this.deliverDomain(job, domain, rcpts, raw, { policies: true, counted: false });
    const refused = first.filter((o) => o.status === 'deferred' && (o.category === 'mta-sts' || o.category === 'dane'));
    if (!refused.length) return first;
    this.d.log.info({ event: 'delivery.tls_report_fallback', queue_id: job.id, domain, policy: refused[0]!.tlsPolicy, reason: refused[0]!.text });
    const again = await this.deliverDomain(job, domain, refused.map((o) => o.rcpt), raw, { policies: false, counted: false });
    return [...first.filter((o) => !refused.includes(o)), ...again];
  }

  /**
   * The recipients of one domain, in one session where it goes: `policies` false skips DANE and
   * MTA-STS (a TLS report's second try), `counted` false keeps the sessions out of TLS reports.
   */
  private async deliverDomain(job: DeliveryJob, domain: string, rcpts: RecipientState[], raw: Buffer, o: { policies: boolean; counted: boolean } = { policies: true, counted: true }): Promise<Outcome[]> {
    const all = (status: Outcome['status'], code: string, text: string, extra: Partial<Outcome> = {}): Outcome[] =>
      rcpts.map((rcpt) => ({ rcpt, status, code, text, remote: false, mx: null, tls: null, tlsPolicy: 'none', category: 'routing', ...extra }));

    const route = await this.d.router.route(domain);
    if (route.kind === 'fail') return all('failed', route.status, route.text);
    if (route.kind === 'defer') return all('deferred', route.status, route.text);

    // The TLS policy: a tls_policy entry, else DANE for the hosts that publish TLSA records in
    // a secure zone, else the domain's MTA-STS policy, else opportunistic.
    const manual = this.d.tlsPolicy[domain];
    const level = manual === 'mta-sts' || manual === 'dane' ? undefined : manual;
    let tls: TlsLevel = level ?? 'may';
    let tlsPolicy: DeliveryTls['policy'] = level ? 'manual' : 'opportunistic';
    let hosts = route.hosts;
    let sts: StsPolicy | null = null;
    let daneHosts: Map<string, DaneHost> | null = null;
    if (this.d.dane && !this.d.smarthost && o.policies && (manual === 'dane' || (!manual && this.d.daneDefault === true))) {
      const implicit = route.hosts.length === 1 && route.hosts[0]!.name === domain;
      const secure = await this.d.dane.domain(domain, implicit);
      if (secure === 'bogus') {
        this.d.log.warn({ event: 'delivery.dane_refused', queue_id: job.id, domain, reason: 'mx-bogus' });
        return all('deferred', '4.7.5', `DANE: the ${implicit ? 'address' : 'MX'} records of ${domain} failed DNSSEC validation`, { category: 'dane', tlsPolicy: 'dane' });
      }
      if (secure === 'secure') {
        const found = await Promise.all(route.hosts.map(async (h) => [h.name, await this.d.dane!.host(h.name)] as const));
        // RFC 7672 2.2: DANE for the hosts that have it; the others are the MTA-STS policy's.
        if (found.some(([, d]) => d.kind !== 'none')) daneHosts = new Map(found);
      }
    }
    // DANE only for its hosts: the domain's MTA-STS policy still governs every other MX host
    // (a backup MX in an unsigned zone is no way around an enforce policy).
    const hasDane = (name: string) => (daneHosts?.get(name)?.kind ?? 'none') !== 'none';
    if (this.d.mtaSts && !this.d.smarthost && o.policies && !route.hosts.every((h) => hasDane(h.name)) && (manual === 'mta-sts' || manual === 'dane' || (!manual && this.d.mtaStsDefault !== false))) {
      const found = await this.d.mtaSts.policy(domain);
      if (found.policy && found.policy.mode !== 'none') sts = found.policy;
      if (!found.policy && found.error && o.counted) this.report(domain, null, null, null, 'sts-policy-fetch-error');
    }
    // dane: the host's TLSA records ([] when none could be had), for the report's policy-string.
    const report = (mx: string | null, address: string | null, result: string, dane?: Tlsa[]) => (o.counted ? this.report(domain, dane ? { tlsa: dane } : sts, mx, address, result) : undefined);
    if (sts?.mode === 'enforce') {
      // RFC 8461 5: only the policy's MX hosts, with TLS and a certificate valid for the MX
      // name; never plaintext, never another host.
      hosts = route.hosts.filter((h) => hasDane(h.name) || stsMxMatches(sts.mx, h.name));
      tls = 'verify';
      tlsPolicy = 'mta-sts';
      if (!hosts.length) {
        const names = route.hosts.map((h) => h.name).join(', ');
        report(route.hosts[0]?.name ?? null, null, 'validation-failure');
        this.d.log.warn({ event: 'delivery.mta_sts_refused', queue_id: job.id, domain, mx: names, reason: 'mx-not-in-policy' });
        return all('deferred', '4.7.5', `MTA-STS policy of ${domain} (enforce, id ${sts.id}) names none of its MX hosts (${names})`, { category: 'mta-sts', tlsPolicy });
      }
    }
    let last: { line: string; mx: string; tls: TlsOutcome | null; policy: DeliveryTls['policy'] } = { line: 'ECONNECTION no MX host could be tried', mx: '', tls: null, policy: tlsPolicy };
    for (const host of hosts) {
      const dane = daneHosts?.get(host.name);
      if (dane?.kind === 'unusable') {
        // RFC 7672 2.1.1: a host whose TLSA lookup failed is skipped, never tried without them.
        report(host.name, null, 'dnssec-invalid', []);
        this.d.log.info({ event: 'delivery.mx_unusable', queue_id: job.id, domain, mx: host.name, error: `DANE: ${dane.reason}` });
        last = { line: `ETLS DANE: ${dane.reason}`, mx: host.name, tls: null, policy: 'dane' };
        continue;
      }
      const daneHere = dane?.kind === 'dane' || dane?.kind === 'encrypt';
      const tlsaHere = dane?.kind === 'dane' ? dane.records : daneHere ? [] : undefined;
      const hostTls: TlsLevel = daneHere ? 'encrypt' : tls;
      const hostPolicy: DeliveryTls['policy'] = daneHere ? 'dane' : tlsPolicy;
      // testing: delivered as without a policy; what enforce would have refused is logged and counted.
      if (sts?.mode === 'testing' && !stsMxMatches(sts.mx, host.name)) {
        this.d.log.warn({ event: 'delivery.mta_sts_testing', queue_id: job.id, domain, mx: host.name, would: 'defer', reason: 'mx-not-in-policy' });
      }
      for (const address of host.addresses) {
        try {
          const res = await this.d.transport.send({
            target: { address, port: host.port, name: host.name },
            tls: hostTls,
            ...(dane?.kind === 'dane' ? { dane: dane.records } : {}),
            from: job.mailFrom,
            to: rcpts.map((r) => r.address),
            raw,
          });
          report(host.name, address, !res.tls.used ? 'starttls-not-supported' : (sts || daneHere) && !res.tls.verified && dane?.kind !== 'encrypt' ? 'certificate-not-trusted' : 'success', tlsaHere);
          if (sts?.mode === 'testing' && !res.tls.verified) {
            this.d.log.warn({ event: 'delivery.mta_sts_testing', queue_id: job.id, domain, mx: host.name, would: 'defer', reason: res.tls.used ? 'certificate-not-verified' : 'no-tls' });
          }
          const rejected = new Map(res.rejected.map((r) => [r.rcpt.toLowerCase(), r.reply]));
          return rcpts.map((rcpt) => {
            const reply = rejected.get(rcpt.address.toLowerCase());
            if (reply === undefined) {
              return { rcpt, status: 'delivered', code: /^2\d\d[ -](2\.\d{1,3}\.\d{1,3})\b/.exec(res.response)?.[1] ?? '2.0.0', text: res.response, remote: true, mx: host.name, tls: res.tls, tlsPolicy: hostPolicy, category: 'ok' };
            }
            return this.fromReply(rcpt, reply, host.name, res.tls, hostPolicy);
          });
        } catch (e) {
          if (!(e instanceof SendError)) throw e;
          if (e.scope === 'message') {
            report(host.name, address, !e.tls?.used ? 'starttls-not-supported' : sts && !e.tls.verified ? 'certificate-not-trusted' : 'success', tlsaHere);
            const perRcpt = new Map(e.rejected.map((r) => [r.rcpt.toLowerCase(), r.reply]));
            return rcpts.map((rcpt) => this.fromReply(rcpt, perRcpt.get(rcpt.address.toLowerCase()) ?? e.line, host.name, e.tls, hostPolicy));
          }
          if (e.line.startsWith('ETLS')) {
            // RFC 8460 4.3 result types, from the TLS error's code where there is one.
            const kind = /DANE: no TLSA record/.test(e.line)
              ? 'validation-failure'
              : /CERT_HAS_EXPIRED|CERT_NOT_YET_VALID/.test(e.line)
                ? 'certificate-expired'
                : /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|CERT_UNTRUSTED|CERT_SIGNATURE/.test(e.line)
                  ? 'certificate-not-trusted'
                  : /certificate|CERT|hostname|altnames|DANE/i.test(e.line)
                    ? 'certificate-host-mismatch'
                    : 'starttls-not-supported';
            report(host.name, address, kind, tlsaHere);
          }
          // RFC 5321 5.1: a host that cannot be reached or will not talk is skipped for the next.
          this.d.log.info({ event: 'delivery.mx_unusable', queue_id: job.id, domain, mx: host.name, address, error: e.line });
          last = { line: e.line, mx: host.name, tls: e.tls, policy: hostPolicy };
        }
      }
    }
    const c = classify(last.line);
    // No host answered for the message: only an explicit 5xx from the last one is final.
    const status = c.action === 'fail' ? 'failed' : 'deferred';
    if (last.policy === 'dane' && last.line.startsWith('ETLS')) {
      this.d.log.warn({ event: 'delivery.dane_refused', queue_id: job.id, domain, mx: last.mx, reason: last.line.includes('DNSSEC') ? 'tlsa-bogus' : 'tls' });
      return all('deferred', '4.7.5', `DANE: ${domain}: no MX host could be authenticated by its TLSA records; last ${last.mx}: ${last.line}`, { mx: last.mx || null, tls: last.tls, tlsPolicy: 'dane', category: 'dane' });
    }
    if (last.policy === 'mta-sts' && last.line.startsWith('ETLS')) {
      // Say which policy refused: the admin and the DSN's reader look for the cause there.
      this.d.log.warn({ event: 'delivery.mta_sts_refused', queue_id: job.id, domain, mx: last.mx, reason: 'tls' });
      return all('deferred', '4.7.5', `MTA-STS policy of ${domain} (enforce) requires TLS with a certificate valid for ${last.mx}: ${last.line}`, { mx: last.mx || null, tls: last.tls, tlsPolicy, category: 'mta-sts' });
    }
    return all(status, c.status, last.line, { remote: /^\d{3}/.test(last.line), mx: last.mx || null, tls: last.tls, tlsPolicy, category: c.category });
  }

  /**
   * One session for TLS reports: the policy domain, the policy that applied, the MX and the
   * result. RFC 8460 4.4's policy-string: the MTA-STS policy's lines, or the TLSA records in
   * presentation form ("3 1 1 1F85..."), one per line.
   */
  private report(domain: string, policy: StsPolicy | { tlsa: Tlsa[] } | null, mx: string | null, address: string | null, result: string): void {
    const tlsa = policy && 'tlsa' in policy ? policy.tlsa : null;
    this.d.tlsReport?.({
      policyDomain: domain,
      policyType: tlsa ? 'tlsa' : policy ? 'sts' : 'no-policy-found',
      // Sorted and without repeats: a resolver that rotates the RRset must not split one
      // host's sessions over two policies of the report.
      policyString: tlsa ? [...new Set(tlsa.map((r) => `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString('hex').toUpperCase()}`))].sort() : policy && 'text' in policy ? policy.text : [],
      mxHost: mx,
      sendingIp: this.d.sendingIp || null,
      receivingIp: address,
      result,
      at: this.d.clock.now(),
    });
  }

  private fromReply(rcpt: RecipientState, reply: string, mx: string, tls: TlsOutcome | null, tlsPolicy: DeliveryTls['policy']): Outcome {
    const c = classify(reply);
    return { rcpt, status: c.action === 'fail' ? 'failed' : 'deferred', code: c.status, text: reply, remote: true, mx, tls, tlsPolicy, category: c.category };
  }

  /**
   * Writes an attempt's outcome, waiting for a store that is away (a database restarting):
   * the remote servers have answered, and an outcome given up would send delivered mail
   * again. The claim is kept (renewed) meanwhile, so no other process takes the message
   * while the outage is shorter than claim_lease_seconds. A try whose commit landed but whose
   * answer was lost is recognised on the next try (the message is gone, or its attempt count
   * has moved past `attemptsBefore`) and not written twice. It ends when written, when another
   * process has taken the message over (ClaimLostError: its outcome counts), or when delivery
   * stops (the message is then tried again later: a duplicate, never a loss).
   */
  private async writeOutcome(rec: AttemptRecord, attemptsBefore: number): Promise<boolean> {
    for (let i = 0; ; i++) {
      try {
        if (i > 0) {
          const now = await this.d.repo.job(rec.id);
          if (!now || now.attempts > attemptsBefore) {
            this.d.log.info({ event: 'delivery.outcome_written', queue_id: rec.id, tries: i });
            return !now;
          }
        }
        const removed = await this.writer.push(rec);
        if (i > 0) this.d.log.info({ event: 'delivery.outcome_written', queue_id: rec.id, tries: i + 1 });
        return removed;
      } catch (e) {
        if (e instanceof ClaimLostError || this.d.stopping?.()) throw e;
        if (i === 0) this.d.log.warn({ event: 'delivery.outcome_retry', queue_id: rec.id, err: (e as Error).message });
        await new Promise((r) => setTimeout(r, OUTCOME_RETRY_MS[Math.min(i, OUTCOME_RETRY_MS.length - 1)]));
        if (this.d.stopping?.()) throw e;
      }
    }
  }

  /** Writes the outcomes; true when that left nothing to do and the message is gone. */
  private async record(job: DeliveryJob, outcomes: Outcome[]): Promise<boolean> {
    const now = this.d.clock.now();
    const isExpired = expired(job.receivedAt, now, this.d.maxQueueDays);
    for (const o of outcomes) {
      if (o.status === 'deferred' && isExpired) {
        // RFC 3463 4.4.7: delivery time expired; the last reason goes into the DSN too.
        o.status = 'failed';
        o.text = `delivery time expired after ${this.d.maxQueueDays} days; last error: ${o.text}`;
        o.code = '4.4.7';
        o.remote = false;
        o.category = 'expired';
      }
    }
    const stillPending = outcomes.some((o) => o.status === 'deferred') ||
      job.recipients.some((r) => r.status === 'pending' && !outcomes.some((o) => o.rcpt.position === r.position));
    const next = stillPending ? now + retryDelayMs(job.attempts + 1, this.d.retryInitialMinutes, this.d.retryMaxMinutes) : null;
    const updates: RecipientUpdate[] = outcomes.map((o) => ({
      position: o.rcpt.position,
      status: o.status === 'deferred' ? 'pending' : o.status,
      error: o.status === 'delivered' ? null : o.text,
      statusCode: o.code,
      remoteMta: o.mx,
      // Known once a policy decided or a connection was made; routing failures have neither.
      tls: o.tls || o.tlsPolicy !== 'none' ? { version: o.tls?.used ? (o.tls.protocol ?? 'TLS') : null, verified: o.tls?.verified ?? false, policy: o.tlsPolicy } : null,
      remoteVerdict: o.remote && o.status === 'delivered' ? 'accepted' : o.remote && o.status === 'failed' ? 'rejected' : undefined,
    }));
    const removed = await this.writeOutcome({ id: job.id, updates, now, nextAttemptAt: next, principal: job.principal?.ref ?? null, owner: this.d.owner }, job.attempts);
    for (const o of outcomes) {
      const tlsFields = { tls_version: o.tls?.used ? (o.tls.protocol ?? 'TLS') : null, tls_verified: o.tls?.verified ?? false, tls_policy: o.tlsPolicy };
      const base = { queue_id: job.id, ...principalFields(job.principal), rcpt: o.rcpt.address, mx: o.mx, tls: tlsSummary(o.tls), ...tlsFields, status: o.code, attempt: job.attempts + 1 };
      if (o.status === 'delivered') this.d.log.info({ event: 'delivery.ok', ...base, response: o.text });
      else if (o.status === 'deferred') this.d.log.info({ event: 'delivery.defer', ...base, reason: o.category, response: o.text, next_attempt: next && new Date(next).toISOString() });
      else this.d.log.info({ event: 'delivery.fail', ...base, reason: o.category, response: o.text });
    }
    if (job.principal && updates.some((u) => u.remoteVerdict === 'rejected')) {
      // The outcome is committed: trouble counting it must not make the attempt look failed.
      await this.d.reputation.check(job.principal).catch((e: unknown) => this.d.log.error({ event: 'store.error', queue_id: job.id, err: (e as Error).message }));
    }
    return removed;
  }

  /**
   * Reports failures not yet reported, then lets the repo drop the message if nothing is left
   * to do. Runs after every attempt and on its own for a message whose DSN was not queued
   * before a crash, so a DSN is queued at least once and, thanks to dsn_done in the same
   * spool, normally exactly once.
   */
  private async finish(id: string, headers: Buffer): Promise<void> {
    const job = await this.d.repo.job(id);
    if (!job) return;
    const unreported = job.recipients.filter((r) => r.status === 'failed' && !r.dsnDone);
    // RFC 5321 6.1 / RFC 3464: never a notification about a message with a null sender, so
    // DSNs can never loop.
    if (unreported.length && job.mailFrom !== '') {
      const now = this.d.clock.now();
      const recipients: FailedRecipient[] = unreported.map((r) => ({
        address: r.address,
        status: r.statusCode ?? '5.0.0',
        diagnostic: r.lastError ?? 'delivery failed',
        remoteMta: r.remoteMta,
        remote: r.lastError !== null && /^\d{3}\b/.test(r.lastError),
        lastAttemptAt: r.lastAttemptAt ?? now,
      }));
      const dsnId = newQueueId(now);
      await this.d.accept({
        id: dsnId,
        envelope: { mailFrom: '', rcptTo: [job.mailFrom] },
        principal: null,
        clientIp: '127.0.0.1',
        receivedAt: now,
        state: 'queued',
        data: buildDsn({ queueId: id, to: job.mailFrom, reportingMta: this.d.reportingMta, arrivalDate: job.receivedAt, recipients, originalHeaders: headers, now }),
      });
      this.d.log.info({ event: 'dsn.queued', queue_id: id, dsn_id: dsnId, to: job.mailFrom, recipients: recipients.map((r) => r.address) });
    } else if (unreported.length) {
      this.d.log.info({ event: 'dsn.suppressed', queue_id: id, reason: 'null-sender', recipients: unreported.map((r) => r.address) });
    }
    if (await this.d.repo.finish(id, unreported.map((r) => r.position))) this.d.log.info({ event: 'delivery.done', queue_id: id });
  }
}

