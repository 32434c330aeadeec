import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { createDb } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { AppError } from '../../src/errors.ts';

const codeOf = (error: unknown) => (error instanceof AppError ? error.code : error);

describe('driver errors as they come out of the database handle', () => {
  const directory = mkdtempSync(join(tmpdir(), 'gatehouse-db-errors-'));
  afterAll(() => rmSync(directory, { recursive: true, force: true }));

  it('turns a SQLite file locked by another process into service_unavailable, in and out of transactions', async () => {
    const path = join(directory, 'locked.db');
    const handle = createDb({ kind: 'sqlite', path });
    await migrateToLatest(handle);
    // Waiting out the lock would only make the test slow: the error is what is under test.
    await sql`PRAGMA busy_timeout = 0`.execute(handle.db);
    const other = new DatabaseSync(path);
    other.exec('BEGIN IMMEDIATE');
    try {
      const insert = (db: typeof handle.db = handle.db) =>
        db.insertInto('server_secrets').values({ name: 'probe', value: 'x', created_at_ms: 0 }).execute();
      await expect(insert().catch(codeOf)).resolves.toBe('service_unavailable');
      await expect(
        handle.db
          .transaction()
          .execute((trx) => insert(trx))
          .catch(codeOf),
      ).resolves.toBe('service_unavailable');
    } finally {
      other.exec('ROLLBACK');
      other.close();
      await handle.close();
    }
  });

  it('turns a PostgreSQL server that refuses connections into service_unavailable', async () => {
    const handle = createDb({ kind: 'postgres', url: 'postgres://postgres@127.0.0.1:1/none' });
    try {
      await expect(sql`select 1`.execute(handle.db).catch(codeOf)).resolves.toBe('service_unavailable');
    } finally {
      await handle.close();
    }
  });

  it('keeps the driver error behind the translated one, for the operator', async () => {
    const handle = createDb({ kind: 'postgres', url: 'postgres://postgres@127.0.0.1:1/none' });
    try {
      const error = await sql`select 1`.execute(handle.db).catch((caught: unknown) => caught);
      expect((error as AppError).cause).toMatchObject({ code: 'ECONNREFUSED' });
    } finally {
      await handle.close();
    }
  });
});
