import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createDb } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { AppError } from '../../src/errors.ts';
import { startStallingProxy } from '../support/stalling-proxy.ts';

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

  // Found from outside: an older version started on a database a newer one had migrated said the migrations were
  // "corrupted", which tells an operator rolling back that the database is damaged; it is only newer.
  it('says a database migrated by a newer version is newer, naming the migration, and changes nothing', async () => {
    const path = join(directory, 'newer.db');
    const handle = createDb({ kind: 'sqlite', path });
    await migrateToLatest(handle);
    await handle.db
      .insertInto('kysely_migration' as never)
      .values({ name: '2099_01_01_0000_from_the_future', timestamp: new Date(0).toISOString() } as never)
      .execute();
    try {
      const refusal = await migrateToLatest(handle).catch((error: unknown) => error);
      expect(refusal).toBeInstanceOf(AppError);
      expect((refusal as AppError).message).toMatch(
        /migrated by a newer version of Gatehouse \(2099_01_01_0000_from_the_future\)/,
      );
      expect((refusal as AppError).message).toMatch(/backup/);
    } finally {
      await handle.close();
    }
  });

  // Found from outside on a full disk: every write answered 500, the log said "cannot rollback - no transaction is
  // active" (SQLite had rolled back already), and /readyz said ready. max_page_count gives SQLite's very SQLITE_FULL.
  it('turns a full SQLite database into service_unavailable, in and out of transactions, and says so in health', async () => {
    const path = join(directory, 'full.db');
    const handle = createDb({ kind: 'sqlite', path });
    await migrateToLatest(handle);
    const { page_count: pages } = (await sql<{ page_count: number }>`PRAGMA page_count`.execute(handle.db))
      .rows[0] ?? { page_count: 0 };
    await sql.raw(`PRAGMA max_page_count = ${pages}`).execute(handle.db);
    const big = (name: string) => ({ name, value: 'x'.repeat(200_000), created_at_ms: 0 });
    try {
      const outside = await handle.db
        .insertInto('server_secrets')
        .values(big('a'))
        .execute()
        .catch((e) => e);
      expect(codeOf(outside)).toBe('service_unavailable');
      expect((outside as AppError).cause).toMatchObject({ message: expect.stringMatching(/full/) });
      const inside = await handle.db
        .transaction()
        .execute((trx) => trx.insertInto('server_secrets').values(big('b')).execute())
        .catch((e: unknown) => e);
      expect(codeOf(inside)).toBe('service_unavailable');
      expect((inside as AppError).cause).toMatchObject({ message: expect.stringMatching(/full/) });
      expect(handle.problem?.()).toMatch(/full/);
      // Only a write that landed says the disk takes writes again (found in review): not a transaction that began and
      // ended without one, nor a statement that changed nothing.
      await handle.db
        .transaction()
        .execute((trx) => trx.selectFrom('server_secrets').select('name').execute());
      await handle.db.deleteFrom('server_secrets').where('name', '=', 'nothing-by-this-name').execute();
      expect(handle.problem?.()).toMatch(/full/);
      // Room again: the next write succeeds, and health says nothing.
      await sql.raw('PRAGMA max_page_count = 1000000').execute(handle.db);
      await handle.db.insertInto('server_secrets').values(big('c')).execute();
      expect(handle.problem?.()).toBeUndefined();
    } finally {
      await handle.close();
    }
  });

  // Found from outside: with its file deleted, the server went on answering 200 into the unlinked inode, and all of it
  // was gone at the restart, without a line in the log.
  it('refuses every statement, and says so in health, once the SQLite file at its path is deleted or replaced', async () => {
    for (const change of ['deleted', 'replaced'] as const) {
      const path = join(directory, `gone-${change}.db`);
      const handle = createDb({ kind: 'sqlite', path });
      await migrateToLatest(handle);
      try {
        expect(handle.problem?.()).toBeUndefined();
        for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
        if (change === 'replaced') new DatabaseSync(path).close();
        await new Promise((resolve) => setTimeout(resolve, 1500));
        expect(handle.problem?.()).toMatch(new RegExp(`${path}.*(deleted|replaced)`));
        const refused = await sql`select 1`.execute(handle.db).catch((e: unknown) => e);
        expect(codeOf(refused)).toBe('service_unavailable');
      } finally {
        await handle.close();
      }
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

  // Found from outside: once the pool's connections went silent for good (a firewall or NAT that lost their state),
  // every query was sent on them again, each timing out, for as long as requests came; new connections would work.
  it('drops a PostgreSQL connection whose query timed out, so that the next queries take a new one', async () => {
    const timeoutMs = 1000;
    const proxy = await startStallingProxy(inject('postgresUrl'));
    const url = new URL(inject('postgresUrl'));
    url.host = `127.0.0.1:${proxy.port}`;
    const handle = createDb({
      kind: 'postgres',
      url: url.toString(),
      maxConnections: 2,
      queryTimeoutMs: timeoutMs,
    });
    const select = () =>
      sql`select 1 as one`.execute(handle.db).then(
        (result) => result.rows,
        (error: unknown) => codeOf(error),
      );
    try {
      await Promise.all([select(), select()]);
      proxy.strand();
      const during = await Promise.all([select(), select()]);
      expect(during).toEqual(['service_unavailable', 'service_unavailable']);
      const after = await Promise.all([select(), select(), select(), select()]);
      expect(after).toEqual(Array(4).fill([{ one: 1 }]));
      // In a transaction, Kysely's ROLLBACK after the unanswered query went to the same connection and waited a
      // second query timeout behind it (found in review): it fails at once there.
      let started = 0;
      const inTransaction = await handle.db
        .transaction()
        .execute(async (trx) => {
          await sql`select 1`.execute(trx);
          proxy.strand();
          started = performance.now();
          await sql`select 1`.execute(trx);
        })
        .catch((error: unknown) => error);
      const elapsedMs = performance.now() - started;
      expect(codeOf(inTransaction)).toBe('service_unavailable');
      expect(elapsedMs, 'one query timeout, not two').toBeLessThan(2 * timeoutMs);
    } finally {
      await handle.close();
      await proxy.close();
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

  it.runIf(inject('postgresUrl'))(
    'answers service_unavailable, and keeps the process alive, when PostgreSQL drops a connection in use',
    async () => {
      const url = inject('postgresUrl');
      const handle = createDb({ kind: 'postgres', url });
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      const uncaught: unknown[] = [];
      const onUncaught = (error: unknown) => uncaught.push(error);
      process.on('uncaughtException', onUncaught);
      try {
        // Ended between two statements of a transaction: the client is held by the request but idle, so the
        // pool's own listener is gone and the error arrives as an event, not as a query's rejection.
        const outcome = await handle.db
          .transaction()
          .execute(async (trx) => {
            const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx);
            await admin.query('select pg_terminate_backend($1)', [rows[0]?.pid]);
            await new Promise((resolve) => setTimeout(resolve, 200));
            await sql`select 1`.execute(trx);
          })
          .catch(codeOf);
        expect(outcome).toBe('service_unavailable');
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(uncaught).toEqual([]);
        await expect(sql`select 1 as one`.execute(handle.db)).resolves.toMatchObject({ rows: [{ one: 1 }] });
      } finally {
        process.off('uncaughtException', onUncaught);
        await admin.end();
        await handle.close();
      }
    },
  );
});
