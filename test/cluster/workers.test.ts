import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { BIN, BUILT, serve, type ServeChild } from '../helpers/child.js';
import { writeConfig } from '../helpers/cli.js';
import { tempDir } from '../helpers/relay.js';
import type { DnsServer } from '../helpers/dnsd.js';
import { SERVED_PASS as PASS, servedRelay, teardownServed } from '../helpers/served.js';
import { startSink, type Sink } from '../helpers/sink.js';
import { SmtpClient } from '../helpers/smtp-client.js';

/**
 * [server] workers = 2: one `postern serve` primary and two workers on one SQLite store,
 * delivering to a sink on loopback. Worker 0 delivers; both accept connections.
 */
let relay: ServeChild;
let sink: Sink;
let dns: DnsServer | undefined;
let pids: number[];

beforeAll(async () => {
  sink = await startSink('127.0.0.2', 0);
  const served = await servedRelay('127.0.0.2', sink.port, 'claim_lease_seconds = 1\n');
  dns = served.dns;
  writeFileSync(served.config, readFileSync(served.config, 'utf8').replace('[server]\n', '[server]\nworkers = 2\nmax_connections_per_ip = 2\nmax_clients = 3\n'));
  relay = await serve(served.config);
  pids = relay.events.find((e) => e.event === 'relay.started')!.pids as number[];
}, 30_000);
afterAll(async () => {
  await teardownServed({ dns });
});

const records = (mx: string) => [
  { type: 'A' as const, name: 'mx.dest.example', data: mx },
  { type: 'MX' as const, name: 'dest.example', data: { preference: 10, exchange: 'mx.dest.example' } },
];
const body = (s: string) => `From: <alice@sender.example>\r\nSubject: ${s}\r\n\r\nbody\r\n`;
const subjects = () => sink.messages.map((m) => /Subject: (.*)/.exec(m.raw.toString())![1]!);
const delivered = (n: number) =>
  new Promise<void>((resolve) => {
    const check = () => {
      if (sink.messages.length < n) return;
      sink.off('message', check);
      resolve();
    };
    sink.on('message', check);
    check();
  });

/** One message on a connection of its own; resolves with the reply to DATA. */
async function submit(subject: string): Promise<string> {
  const c = await SmtpClient.connect(relay.port);
  expect(await c.login('alice', PASS)).toBe('235 2.7.0 Authentication successful');
  const r = await c.send('alice@sender.example', ['bob@dest.example'], body(subject));
  await c.quit();
  return r;
}

async function scrape(): Promise<string> {
  const port = relay.events.find((e) => e.event === 'relay.started')!.metrics as number;
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}
const series = (text: string, name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
/** A metric's series summed over the workers (each labelled worker="N"), those with a label value given. */
const overWorkers = (text: string, name: string, label: string) =>
  [...text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))].filter((m) => m[1]!.includes(label) && /worker="\d+"/.test(m[1]!)).reduce((n, m) => n + Number(m[2]), 0);

describe.runIf(BUILT)('two worker processes', () => {
  it('refuses to start when a listen address is in use, saying so once with the key, after stopping the workers it started', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as net.AddressInfo).port;
    const dir = tempDir();
    const config = writeConfig(dir);
    writeFileSync(config, readFileSync(config, 'utf8').replace('[server]\n', '[server]\nworkers = 2\n').replace('listen_tls = ["127.0.0.1:0"]', `listen_tls = ["127.0.0.1:${port}"]`));
    const child = spawn(process.execPath, [BIN, '--config', config, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout.resume();
    const [code] = (await once(child, 'exit')) as [number];
    busy.close();
    expect(code).toBe(1);
    expect(err).toBe(
      `postern: submission.listen_tls[0] = "127.0.0.1:${port}": in use by another process (is the relay already running?); stop it (ss -ltnp 'sport = :${port}' names it) or set submission.listen_tls to a free address\n`,
    );
  });

  it('starts two workers under one relay.started, serves connections on both and delivers each message once from worker 0', async () => {
    expect(relay.events.find((e) => e.event === 'relay.started')).toMatchObject({ workers: 2, engine: 'sqlite' });
    expect(pids).toHaveLength(2);
    expect(new Set(relay.events.filter((e) => e.event === 'worker.started').map((e) => e.worker))).toEqual(new Set([0, 1]));
    for (let i = 0; i < 6; i++) expect(await submit(`spread ${i}`)).toMatch(/^250 2\.0\.0 /);
    await delivered(6);
    expect(subjects().sort()).toEqual([0, 1, 2, 3, 4, 5].map((i) => `spread ${i}`));
    // The primary hands connections out in turn: both workers logged logins.
    expect(new Set(relay.events.filter((e) => e.event === 'auth.ok').map((e) => e.worker))).toEqual(new Set([0, 1]));
    // Only worker 0 delivers.
    expect(new Set(relay.events.filter((e) => e.event === 'delivery.done').map((e) => e.worker))).toEqual(new Set([0]));
    // /metrics, from the primary, sums both workers.
    const text = await scrape();
    // Labelled per worker (a restarted worker's counters start again from 0 in a series of their own).
    expect(overWorkers(text, 'postern_messages_accepted_total', 'state="queued"')).toBe(6);
    expect(text).toMatch(/^postern_messages_accepted_total\{state="queued",worker="0"\} \d+$/m);
    expect(series(text, 'postern_workers')).toBe(2);
    expect(series(text, 'postern_worker_restarts_total')).toBe(0);
    const port = relay.events.find((e) => e.event === 'relay.started')!.metrics as number;
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect([health.status, await health.text()]).toEqual([200, 'ok (2 workers)\n']);
  });

  it('counts max_connections_per_ip and max_clients over both workers', async () => {
    const open = [await SmtpClient.connect(relay.port), await SmtpClient.connect(relay.tlsPort, { tls: true })];
    // Round robin put the two on both workers; a third from the address is one too many for the node.
    expect(await rawGreeting(relay.port)).toBe('421 4.7.0 Too many connections from this address, please try again later');
    open.push(await SmtpClient.connect(relay.port, { localAddress: '127.0.0.2' }));
    expect(await rawGreeting(relay.port, '127.0.0.3')).toBe('421 4.3.2 Too many connected clients, please try again later');
    for (const c of open) await c.quit();
    // Released in the primary's table as they close: new ones are let in.
    expect(await waitAdmitted(relay.port)).toMatch(/^220 /);
  });

  it('passes SIGHUP to every worker, which each reload the config', async () => {
    const before = relay.events.filter((e) => e.event === 'config.reloaded').length;
    relay.child.kill('SIGHUP');
    await relay.count('config.reloaded', before + 2);
    expect(new Set(relay.events.filter((e) => e.event === 'config.reloaded').slice(before).map((e) => e.worker))).toEqual(new Set([0, 1]));
  });

  it('replaces a worker killed with SIGKILL, and loses nothing it acknowledged', async () => {
    const before = sink.messages.length;
    // The MX first answers nothing: the delivering worker is stuck mid-attempt when it dies.
    const attempts: net.Socket[] = [];
    const silent = net.createServer((sock) => attempts.push(sock));
    await new Promise<void>((r) => silent.listen(sink.port, '127.0.0.3', r));
    const stuck = once(silent, 'connection');
    dns!.setRecords(records('127.0.0.3'));
    const sent: string[] = [];
    for (let i = 0; i < 4; i++) {
      expect(await submit(`before kill ${i}`)).toMatch(/^250 2\.0\.0 /);
      sent.push(`before kill ${i}`);
    }
    await stuck;
    dns!.setRecords(records('127.0.0.2'));
    // The delivering worker first (its claims lapse and its successor takes them), then the other.
    for (const index of [0, 1]) {
      const pid = currentPid(index);
      const startedBefore = relay.events.filter((e) => e.event === 'worker.started').length;
      process.kill(pid, 'SIGKILL');
      const exited = await relay.next('worker.exited');
      expect(exited).toMatchObject({ worker: index, pid, signal: 'SIGKILL', started: true });
      await relay.count('worker.started', startedBefore + 1);
      expect(currentPid(index)).not.toBe(pid);
      expect(await submit(`after kill ${index}`)).toMatch(/^250 2\.0\.0 /);
      sent.push(`after kill ${index}`);
    }
    await delivered(before + sent.length);
    expect(subjects().slice(before).sort()).toEqual(sent.sort());
    for (const sock of attempts) sock.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
    const text = await scrape();
    expect(series(text, 'postern_worker_restarts_total')).toBe(2);
    expect(series(text, 'postern_workers')).toBe(2);
  }, 20_000);

  it('stops every worker on SIGTERM and exits 0', async () => {
    const all = relay.events.filter((e) => e.event === 'worker.started').map((e) => e.pid as number);
    relay.child.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
    expect(relay.events.filter((e) => e.event === 'relay.stopped').map((e) => e.worker ?? 'primary').sort()).toEqual([0, 1, 'primary'].sort());
    for (const pid of all) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });
});

/** The pid of the newest worker.started for a worker index. */
const currentPid = (index: number): number => relay.events.filter((e) => e.event === 'worker.started' && e.worker === index).at(-1)!.pid as number;

/** The first reply line on a new plain connection. */
async function rawGreeting(port: number, localAddress?: string): Promise<string> {
  const s = net.connect({ port, host: '127.0.0.1', localAddress });
  let buf = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (buf += d));
  await once(s, 'close');
  return buf.split('\r\n')[0]!;
}

/** Connects until the greeting is a 220 (the closes above reach the primary's table in order, a few ms later). */
async function waitAdmitted(port: number): Promise<string> {
  let g = '';
  for (let i = 0; i < 50 && !g.startsWith('220'); i++) {
    const c = await SmtpClient.connect(port);
    g = await c.greeting;
    await c.quit();
  }
  return g;
}

describe.runIf(BUILT)('a primary without /metrics', () => {
  it('lives on while every worker is being replaced, and its workers stop gracefully when it is killed', async () => {
    const dir = tempDir();
    const config = writeConfig(dir);
    writeFileSync(config, readFileSync(config, 'utf8').replace('[server]\n', '[server]\nworkers = 2\n').replace('[metrics]\n', '[metrics]\nenabled = false\n'));
    // Spawned here, not with serve(): the workers' last lines come after the primary is gone,
    // on the stdout they share, which ends when the last of them exits.
    const child = spawn(process.execPath, [BIN, '--config', config, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const events: Array<Record<string, unknown>> = [];
    const waiters: Array<() => void> = [];
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (l) => {
      if (!l.startsWith('{')) return;
      events.push(JSON.parse(l) as Record<string, unknown>);
      for (const w of waiters.splice(0)) w();
    });
    const ended = once(lines, 'close');
    const seen = async (event: string, n: number) => {
      while (events.filter((e) => e.event === event).length < n) await new Promise<void>((r) => waiters.push(r));
    };
    await seen('relay.started', 1);
    const first = events.find((e) => e.event === 'relay.started')!.pids as number[];
    // Both at once: nothing but the restart timers keeps the primary's event loop busy then.
    for (const pid of first) process.kill(pid, 'SIGKILL');
    await seen('worker.started', 4);
    expect(events.filter((e) => e.event === 'worker.exited').map((e) => e.pid).sort()).toEqual([...first].sort());
    const now = events.filter((e) => e.event === 'worker.started').slice(2).map((e) => e.pid as number);
    expect(now.some((pid) => first.includes(pid))).toBe(false);
    // The primary killed: each worker stops as if told (nothing would restart it), and says so.
    child.kill('SIGKILL');
    await ended;
    expect(events.filter((e) => e.event === 'relay.stopping').map((e) => [e.worker, e.signal]).sort()).toEqual([
      [0, 'primary-exited'],
      [1, 'primary-exited'],
    ]);
    expect(events.filter((e) => e.event === 'relay.stopped').map((e) => e.worker).sort()).toEqual([0, 1]);
  });
});
