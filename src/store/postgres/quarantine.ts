import type { PrincipalRef, QueueState } from '../../domain/types.js';
import type { QuarantineStore } from '../index.js';
import { labelOf } from '../principals.js';
import {
  AlreadyDecidedError,
  decided,
  NotFoundError,
  NotQuarantinedError,
  toMessage,
  type Actor,
  type DecidedMessage,
  type Decision,
  type DecisionAction,
  type QuarantinedMessage,
  type Row,
} from '../quarantine.js';
import type { Pg } from './pg.js';
import { PG_PROMOTE, PG_RCPTS_JSON } from './queue.js';

const SELECT = `SELECT m.id, m.state, m.mail_from, ${labelOf('m.principal_ref')} AS principal, m.size, m.received_at, m.held_at, m.score, m.reasons,
  ${PG_RCPTS_JSON} AS rcpts,
  (SELECT substr(b.data, 1, 65536) FROM message_bodies b WHERE b.message_id = m.id) AS header
  FROM messages m`;

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

/**
 * The quarantine's verbs on PostgreSQL (port of QuarantineRepo): release and delete move a
 * message out of a waiting state exactly once, with the tombstone and the audit row in the
 * same transaction as the change. The message row is locked (FOR UPDATE) before the decision
 * is checked, so two nodes deciding on one message at once are serialized: the second sees
 * the first one's tombstone.
 */
export class PgQuarantineRepo implements QuarantineStore {
  constructor(private readonly db: Pg) {}

  /** One decision, inside the caller's transaction. */
  private async decide(id: string, action: DecisionAction, by: Actor, allowed: (s: QueueState) => boolean): Promise<DecidedMessage> {
    const m = await this.db.one<{ id: string; state: QueueState; mail_from: string; principal: string | null; principal_ref: PrincipalRef | null; n: number; score: number | null }>(
      `SELECT m.id, m.state, m.mail_from, ${labelOf('m.principal_ref')} AS principal, m.principal_ref, m.score,
         (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id) AS n
       FROM messages m WHERE m.id = $1 FOR UPDATE OF m`,
      [id],
    );
    const earlier = await this.decision(id);
    if (earlier) throw new AlreadyDecidedError(earlier);
    if (!m) throw new NotFoundError(`no such message: ${id}`);
    if (!allowed(m.state)) throw new NotQuarantinedError(id, m.state);
    await this.db.run('INSERT INTO quarantine_decisions (message_id, action, at, actor, reason) VALUES ($1, $2, $3, $4, $5)', [id, action, by.now, by.actor, by.reason]);
    const d = decided(id, m, action, by);
    await this.db.audit(d.audit);
    return d.out;
  }

  async release(id: string, by: Actor): Promise<DecidedMessage> {
    return this.db.tx(async () => {
      const m = await this.decide(id, 'released', by, (s) => s !== 'queued');
      // Untouched: only the state and schedule change, never message_bodies (PROMOTE).
      await this.db.run(PG_PROMOTE, [by.now, id, m.state]);
      // An admin vouched for these recipients: later mail to them is not "to a new domain".
      if (m.principalRef !== null) {
        const rcpts = await this.db.q<{ address: string }>('SELECT address FROM recipients WHERE message_id = $1 ORDER BY position', [id]);
        await this.addDomains(m.principalRef, rcpts.map((r) => domainOf(r.address)), by.now);
      }
      return m;
    });
  }

  async delete(id: string, by: Actor): Promise<DecidedMessage> {
    return this.db.tx(async () => {
      const m = await this.decide(id, 'deleted', by, (s) => s !== 'queued');
      await this.db.deleteMessage(id);
      return m;
    });
  }

  async expire(heldBefore: number, by: Actor): Promise<DecidedMessage[]> {
    return this.db.tx(async () => {
      // Locked: a message another node releases or deletes meanwhile is left to it.
      const ids = (
        await this.db.q<{ id: string }>(`SELECT id FROM messages WHERE state = 'held' AND held_at <= $1 ORDER BY held_at, id COLLATE "C" FOR UPDATE`, [heldBefore])
      ).map((r) => r.id);
      const out: DecidedMessage[] = [];
      for (const id of ids) {
        out.push(await this.decide(id, 'expired', by, (s) => s === 'held'));
        await this.db.deleteMessage(id);
      }
      return out;
    });
  }

  /** Messages in any waiting state (held, waiting-quota), oldest first; optionally one principal's. */
  async list(filter: { states?: QueueState[]; principal?: PrincipalRef } = {}): Promise<QuarantinedMessage[]> {
    const where = ['m.state = ANY($1::text[])'];
    const params: unknown[] = [filter.states ?? ['held']];
    if (filter.principal !== undefined) {
      params.push(filter.principal);
      where.push(`m.principal_ref = $${params.length}`);
    }
    return (await this.db.q<Row>(`${SELECT} WHERE ${where.join(' AND ')} ORDER BY m.received_at, m.id COLLATE "C"`, params)).map(toMessage);
  }

  async get(id: string): Promise<QuarantinedMessage | undefined> {
    const r = await this.db.one<Row>(`${SELECT} WHERE m.id = $1`, [id]);
    return r && toMessage(r);
  }

  async decision(id: string): Promise<Decision | undefined> {
    const r = await this.db.one<{ message_id: string; action: DecisionAction; at: number; actor: string; reason: string | null }>(
      'SELECT * FROM quarantine_decisions WHERE message_id = $1',
      [id],
    );
    return r && { messageId: r.message_id, action: r.action, at: r.at, actor: r.actor, reason: r.reason };
  }

  /** Tombstones only need to outlive the mistakes they guard against (a repeated command). */
  pruneDecisions(before: number): Promise<number> {
    return this.db.run('DELETE FROM quarantine_decisions WHERE at < $1', [before]);
  }

  /** Of these domains, the ones the principal has never sent to (lower-cased, once each, in the order given). */
  async newDomains(principal: PrincipalRef, domains: string[]): Promise<string[]> {
    const wanted = [...new Set(domains.map((d) => d.toLowerCase()))];
    if (wanted.length === 0) return [];
    const known = new Set(
      (await this.db.q<{ domain: string }>('SELECT domain FROM principal_domains WHERE principal_ref = $1 AND domain = ANY($2::text[])', [principal, wanted])).map((r) => r.domain),
    );
    return wanted.filter((d) => !known.has(d));
  }

  /** One statement, so all or none; a domain already known keeps its first_at. */
  async addDomains(principal: PrincipalRef, domains: string[], now: number): Promise<void> {
    const fresh = [...new Set(domains.map((x) => x.toLowerCase()))];
    if (fresh.length === 0) return;
    await this.db.run(
      'INSERT INTO principal_domains (principal_ref, domain, first_at) SELECT $1, d, $3 FROM unnest($2::text[]) AS d ON CONFLICT (principal_ref, domain) DO NOTHING',
      [principal, fresh, now],
    );
  }
}
