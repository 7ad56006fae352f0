import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { detailColumn, type NewAuditEntry } from '../audit.js';

/** int8 (counts, times in ms, ids) as numbers: every value Postern stores fits in 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};

/** Errors after which a connection cannot be used again (the server shut down or went away). */
function isConnectionLoss(e: unknown): boolean {
  const code = String((e as { code?: unknown }).code ?? '');
  return code.startsWith('57P') || code.startsWith('08') || /Connection terminated|ECONNRESET|ECONNREFUSED/.test(String((e as Error).message));
}

/**
 * One PostgreSQL database for the repositories: a pool for verbs on their own, and the
 * transaction's own client for verbs called inside store.tx (found through the async context,
 * so the repositories need not pass it along).
 */
export class Pg {
  readonly pool: pg.Pool;
  private readonly context = new AsyncLocalStorage<pg.PoolClient>();
  /** Transactions (by their client) that changed policy rows: their end drops the policy cache. */
  private readonly policyWriters = new WeakSet<pg.PoolClient>();
  private closed = false;

  constructor(url: string) {
    this.pool = new pg.Pool({
      connectionString: url,
      types,
      max: 20,
      // A database that stops answering (a network cut, not a refusal) must fail verbs, not
      // hang them: clients then get 451 and every other node is not left waiting on locks
      // held by a transaction nobody will finish.
      connectionTimeoutMillis: 5000,
      keepAlive: true,
      query_timeout: 35_000,
      statement_timeout: 30_000,
      idle_in_transaction_session_timeout: 30_000,
    });
    // An idle client that loses its server (a restart) must not end the process.
    this.pool.on('error', () => undefined);
  }

  get open(): boolean {
    return !this.closed;
  }

  /** True inside db.tx (in this async context). */
  get inTransaction(): boolean {
    return this.context.getStore() !== undefined;
  }

  /**
   * Called when a transaction that changed policy rows (see policyChanged) ends, committed or
   * not: the policy cache forgets what it saw meanwhile. Other transactions leave it alone
   * (nothing read inside a transaction is cached), so a message's quota and spool commits do
   * not empty it.
   */
  onTxEnd: (() => void) | null = null;

  /** Marks the transaction under way, if any, as one that changed policy rows. */
  policyChanged(): void {
    const client = this.context.getStore();
    if (client) this.policyWriters.add(client);
  }

  async q<T extends object = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    if (this.closed) throw new Error('the store is closed');
    const client = this.context.getStore();
    const r = client ? await client.query(sql, params) : await this.pool.query(sql, params);
    return r.rows as T[];
  }

  async one<T extends object = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.q<T>(sql, params))[0];
  }

  /** Rows changed by an UPDATE or DELETE. */
  async run(sql: string, params: unknown[] = []): Promise<number> {
    if (this.closed) throw new Error('the store is closed');
    const client = this.context.getStore();
    const r = client ? await client.query(sql, params) : await this.pool.query(sql, params);
    return r.rowCount ?? 0;
  }

  /** `fn` in one transaction; a nested call is part of the outer one. */
  async tx<T>(fn: () => Promise<T>): Promise<T> {
    if (this.context.getStore()) return fn();
    if (this.closed) throw new Error('the store is closed');
    const client = await this.pool.connect();
    // A server that goes away (a restart, a failover) makes a checked-out client emit
    // 'error': with no listener that would end the process. The query under way fails too,
    // and the client is discarded instead of going back to the pool.
    let broken: Error | undefined;
    const onError = (e: Error) => {
      broken = e;
    };
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      const result = await this.context.run(client, fn);
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      broken ??= isConnectionLoss(e) ? (e as Error) : undefined;
      throw e;
    } finally {
      client.off('error', onError);
      const changed = this.policyWriters.delete(client);
      client.release(broken);
      if (changed) this.onTxEnd?.();
    }
  }

  /** Serializes transactions on one name (a principal, a counter) until the caller's transaction ends. */
  async lock(name: string): Promise<void> {
    await this.q('SELECT pg_advisory_xact_lock(hashtext($1))', [name]);
  }

  /** Removes a message; its recipients and body go with it (ON DELETE CASCADE). */
  deleteMessage(id: string): Promise<number> {
    return this.run('DELETE FROM messages WHERE id = $1', [id]);
  }

  /** The one audit writer, in the caller's transaction. */
  async audit(e: NewAuditEntry): Promise<void> {
    await this.run('INSERT INTO audit (at, actor, action, target, detail, reason) VALUES ($1, $2, $3, $4, $5, $6)', [e.at, e.actor, e.action, e.target, detailColumn(e.detail), e.reason]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
