import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { createDb, type DbHandle } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import type { Dialect } from '../../src/db/schema.ts';

export interface TestDatabase extends DbHandle {
  /** Closes the connection and drops everything the test created. */
  destroy(): Promise<void>;
}

/** The dialects every database and HTTP suite runs on: SQLite always, PostgreSQL when reachable. */
export const dialects: Dialect[] = inject('postgresUrl') ? ['sqlite', 'postgres'] : ['sqlite'];

/** Opens a fresh, migrated database: SQLite in memory, or a new PostgreSQL schema. */
export async function createTestDatabase(dialect: Dialect): Promise<TestDatabase> {
  if (dialect === 'sqlite') {
    const handle = createDb({ kind: 'sqlite', path: ':memory:' });
    await migrateToLatest(handle);
    return { ...handle, destroy: handle.close };
  }
  const url = inject('postgresUrl');
  const schema = `test_${randomBytes(6).toString('hex')}`;
  await withAdminClient(url, (client) => client.query(`create schema ${schema}`));
  const handle = createDb({ kind: 'postgres', url, schema, maxConnections: 20 });
  await migrateFreshSchema(handle);
  return {
    ...handle,
    async destroy() {
      await handle.close().catch(() => {});
      await withAdminClient(url, (client) => client.query(`drop schema ${schema} cascade`));
    },
  };
}

/**
 * Migrates a schema just created by another connection. With many test schemas in the shared database, PostgreSQL
 * plans the migrator's catalog query in parallel, and a parallel worker now and then fails to find the new schema
 * (3F000 "schema does not exist"): a second try finds it. The error does not always name the parallel worker (CI
 * saw one without a `where`); the schema was created a moment ago, so any 3F000 here is that.
 */
async function migrateFreshSchema(handle: DbHandle): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await migrateToLatest(handle);
      return;
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause;
      if (attempt >= 3 || cause?.code !== '3F000') throw error;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}

async function withAdminClient(url: string, run: (client: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await run(client);
  } finally {
    await client.end();
  }
}
