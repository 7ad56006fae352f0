import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const BIN = path.join(ROOT, 'bin/postern.js');
/** npm test builds dist/ before vitest runs; child-process tests drive the built binary. */
export const BUILT = existsSync(path.join(ROOT, 'dist/src/cli/postern.js'));

export interface ServeChild {
  child: ChildProcess;
  port: number;
  tlsPort: number;
  exited: Promise<number | null>;
  /** Every JSON log line the server printed so far. */
  events: Array<Record<string, unknown>>;
  /**
   * Resolves with the next log line of this event not yet returned by next(): one logged
   * before the call counts too, since lines arrive in batches (relay.started and the first
   * delivery can share one read).
   */
  next(event: string): Promise<Record<string, unknown>>;
  /** Resolves once the server has logged this event n times in all (counting those seen). */
  count(event: string, n: number): Promise<void>;
}

const running = new Set<ChildProcess>();
/** Kills every child still running (call from afterEach). */
export function killAll(): void {
  for (const c of running) c.kill('SIGKILL');
  running.clear();
}

/** Starts `postern serve` as a real process; resolves with its ports once it logs relay.started. */
export function serve(config: string, env: Record<string, string> = {}): Promise<ServeChild> {
  const child = spawn(process.execPath, [BIN, '--config', config, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  running.add(child);
  const exited = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      running.delete(child);
      r(code);
    }),
  );
  const events: Array<Record<string, unknown>> = [];
  const waiters: Array<{ event: string; n: number; resolve: (l: Record<string, unknown>) => void }> = [];
  const counters: Array<{ event: string; n: number; resolve: () => void }> = [];
  const seen = (event: string) => events.filter((e) => e.event === event).length;
  const count = (event: string, n: number) =>
    new Promise<void>((resolve, reject) => {
      if (seen(event) >= n) return resolve();
      counters.push({ event, n, resolve });
      void exited.then((code) => reject(new Error(`serve exited (${code}) before logging ${event} ${n} times`)));
    });
  const taken = new Map<string, number>();
  const next = (event: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const n = taken.get(event) ?? 0;
      taken.set(event, n + 1);
      const have = events.filter((e) => e.event === event)[n];
      if (have) return resolve(have);
      waiters.push({ event, n, resolve });
      void exited.then((code) => reject(new Error(`serve exited (${code}) before logging ${event}`)));
    });
  return new Promise((resolve, reject) => {
    const early = (code: number | null, signal: string | null) => reject(new Error(`serve exited with ${code ?? signal} before it started`));
    child.once('exit', early);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      events.push(ev);
      for (const w of waiters.filter((x) => x.event === ev.event && x.n === seen(x.event) - 1)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(ev);
      }
      for (const c of counters.filter((x) => x.event === ev.event && seen(x.event) >= x.n)) {
        counters.splice(counters.indexOf(c), 1);
        c.resolve();
      }
      if (ev.event === 'relay.started') {
        child.off('exit', early);
        resolve({ child, port: (ev.starttls as number[])[0]!, tlsPort: (ev.tls as number[])[0]!, exited, events, next, count });
      }
    });
  });
}
