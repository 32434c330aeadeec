import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { type Bench, log } from './context.ts';
import { seedUsers } from './gatehouse.ts';

async function createPostgresDatabase(
  bench: Bench,
): Promise<{ url: string; drop: () => Promise<void> } | undefined> {
  const name = `gh_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: bench.postgresAdminUrl, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
    await admin.query(`create database ${name}`);
  } catch (error) {
    log(`PostgreSQL unavailable (${(error as Error).message}): its rows are skipped`);
    return undefined;
  } finally {
    await admin.end().catch(() => {});
  }
  const url = new URL(bench.postgresAdminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: bench.postgresAdminUrl });
      await client.connect();
      await client.query(`drop database if exists ${name} with (force)`);
      await client.end();
    },
  };
}

export async function postgresBytesPerUser(url: string, users: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query('select pg_database_size(current_database())::float8 as size');
    return Number(result.rows[0].size) / users;
  } finally {
    await client.end();
  }
}

/** A database of its own with `users` users, dropped after `use`; undefined, without `use`, when PostgreSQL is down. */
export async function withSeededPostgresDatabase<T>(
  bench: Bench,
  users: number,
  use: (url: string) => Promise<T>,
): Promise<T | undefined> {
  const database = await createPostgresDatabase(bench);
  if (!database) return undefined;
  try {
    seedUsers(bench, database.url, users);
    return await use(database.url);
  } finally {
    await database.drop();
  }
}
