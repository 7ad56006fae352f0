import type { TestProject } from 'vitest/node';
import { migratePostgresUrl } from '../../src/store/postgres/index.js';
import { databaseName, startPostgres } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The postgres project's server: its maintenance database, for CREATE DATABASE. */
    postgresAdminUrl: string;
    /** A database migrated once at the start; each relay's database is a copy of it. */
    postgresTemplate: string;
  }
}

/**
 * globalSetup of the "postgres" project (vitest.config.ts): one throwaway server for all of
 * its files, and the schema migrated once into a template, so that a test relay's fresh
 * database costs one CREATE DATABASE … TEMPLATE instead of a server and a migration.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startPostgres();
  try {
    const template = await server.database();
    await migratePostgresUrl(template);
    project.provide('postgresAdminUrl', server.adminUrl);
    project.provide('postgresTemplate', databaseName(template));
  } catch (e) {
    await server.stop();
    throw e;
  }
  return () => server.stop();
}
