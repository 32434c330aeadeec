import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as foldCapitalSharpS from '../../src/db/migrations/2026_12_10_0900_fold_capital_sharp_s.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';

// Rows as registration wrote them before ẞ (U+1E9E) was folded to "ss": upper then lower case left it as ß.
const before = [
  { username: 'Weiẞ', canonical: 'weiß', skeleton: 'weiß' },
  { username: 'Straße', canonical: 'strasse', skeleton: 'strasse' },
  // Two accounts the old folding kept apart and the new one would merge: the one written later keeps its forms.
  { username: 'kloss', canonical: 'kloss', skeleton: 'kloss' },
  { username: 'Kloẞ', canonical: 'kloß', skeleton: 'kloß' },
];

describe.each(dialects)('the capital sharp s migration on %s', (dialect) => {
  let database: TestDatabase;
  const ids = new Map<string, number>();

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    // biome-ignore lint/suspicious/noExplicitAny: the rows as they were before the migration.
    const db = database.db as Kysely<any>;
    for (const [i, row] of before.entries()) {
      const inserted = await db
        .insertInto('users')
        .values({
          username: row.username,
          username_canonical: row.canonical,
          username_skeleton: row.skeleton,
          email: `sharp${i}@example.com`,
          email_canonical: `sharp${i}@example.com`,
          password_hash: 'unused',
          age: 30,
          level: 'beginner',
          created_at_ms: 0,
          updated_at_ms: 0,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      ids.set(row.username, Number(inserted.id));
    }
    await foldCapitalSharpS.up(db);
  });
  afterAll(async () => {
    await database.destroy();
  });

  const formsOf = async (username: string) =>
    database.db
      .selectFrom('users')
      .select(['username_canonical', 'username_skeleton'])
      .where('id', '=', ids.get(username)!)
      .executeTakeFirstOrThrow();

  it('folds ẞ to "ss" in the canonical form and the skeleton, so that every case form logs in', async () => {
    expect(await formsOf('Weiẞ')).toEqual({ username_canonical: 'weiss', username_skeleton: 'weiss' });
    const found = await createUsersRepository(database.db).findCredentialsByUsername('weiss');
    expect(found?.user.id).toBe(ids.get('Weiẞ'));
  });

  it('leaves names without ẞ as they were', async () => {
    expect(await formsOf('Straße')).toEqual({ username_canonical: 'strasse', username_skeleton: 'strasse' });
    expect(await formsOf('kloss')).toEqual({ username_canonical: 'kloss', username_skeleton: 'kloss' });
  });

  it('keeps apart two accounts the new folding would merge, the later one with its former forms', async () => {
    expect(await formsOf('Kloẞ')).toEqual({ username_canonical: 'kloß', username_skeleton: 'kloß' });
  });

  it('can run again and changes nothing more', async () => {
    // biome-ignore lint/suspicious/noExplicitAny: the migration takes any schema.
    await foldCapitalSharpS.up(database.db as Kysely<any>);
    expect(await formsOf('Weiẞ')).toEqual({ username_canonical: 'weiss', username_skeleton: 'weiss' });
    expect(await formsOf('Kloẞ')).toEqual({ username_canonical: 'kloß', username_skeleton: 'kloß' });
  });
});
