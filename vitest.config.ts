import { defineConfig } from 'vitest/config';
import { hasPostgres, NO_POSTGRES_MESSAGE } from './test/helpers/postgres.js';

/**
 * Suites that run on both store engines: once as they always have (SQLite in the data dir),
 * once more with every relay and delivery harness on a PostgreSQL database of its own
 * (test/helpers/relay.ts onTestEngine). They reach the store through its verbs only.
 */
const BOTH_ENGINES = [
  'test/protocol/submission.test.ts',
  'test/protocol/binding.test.ts',
  'test/protocol/limits.test.ts',
  'test/quarantine/submission.test.ts',
  'test/quarantine/cli.test.ts',
  'test/delivery/delivery.test.ts',
];

// Without the server binaries (.ci/run installs them) the "postgres" project is left out: say
// so, once (vitest evaluates this file more than once in a run).
const warned = Symbol.for('postern.tests.noPostgresWarned');
const marks = globalThis as Record<symbol, unknown>;
if (!hasPostgres && !marks[warned]) {
  marks[warned] = true;
  console.warn(NO_POSTGRES_MESSAGE);
}

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Tests bind real sockets and run real argon2; two cores, so two workers (for both projects together).
    maxWorkers: 2,
    // Helper and source modules are loaded once per worker, not once per file: on 2 cores
    // the per-file imports cost more than a third of the run. Test files keep no state in
    // shared modules that another file could trip over (each starts its own servers).
    isolate: false,
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['test/**/*.test.ts'] } },
      ...(hasPostgres
        ? [
            {
              extends: true as const,
              test: {
                name: 'postgres',
                include: BOTH_ENGINES,
                env: { POSTERN_TEST_STORE: 'postgres' },
                // One throwaway server for the project, and the schema migrated once into a template.
                globalSetup: ['test/helpers/postgres-setup.ts'],
              },
            },
          ]
        : []),
    ],
  },
});
