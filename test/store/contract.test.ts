import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { openStore, type Store } from '../../src/store/index.js';
import { storeContract } from './contract.js';

// Migrating a new database costs ~50 ms of fsyncs; each test gets a copy of one migrated here
// instead (openStore still runs the migration check on it), which keeps the suite a few seconds.
let template: string | undefined;
const migrated = (): string => {
  if (!template) {
    template = mkdtempSync(path.join(tmpdir(), 'postern-store-contract-template-'));
    openStore(template).close();
  }
  return template;
};
afterAll(() => {
  if (template) rmSync(template, { recursive: true, force: true });
});

storeContract('sqlite', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'postern-store-contract-'));
  cpSync(migrated(), dir, { recursive: true });
  const opened: Store[] = [openStore(dir)];
  return {
    store: opened[0]!,
    reopen: async () => {
      const again = openStore(dir);
      opened.push(again);
      return again;
    },
    cleanup: async () => {
      for (const st of opened) st.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
