import { Redis } from 'ioredis';
import pg from 'pg';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
    /** The Redis that shared-counter suites use (each under a key prefix of its own); empty when there is none. */
    redisUrl: string;
  }
}

const DEFAULT_URL = 'postgres://postgres@127.0.0.1:5432/test';
const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** Finds the PostgreSQL and Redis the suites also run on; CI (or an explicit TEST_DATABASE_URL / TEST_REDIS_URL) must have them. */
export default async function setup(project: TestProject): Promise<void> {
  project.provide('redisUrl', await findRedis());
  await findPostgres(project);
}

async function findRedis(): Promise<string> {
  const explicit = process.env.TEST_REDIS_URL;
  const url = explicit ?? DEFAULT_REDIS_URL;
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.ping();
    return url;
  } catch (error) {
    if (explicit || process.env.CI) {
      throw new Error(`Redis at ${url} is required (CI or TEST_REDIS_URL set) but unreachable: ${error}`);
    }
    console.warn(`\n*** Redis is unreachable at ${url}: the shared-counter suites are skipped.\n`);
    return '';
  } finally {
    client.disconnect();
  }
}

async function findPostgres(project: TestProject): Promise<void> {
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
