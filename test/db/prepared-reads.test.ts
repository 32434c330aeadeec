import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CompiledQuery, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type DbHandle } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { executePrepared, prepareQuery, USER_ID_SENTINEL } from '../../src/db/prepared.ts';
import { createSessionsRepository } from '../../src/db/sessions.ts';

// Reads that skip Kysely's driver on SQLite must see exactly what Kysely's own path would: committed rows only.
describe('prepared reads on SQLite', () => {
  let directory: string;
  let file: string;
  let handle: DbHandle;
  beforeAll(async () => {
    directory = mkdtempSync(path.join(os.tmpdir(), 'gh_prepared_'));
    file = path.join(directory, 'gatehouse.db');
    handle = createDb({ kind: 'sqlite', path: file });
    await migrateToLatest(handle);
  });
  afterAll(async () => {
    await handle.close();
    rmSync(directory, { recursive: true, force: true });
  });

  const insert = (id: number, trx = handle.db) =>
    sql`insert into users (id, username, username_canonical, username_skeleton, email, email_canonical,
      password_hash, age, level, created_at_ms, updated_at_ms)
      values (${id}, ${`u${id}`}, ${`u${id}`}, ${`u${id}`}, ${`u${id}@example.com`}, ${`u${id}@example.com`},
      'x', 30, 'beginner', 0, 0)`.execute(trx);
  const usernameOf = () =>
    prepareQuery(
      handle.db.selectFrom('users').select(['id', 'username']).where('id', '=', USER_ID_SENTINEL[0]),
      USER_ID_SENTINEL,
    );

  it('answers with the rows, as objects of the selected columns', async () => {
    await insert(1);
    const { rows } = await executePrepared(handle.db, usernameOf()(1));
    expect(rows).toEqual([{ id: 1, username: 'u1' }]);
    expect((await handle.db.executeQuery(usernameOf()(1))).rows).toEqual(rows);
  });

  it("never reads inside another request's open transaction: the read waits for its commit", async () => {
    const { promise: released, resolve: release } = Promise.withResolvers<void>();
    const { promise: insertedInTransaction, resolve: inserted } = Promise.withResolvers<void>();
    const transaction = handle.db.transaction().execute(async (trx) => {
      await insert(2, trx);
      inserted();
      await released;
      throw new Error('rolled back');
    });
    await insertedInTransaction;
    const read = executePrepared(handle.db, usernameOf()(2));
    release();
    await expect(transaction).rejects.toThrow('rolled back');
    // Read during the transaction, it would have seen the row that the rollback then removed.
    expect((await read).rows).toEqual([]);
  });

  it("never reads a batch inside another request's open transaction: the session read waits for its rollback", async () => {
    await insert(10);
    const sessions = createSessionsRepository(handle.db, 'sqlite');
    await sessions.insertSession(
      {
        id: 'batched-in-trx',
        userId: 10,
        expiresAt: new Date(Date.now() + 3600_000),
        userAgent: undefined,
        ipAddress: undefined,
        scope: 'conversation:read',
      },
      { id: 'batched-in-trx-rt', secretHash: 'h' },
      'x',
      new Date(),
    );
    const { promise: released, resolve: release } = Promise.withResolvers<void>();
    const { promise: revokedInTransaction, resolve: revoked } = Promise.withResolvers<void>();
    const transaction = handle.db.transaction().execute(async (trx) => {
      await trx
        .updateTable('sessions')
        .set({ revoked_at_ms: 1 })
        .where('id', '=', 'batched-in-trx')
        .execute();
      revoked();
      await released;
      throw new Error('rolled back');
    });
    await revokedInTransaction;
    const read = sessions.findSessionWithUser('batched-in-trx');
    // The batch goes out after this turn; the transaction is still open then.
    await new Promise((resolve) => setImmediate(resolve));
    release();
    await expect(transaction).rejects.toThrow('rolled back');
    expect((await read)?.session.revokedAt).toBeUndefined();
  });

  it('sees what another process committed, and goes on when that process holds the write lock', async () => {
    const other = new DatabaseSync(file);
    try {
      other.exec('BEGIN IMMEDIATE');
      other.exec(`insert into users (id, username, username_canonical, username_skeleton, email, email_canonical,
        password_hash, age, level, created_at_ms, updated_at_ms) values (3, 'u3', 'u3', 'u3', 'u3@example.com', 'u3@example.com',
        'x', 30, 'beginner', 0, 0)`);
      expect((await executePrepared(handle.db, usernameOf()(3))).rows).toEqual([]);
      other.exec('COMMIT');
      expect((await executePrepared(handle.db, usernameOf()(3))).rows).toEqual([{ id: 3, username: 'u3' }]);
    } finally {
      other.close();
    }
  });

  it('keeps values under their names when another process rebuilds a table that a cached `select *` reads', async () => {
    await sql`create table rebuilt (a text, b text)`.execute(handle.db);
    await sql`insert into rebuilt values ('A', 'B')`.execute(handle.db);
    const read = () =>
      handle.db
        .selectFrom('rebuilt' as never)
        .selectAll()
        .execute();
    expect(await read()).toEqual([{ a: 'A', b: 'B' }]);
    const other = new DatabaseSync(file);
    try {
      other.exec(`create table rebuilt2 (b text, a text); insert into rebuilt2 select b, a from rebuilt;
        drop table rebuilt; alter table rebuilt2 rename to rebuilt;`);
    } finally {
      other.close();
    }
    expect(await read()).toEqual([{ a: 'A', b: 'B' }]);
  });

  it('reports a failing read as Kysely does, on the direct path too', async () => {
    const query = CompiledQuery.raw('select id from no_such_table');
    const viaKysely = await handle.db.executeQuery(query).catch((error: unknown) => error);
    const viaDirect = await executePrepared(handle.db, query).catch((error: unknown) => error);
    expect(viaDirect).toBeInstanceOf(Error);
    expect(viaDirect?.constructor).toBe((viaKysely as Error).constructor);
  });
});
