/**
 * [server] max_connections_per_ip and max_clients count a node's connections, whichever
 * process serves them: one process counts its own; with [server] workers above 1 the primary
 * holds the table and each worker asks it (src/workers.ts), so the caps keep the meaning the
 * README gives them however many workers there are.
 */
export type Admission = { ok: true } | { ok: false; cap: 'ip' | 'total'; connections: number };

export interface ConnectionCounter {
  /** Counts one more connection from `ip`, unless a cap refuses it (then nothing is counted). */
  admit(ip: string): Admission | Promise<Admission>;
  /** Ends one counted connection from `ip`. */
  release(ip: string): void;
}

/** Open connections per client address and in all, per owner (a worker) so that an owner's go at once when it dies. */
export class ConnectionTable {
  private readonly byIp = new Map<string, number>();
  private readonly byOwner = new Map<unknown, Map<string, number>>();
  private total = 0;

  constructor(private readonly caps: { perIp: number; total: number }) {}

  admit(ip: string, owner: unknown = null): Admission {
    const n = this.byIp.get(ip) ?? 0;
    if (n >= this.caps.perIp) return { ok: false, cap: 'ip', connections: n };
    if (this.total >= this.caps.total) return { ok: false, cap: 'total', connections: this.total };
    this.byIp.set(ip, n + 1);
    this.total++;
    let mine = this.byOwner.get(owner);
    if (!mine) this.byOwner.set(owner, (mine = new Map()));
    mine.set(ip, (mine.get(ip) ?? 0) + 1);
    return { ok: true };
  }

  release(ip: string, owner: unknown = null): void {
    const mine = this.byOwner.get(owner);
    const m = mine?.get(ip) ?? 0;
    if (!mine || m <= 0) return;
    if (m > 1) mine.set(ip, m - 1);
    else mine.delete(ip);
    this.drop(ip, 1);
  }

  /** Forgets every connection an owner held (a worker that exited). */
  releaseAll(owner: unknown): void {
    const mine = this.byOwner.get(owner);
    if (!mine) return;
    this.byOwner.delete(owner);
    for (const [ip, m] of mine) this.drop(ip, m);
  }

  private drop(ip: string, m: number): void {
    const n = (this.byIp.get(ip) ?? m) - m;
    if (n > 0) this.byIp.set(ip, n);
    else this.byIp.delete(ip);
    this.total -= m;
  }
}

/**
 * One process's own count. smtp-server's maxClients caps each listener on its own, so the
 * total over the listeners (what max_clients means) is counted here.
 */
export const localConnections = (maxPerIp: number, maxClients: number): ConnectionCounter => {
  const t = new ConnectionTable({ perIp: maxPerIp, total: maxClients });
  return { admit: (ip) => t.admit(ip), release: (ip) => t.release(ip) };
};
