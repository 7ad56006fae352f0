// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** The store's own SQLite handle is for tests: everything else speaks through the Store's verbs. */
const noHandle = { group: ['**/store/index.js'], importNames: ['sqliteHandle'], message: 'only tests may reach the SQLite handle: use a Store verb (or add one in src/store)' };

/** Layers may import only what sits beside or below them in the flow (shared/STYLE.md). */
const layer = (dir, forbidden) => ({
  files: [`src/${dir}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          ...forbidden.map((f) => ({ group: [`**/${f}/*`, `../${f}/*`], message: `src/${dir} must not import src/${f} (see shared/STYLE.md layout)` })),
          ...(dir === 'store' ? [] : [noHandle]),
        ],
      },
    ],
  },
});

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setImmediate: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', performance: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-control-regex': 'off',
    },
  },
  // Every store verb returns a promise: one left un-awaited is a write that may not have
  // happened (or a failure nobody hears of), and a promise in a condition is always true.
  {
    files: ['src/**/*.ts', 'test/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/await-thenable': 'error',
    },
  },
  { files: ['src/*.ts'], rules: { 'no-restricted-imports': ['error', { patterns: [noHandle] }] } },
  layer('domain', ['submission', 'config', 'store', 'identity', 'policy', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'obs', 'quarantine']),
  layer('policy', ['submission', 'config', 'store', 'identity', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'obs', 'quarantine']),
  layer('store', ['submission', 'identity', 'policy', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'quarantine']),
  layer('identity', ['submission', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'quarantine']),
  layer('spool', ['submission', 'protocol', 'identity', 'delivery', 'dns', 'cli', 'quarantine']),
  layer('delivery', ['submission', 'protocol', 'identity', 'cli']),
  layer('dns', ['submission', 'protocol', 'identity', 'spool', 'delivery', 'cli', 'quarantine']),
  layer('notify', ['submission', 'protocol', 'identity', 'delivery', 'cli', 'quarantine']),
  // Quarantine acts around policy's scoring: parses, reads state, notifies, expires. Protocol
  // calls it through the assess/onAccepted hooks wired in main.ts, never by import.
  layer('quarantine', ['submission', 'protocol', 'identity', 'delivery', 'cli']),
  layer('cli', ['submission', 'protocol']),
  // The submission service decides each command; it reaches quarantine only through the
  // assess/onAccepted hooks wired in main.ts.
  layer('submission', ['protocol', 'cli', 'delivery', 'dns', 'quarantine']),
  // The SMTP adapter sits on top and only turns the service's decisions into replies: it asks
  // nothing of the layers below the service (identity, spool, store) or beside it.
  layer('protocol', ['cli', 'delivery', 'dns', 'quarantine', 'identity', 'spool', 'store', 'notify']),
  // Config is read by everyone and reads nothing of theirs (policy's pure network parser aside).
  layer('config', ['submission', 'store', 'identity', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'obs', 'quarantine']),
  layer('obs', ['submission', 'config', 'store', 'identity', 'policy', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'quarantine']),
);
