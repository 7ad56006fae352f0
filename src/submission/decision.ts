import type { Reason } from '../domain/reasons.js';
import type { Principal } from '../domain/types.js';

/** The policies an admin can run in monitor mode (config: binding.network, binding.sender, limits, quarantine). */
export type PolicyName = 'network' | 'sender' | 'limits' | 'quarantine';
export type PolicyMode = 'enforce' | 'monitor';

/**
 * The one answer the submission service gives to each command (maddy's CheckResult, Haraka's
 * verdicts). The protocol adapter turns it into a reply and does nothing else:
 * - accept: go on (a login carries its principal; a message its queue id, state queued);
 * - hold / wait: the message is accepted (250) and kept in the spool, held for an admin or
 *   waiting for quota;
 * - refuse: the reply from the catalogue, sent no earlier than `notBefore` (performance.now()
 *   time), so that every failed login takes the same time.
 */
export type Decision =
  | { verdict: 'accept'; principal?: Principal; queueId?: string }
  | { verdict: 'hold' | 'wait'; queueId: string }
  | { verdict: 'refuse'; reason: Reason; detail?: string; notBefore?: number };

/**
 * What one check found, before monitor mode is applied. A finding of a policy in monitor mode
 * is logged as what it would have done and the command goes on; otherwise it is applied: its
 * action runs (suspend, record, notify) and it becomes the command's decision.
 */
export type Finding =
  | {
      verdict: 'refuse';
      reason: Reason;
      detail?: string;
      /** Log event of the refusal (mail.refused, auth.fail, ...) and its fields. */
      event: string;
      fields?: Record<string, unknown>;
      /** The policy that can be put in monitor mode; none = always enforced. */
      policy?: PolicyName;
      /** What monitor mode reports the policy would have done. */
      would?: 'refuse' | 'suspend';
      /** Side effects of the refusal, run only when it is applied. */
      act?: () => void | Promise<void>;
      notBefore?: number;
    }
  | { verdict: 'hold' | 'wait'; policy: PolicyName; fields: Record<string, unknown> };
