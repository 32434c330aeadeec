import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUsersRepository, MAX_USER_ID } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

describe.each(dialects)('the repositories operators use, on %s', (dialect) => {
  let database: TestDatabase;
  const now = new Date('2026-12-04T12:00:00.000Z');
  const ids: Record<string, number> = {};

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    const users = createUsersRepository(database.db);
    for (const name of ['Anna', 'bob', 'carl_x', 'dora%', 'Eve']) {
      ids[name] = (await users.insertUserWithConversation(newUser(name), 'hello', now)).id;
    }
  });
  afterAll(async () => {
    await database.destroy();
  });

  it('finds a user by canonical username, without a password hash', async () => {
    const users = createUsersRepository(database.db);
    const found = await users.findUserByUsername('anna');
    expect(found?.id).toBe(ids.Anna);
    expect(found).not.toHaveProperty('passwordHash');
    expect(await users.findUserByUsername('Anna')).toBeUndefined();
    expect(await users.findUserByUsername('nobody')).toBeUndefined();
  });

  it('finds nobody, without an error, for ids past the id column, or a search or an id cursor it cannot hold', async () => {
    const users = createUsersRepository(database.db);
    for (const id of [MAX_USER_ID + 1, 999_999_999_999_999]) {
      expect(await users.findUserById(id)).toBeUndefined();
      expect(await users.findCredentialsById(id)).toBeUndefined();
    }
    expect(
      await users.searchUsers({ search: 'a\0', emailSearches: ['a\0'], limit: 10, afterId: undefined }),
    ).toEqual([]);
    expect(
      await users.searchUsers({ search: undefined, emailSearches: [], limit: 10, afterId: MAX_USER_ID + 1 }),
    ).toEqual([]);
  });

  it('pages through users in id order after a given id', async () => {
    const users = createUsersRepository(database.db);
    const first = await users.searchUsers({
      search: undefined,
      emailSearches: [],
      limit: 2,
      afterId: undefined,
    });
    expect(first.map((user) => user.username)).toEqual(['Anna', 'bob']);
    const second = await users.searchUsers({
      search: undefined,
      emailSearches: [],
      limit: 2,
      afterId: first.at(-1)?.id,
    });
    expect(second.map((user) => user.username)).toEqual(['carl_x', 'dora%']);
    const last = await users.searchUsers({
      search: undefined,
      emailSearches: [],
      limit: 2,
      afterId: second.at(-1)?.id,
    });
    expect(last.map((user) => user.username)).toEqual(['Eve']);
  });

  it('searches usernames and emails by substring, taking % and _ literally', async () => {
    const users = createUsersRepository(database.db);
    const names = async (search: string) =>
      (await users.searchUsers({ search, emailSearches: [search], limit: 10, afterId: undefined })).map(
        (user) => user.username,
      );
    expect(await names('nn')).toEqual(['Anna']);
    expect(await names('eve@example')).toEqual(['Eve']);
    expect(await names('_')).toEqual(['carl_x']);
    expect(await names('%')).toEqual(['dora%']);
    expect(await names('a%')).toEqual(['dora%']);
    expect(await names('\\')).toEqual([]);
    expect(await names('zzz')).toEqual([]);
  });
});
