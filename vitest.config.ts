import path from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
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
  'test/cli/import.test.ts',
];

// Without the server binaries (.ci/run installs them) the "postgres" project is left out: say
// so, once (vitest evaluates this file more than once in a run).
const warned = Symbol.for('postern.tests.noPostgresWarned');
const marks = globalThis as Record<symbol, unknown>;
if (!hasPostgres && !marks[warned]) {
  marks[warned] = true;
  console.warn(NO_POSTGRES_MESSAGE);
}

/**
 * Seconds each of the longest files takes on the 2-core CI machine (clean-clone run of issue
 * 17), by project. On a fresh clone vitest has no timings cached and would start files by
 * size, so a short file with a long run (contract-pg) could start last and leave one worker
 * idle for half a minute; these start first, the rest follow in vitest's order.
 */
const SLOW: Record<string, number> = {
  'sqlite test/cluster/postgres-nodes.test.ts': 29,
  'sqlite test/store/contract-pg.test.ts': 12,
  'sqlite test/spool/crash.test.ts': 16,
  'sqlite test/cluster/postgres-outage.test.ts': 17,
  'sqlite test/protocol/auth-hardening.test.ts': 12,
  'postgres test/protocol/limits.test.ts': 11,
  'postgres test/protocol/binding.test.ts': 11,
  'sqlite test/delivery/claims.test.ts': 10,
  'postgres test/delivery/delivery.test.ts': 9,
  'sqlite test/cluster/postgres-tls.test.ts': 7,
};

class SlowestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const weight = (f: TestSpecification) => SLOW[`${f.project.name} ${path.relative(import.meta.dirname, f.moduleId)}`] ?? 0;
    // Array.prototype.sort is stable: files without a weight keep vitest's order.
    return [...sorted].sort((a, b) => weight(b) - weight(a));
  }
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
    sequence: { sequencer: SlowestFirst },
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
