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
 * plans the migrator's catalog query (all schemas' tables) in parallel, and a parallel worker now and then trips over
 * another suite's schema being migrated or dropped at that moment: 3F000 "schema does not exist" for this very schema,
 * 42703 "column does not exist" from pg_get_serial_sequence on another's (both seen in CI). Kysely runs the
 * migrations in one transaction, so a try that fails leaves nothing; a second finds the catalog settled, and a
 * migration that is really broken fails all three.
 */
async function migrateFreshSchema(handle: DbHandle): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await migrateToLatest(handle);
      return;
    } catch (error) {
      if (attempt >= 3) throw error;
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
