// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Layers may import only what sits beside or below them in the flow (shared/STYLE.md). */
const layer = (dir, forbidden) => ({
  files: [`src/${dir}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      { patterns: forbidden.map((f) => ({ group: [`**/${f}/*`, `../${f}/*`], message: `src/${dir} must not import src/${f} (see shared/STYLE.md layout)` })) },
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
  layer('domain', ['config', 'store', 'identity', 'policy', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'obs', 'quarantine']),
  layer('policy', ['config', 'store', 'identity', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'obs', 'quarantine']),
  layer('store', ['identity', 'policy', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'quarantine']),
  layer('identity', ['protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'quarantine']),
  layer('spool', ['protocol', 'identity', 'delivery', 'dns', 'cli', 'quarantine']),
  layer('delivery', ['protocol', 'identity', 'cli']),
  layer('dns', ['protocol', 'identity', 'spool', 'delivery', 'cli', 'quarantine']),
  layer('notify', ['protocol', 'identity', 'delivery', 'cli', 'quarantine']),
  // Quarantine acts around policy's scoring: parses, reads state, notifies, expires. Protocol
  // calls it through the assess/onAccepted hooks wired in main.ts, never by import.
  layer('quarantine', ['protocol', 'identity', 'delivery', 'cli']),
  layer('cli', ['protocol']),
  // The SMTP adapter sits on top: it may ask identity, policy, spool and store, never the
  // parts that run beside it (delivery, the doctor's DNS checks, the CLI) or quarantine,
  // which it reaches only through the assess/onAccepted hooks wired in main.ts.
  layer('protocol', ['cli', 'delivery', 'dns', 'quarantine']),
  // Config is read by everyone and reads nothing of theirs (policy's pure network parser aside).
  layer('config', ['store', 'identity', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'obs', 'quarantine']),
  layer('obs', ['config', 'store', 'identity', 'policy', 'protocol', 'spool', 'delivery', 'dns', 'notify', 'cli', 'quarantine']),
);
