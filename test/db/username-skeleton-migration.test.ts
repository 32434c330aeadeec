import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as addUsernameSkeleton from '../../src/db/migrations/2026_11_27_1000_add_username_skeleton.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { usernameSkeleton } from '../../src/security/usernames.ts';
import { buildTestApp, loginToken, registration } from '../support/build-test-app.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';

// Rows written before the migration: lookalikes that were separate accounts, across more than one batch.
const FILLER = 2100;
const existing = [
  'popeye',
  'ᴀlice',
  'alice',
  ...Array.from({ length: FILLER }, (_, i) => `filler${i}`),
  'рореуе',
  'ВОВ',
  'bob',
];

describe.each(dialects)('the username skeleton migration on %s', (dialect) => {
  let database: TestDatabase;
  const ids = new Map<string, number>();

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    // biome-ignore lint/suspicious/noExplicitAny: the table as it was before the migration.
    const db = database.db as Kysely<any>;
    await addUsernameSkeleton.down(db);
    for (let start = 0; start < existing.length; start += 500) {
      const rows = await db
        .insertInto('users')
        .values(
          existing.slice(start, start + 500).map((name, i) => ({
            username: name,
            username_canonical: name.toUpperCase().toLowerCase().normalize('NFKC'),
            email: `old${start + i}@example.com`,
            email_canonical: `old${start + i}@example.com`,
            password_hash: 'unused',
            age: 30,
            level: 'beginner',
            created_at_ms: 0,
            updated_at_ms: 0,
          })),
        )
        .returning(['id', 'username'])
        .execute();
      for (const row of rows) ids.set(row.username, Number(row.id));
    }
    await addUsernameSkeleton.up(db);
  }, 60_000);
  afterAll(async () => {
    await database.destroy();
  });

  const skeletonOfRow = async (name: string) =>
    (
      await database.db
        .selectFrom('users')
        .select('username_skeleton')
        .where('id', '=', ids.get(name)!)
        .executeTakeFirstOrThrow()
    ).username_skeleton;

  it('gives every existing row the skeleton registration computes', async () => {
    const rows = await database.db
      .selectFrom('users')
      .select(['username', 'username_canonical', 'username_skeleton'])
      .execute();
    expect(rows).toHaveLength(existing.length);
    const suffixed = rows.filter((row) => row.username_skeleton !== usernameSkeleton(row.username));
    expect(suffixed.map((row) => row.username_canonical).sort()).toEqual(['alice', 'bob', 'рореуе']);
  });

  it('leaves the plain skeleton to the older of two lookalikes and suffixes the newer one with its id', async () => {
    expect(await skeletonOfRow('popeye')).toBe('popeye');
    expect(await skeletonOfRow('рореуе')).toBe(`popeye #${ids.get('рореуе')}`);
    expect(await skeletonOfRow('ᴀlice')).toBe('alice');
    expect(await skeletonOfRow('alice')).toBe(`alice #${ids.get('alice')}`);
    expect(await skeletonOfRow('ВОВ')).toBe('bob');
    expect(await skeletonOfRow('bob')).toBe(`bob #${ids.get('bob')}`);
  });

  it('keeps both lookalikes able to find their credentials by name', async () => {
    const users = createUsersRepository(database.db);
    for (const name of ['popeye', 'рореуе', 'alice', 'ᴀlice']) {
      const credentials = await users.findCredentialsByUsername(name.toLowerCase());
      expect(credentials?.user.id, name).toBe(ids.get(name));
    }
  });

  it('makes a new lookalike of either collide, and new names register and log in', async () => {
    const t = await buildTestApp(dialect, { database });
    try {
      for (const username of ['POPEYE', 'ᴘopeye', 'ᴀʟice', 'вов']) {
        const response = await t.app.inject({
          method: 'POST',
          url: '/register/',
          payload: registration({ username, email: `${crypto.randomUUID()}@example.com` }),
        });
        expect(response.statusCode, username).toBe(409);
        expect(response.json().code, username).toBe('username_taken');
      }
      const fresh = await t.app.inject({
        method: 'POST',
        url: '/register/',
        payload: registration({ username: 'newcomer', email: 'newcomer@example.com' }),
      });
      expect(fresh.statusCode).toBe(200);
      await loginToken(t.app, 'newcomer');
    } finally {
      await t.close();
    }
  });
});
