import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort } from './net.js';

/** Is Debian's redis-server installed? (.ci/run installs it; developers may not have it.) */
export const hasRedis = spawnSync('redis-server', ['--version']).status === 0;

export const NO_REDIS_MESSAGE =
  'Redis tests did not run: redis-server is not installed. Install it with "apt-get install redis-server" (.ci/run does).';


/** A throwaway redis-server on loopback, no persistence; resolves once it accepts connections. */
export async function startRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}`)));
    child.stdout!.on('data', (d: Buffer) => {
      if (/Ready to accept connections/.test(d.toString())) resolve();
    });
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
