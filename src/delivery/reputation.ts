import type { Clock } from '../domain/clock.js';
import { principalFields, type Logger } from '../obs/log.js';
import type { Store } from '../store/index.js';
import type { PrincipalName, PrincipalRef } from '../domain/types.js';

export interface ReputationOptions {
  /** [delivery] reject_alert: share of remote 5xx above which an incident is opened. */
  alert: number;
  windowMs: number;
  minSample: number;
}

export const REMOTE_REJECTIONS = 'remote-rejections';

/**
 * Records the incident and notifies the admins (notify/'s IncidentResponder in the server);
 * returns the incident id. Without one the incident is only recorded.
 */
export type IncidentSink = (principal: PrincipalName, detail: string, unlessOpenSince: number) => Promise<number | null>;

/**
 * Counts what remote servers think of each principal's mail (Postfix's anvil: this only
 * counts and reports; the quarantine policy decides what to do with the signal). A burst of
 * 5xx from receivers is the typical trace of a stolen account sending spam or phishing.
 */
export class Reputation {
  constructor(
    private readonly store: Pick<Store, 'delivery' | 'incidents'>,
    private readonly opts: ReputationOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly report: IncidentSink,
  ) {}

  /** Share of final remote verdicts in the recent window that were 5xx; 0 with none. */
  async recentRejectionRate(principal: PrincipalRef): Promise<number> {
    const { total, rejected } = await this.stats(principal);
    return total ? rejected / total : 0;
  }

  stats(principal: PrincipalRef): Promise<{ total: number; rejected: number }> {
    return this.store.delivery.outcomeCounts(principal, this.clock.now() - this.opts.windowMs);
  }

  /**
   * Opens an incident "remote-rejections" when the rate is above the alert level over at
   * least minSample outcomes, at most one unresolved one per window. Returns whether it did.
   */
  async check(principal: PrincipalName): Promise<boolean> {
    const { total, rejected } = await this.stats(principal.ref);
    if (total < this.opts.minSample || rejected / total <= this.opts.alert) return false;
    const now = this.clock.now();
    if (await this.store.incidents.hasOpen(principal.ref, { kind: REMOTE_REJECTIONS, since: now - this.opts.windowMs })) return false;
    const rate = rejected / total;
    const detail = JSON.stringify({ rate: Number(rate.toFixed(3)), rejected, total, window_minutes: this.opts.windowMs / 60_000, alert: this.opts.alert });
    // The check above is only a shortcut: the sink checks again in the same transaction as it
    // records, so two attempts finishing at once open one incident.
    const id = await this.report(principal, detail, now - this.opts.windowMs);
    if (id === null) return false;
    // The quarantine policy reads recentRejectionRate(); this event is the admins' alert.
    this.log.warn({ event: 'incident.opened', kind: REMOTE_REJECTIONS, incident: id, ...principalFields(principal), rate, rejected, total });
    return true;
  }
}
