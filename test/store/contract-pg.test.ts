import { afterAll, describe } from 'vitest';
import pg from 'pg';
import { openPostgresStore } from '../../src/store/postgres/index.js';
import type { Store } from '../../src/store/index.js';
import { hasPostgres, NO_POSTGRES_MESSAGE, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { storeContract } from './contract.js';

let server: TestPostgres | undefined;
let url: string | undefined;
afterAll(async () => {
  await server?.stop();
});

/** One throwaway server and database for the file; every test starts from emptied tables. */
async function emptied(): Promise<string> {
  if (!url) {
    server = await startPostgres();
    url = await server.database();
    (await openPostgresStore(url)).close();
  }
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const { rows } = await c.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('schema_migrations', 'policy_generation')`);
  await c.query(`TRUNCATE ${rows.map((r) => r.t).join(', ')} RESTART IDENTITY CASCADE`);
  await c.end();
  return url;
}

describe.runIf(hasPostgres)('postgres engine', () => {
  storeContract('postgres', async () => {
    const at = await emptied();
    const opened: Store[] = [await openPostgresStore(at)];
    return {
      store: opened[0]!,
      reopen: async () => {
        const again = await openPostgresStore(at);
        opened.push(again);
        return again;
      },
      cleanup: async () => {
        for (const st of opened) st.close();
      },
    };
  });
});
// Without the server (.ci/run installs it) the suite above does not run: say why.
if (!hasPostgres) console.warn(NO_POSTGRES_MESSAGE);
