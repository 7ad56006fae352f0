import { startRelay } from '../main.js';
import type { Ctx } from './io.js';

/** Runs the relay until SIGTERM or SIGINT, then shuts down gracefully. */
export async function serveCommand(ctx: Ctx): Promise<number> {
  const relay = await startRelay(ctx.config());
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      relay.log.info({ event: 'relay.stopping', signal });
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await relay.close();
  return 0;
}
