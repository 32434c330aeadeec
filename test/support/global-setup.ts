import pg from 'pg';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
  }
}

const DEFAULT_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** Finds the PostgreSQL the suites also run on; CI (or an explicit TEST_DATABASE_URL) must have one. */
export default async function setup(project: TestProject): Promise<void> {
  const explicit = process.env.TEST_DATABASE_URL;
  const url = explicit ?? DEFAULT_URL;
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('select 1');
    project.provide('postgresUrl', url);
  } catch (error) {
    if (explicit || process.env.CI) {
      throw new Error(
        `PostgreSQL at ${url} is required (CI or TEST_DATABASE_URL set) but unreachable: ${error}`,
      );
    }
    console.warn(
      `\n*** PostgreSQL is unreachable at ${url}: the database and HTTP suites run on SQLite ONLY.\n` +
        '*** Start PostgreSQL (or set TEST_DATABASE_URL) to run them on both; CI refuses to run without it.\n',
    );
    project.provide('postgresUrl', '');
  } finally {
    await client.end().catch(() => {});
  }
}
