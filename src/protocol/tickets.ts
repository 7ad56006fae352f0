import { randomBytes } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import type { Clock } from '../domain/clock.js';
import type { Logger } from '../obs/log.js';

/**
 * TLS session tickets ([tls] session_tickets): a device that reconnects for every message
 * (a printer, a phone, a script) resumes its TLS session instead of paying for a full
 * handshake, on whichever worker or node it reaches, because the keys are in the store.
 *
 * One key per rotation period ([tls] ticket_key_rotation_seconds, an hour by default): the
 * period's key issues every ticket, the previous period's is still accepted (a ticket it
 * issued is then renewed under the current one), older ones are deleted, so a stolen key
 * opens at most two periods of sessions. The next period's key is stored half a period
 * ahead, so every process holds it before it starts issuing.
 *
 * Node's documented API takes one key (setTicketKeys): it could not accept the previous one,
 * and every reconnect in the first minutes of a period would pay the full handshake. Node's
 * SecureContext also carries OpenSSL's ticket key callback (enableTicketKeyCallback and
 * onticketkeycallback: the interface Node's own tests use), which is what a key ring needs.
 * It is used when present; without it (a Node that dropped it) the current key is set with
 * setTicketKeys and tls.tickets_degraded says so once. test/protocol/resumption.test.ts fails
 * if the callback is gone or no longer resumes with the previous key.
 */
export interface TicketKeyRing {
  /** Makes a server's contexts issue and accept the shared tickets (again after each rebuild of them). */
  install(server: object, contexts: Iterable<SecureContext>): void;
  /** Reads the store now (tests; a refresh also runs by itself every quarter period). */
  refresh(): Promise<void>;
  stop(): void;
}

/** A period's key as the store keeps it (store/tls-tickets.ts). */
export interface TicketKey {
  startsAt: number;
  name: Buffer;
  secret: Buffer;
}

/** Where the keys are shared: the store's tlsTickets (main.ts passes it in). */
export interface TicketKeySource {
  claim(candidate: TicketKey, now: number): Promise<TicketKey>;
  since(since: number): Promise<TicketKey[]>;
  prune(before: number): Promise<number>;
}

interface NativeContext {
  enableTicketKeyCallback?: () => void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[];
  setTicketKeys(keys: Buffer): void;
}

/** Node's callback answers: 1 = use this key, 2 = accepted but issue a fresh ticket, 0 = unknown key (full handshake). */
const USE = 1;
const RENEW = 2;
const UNKNOWN = 0;
/** An unknown key still has to be answered with keys of the right size, or the handshake fails. */
const NONE = [UNKNOWN, Buffer.alloc(16), Buffer.alloc(16)];

export async function startTicketKeys(deps: { store: TicketKeySource; clock: Clock; log: Logger; rotationMs: number }): Promise<TicketKeyRing> {
  const { store, clock, log, rotationMs: period } = deps;
  /** Newest first: the next period's (once made), the current and the previous one. */
  let keys: TicketKey[] = [];
  const periodOf = (t: number) => Math.floor(t / period) * period;
  const fresh = (startsAt: number): TicketKey => ({ startsAt, name: randomBytes(16), secret: randomBytes(32) });
  let degraded = false;
  const contexts = new Map<object, NativeContext[]>();

  /** The key that issues tickets now: this period's, else the newest before it. */
  const current = (): TicketKey | undefined => {
    const now = clock.now();
    return keys.find((k) => k.startsAt <= now);
  };
  /**
   * The key that issues a ticket: the current one, else (a clock stepped back behind every
   * key held) the oldest held, else one of this process's own. Never none: Node reads a name
   * and an IV from an encryption answer whatever its code, and aborts without them.
   */
  const issuing = (): TicketKey => {
    const k = current() ?? keys.at(-1);
    if (k) return k;
    const own = fresh(periodOf(clock.now()));
    keys = [own];
    return own;
  };
  const callback = (name: Buffer, iv: Buffer, encrypt: boolean): unknown[] => {
    if (encrypt) {
      const k = issuing();
      return [USE, k.secret.subarray(0, 16), k.secret.subarray(16), k.name, randomBytes(16)];
    }
    const k = keys.find((x) => x.name.equals(name));
    if (!k) {
      // Another node may have made a key this process has not read yet.
      soon();
      return NONE;
    }
    return [k === current() ? USE : RENEW, k.secret.subarray(0, 16), k.secret.subarray(16)];
  };
  const apply = (ctx: NativeContext) => {
    if (typeof ctx.enableTicketKeyCallback === 'function') {
      if (!ctx.onticketkeycallback) ctx.enableTicketKeyCallback();
      ctx.onticketkeycallback = callback;
      return;
    }
    if (!degraded) {
      degraded = true;
      log.warn({ event: 'tls.tickets_degraded', detail: "this Node has no TLS ticket key callback: tickets issued under the previous period's key are not accepted" });
    }
    const k = current();
    if (k) ctx.setTicketKeys(Buffer.concat([k.name, k.secret]));
  };

  let stopped = false;
  let refreshing: Promise<void> | null = null;
  const refresh = (): Promise<void> =>
    (refreshing ??= (async () => {
      const now = clock.now();
      const start = periodOf(now);
      try {
        await store.claim(fresh(start), now);
        // Half a period ahead, the next key is stored, so every process reads it in time.
        if (now - start >= period / 2) await store.claim(fresh(start + period), now);
        keys = await store.since(start - period);
        await store.prune(start - period);
      } catch (e) {
        if (stopped) return;
        log.error({ event: 'tls.tickets_refresh_failed', err: (e as Error).message });
        // Until the store answers, keys age out here as they would there (no key is used
        // past the period after its own), and one of this process's own keeps tickets working.
        keys = keys.filter((k) => k.startsAt >= start - period);
        if (!keys.some((k) => k.startsAt === start)) keys = [fresh(start), ...keys].sort((a, b) => b.startsAt - a.startsAt);
      }
      if (degraded) for (const list of contexts.values()) list.forEach(apply);
    })().finally(() => {
      refreshing = null;
    }));
  // A ticket under an unknown key: read the store again, at most once every 10 s.
  let lastSoon = 0;
  const soon = () => {
    if (stopped) return;
    const now = clock.now();
    if (now - lastSoon < 10_000) return;
    lastSoon = now;
    void refresh();
  };

  await refresh();
  const timer = setInterval(() => void refresh(), Math.max(period / 4, 1000));
  timer.unref();
  return {
    install(server, ctxs) {
      const list = [...ctxs].map((c) => c.context as NativeContext);
      contexts.set(server, list);
      list.forEach(apply);
    },
    refresh,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
