import { type Kysely, type Migration, type MigrationProvider, Migrator } from 'kysely';
import { AppError } from '../errors.ts';
import * as createCoreTables from './migrations/2026_11_25_2100_create_core_tables.ts';
import * as createSessions from './migrations/2026_11_25_2200_create_sessions.ts';

// An explicit list rather than a folder scan: the order is reviewed, and nothing depends on the cwd.
const migrations: Record<string, Migration> = {
  '2026_11_25_2100_create_core_tables': createCoreTables,
  '2026_11_25_2200_create_sessions': createSessions,
};

const provider: MigrationProvider = { getMigrations: async () => migrations };

/** Applies every pending migration; returns the names applied, or throws when one fails. */
export async function migrateToLatest(handle: {
  // biome-ignore lint/suspicious/noExplicitAny: the migrator works on any schema.
  db: Kysely<any>;
  schema: string | undefined;
}): Promise<string[]> {
  // Named explicitly: otherwise Kysely takes a kysely_migration table in any other schema for its own.
  const migrator = new Migrator({
    db: handle.db,
    provider,
    ...(handle.schema ? { migrationTableSchema: handle.schema } : {}),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw new AppError('internal', 'database migration failed', { cause: error });
  return (results ?? [])
    .filter((result) => result.status === 'Success')
    .map((result) => result.migrationName);
}
