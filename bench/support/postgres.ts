import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { type Bench, log } from './context.ts';

export async function createPostgresDatabase(
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
