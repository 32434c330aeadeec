import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueMail } from '../../src/db/email-outbox.ts';
import * as outboxFollowsItsUser from '../../src/db/migrations/2026_12_11_0900_outbox_follows_its_user.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const T0 = Date.UTC(2026, 11, 7, 9, 0, 0);

describe.each(dialects)('the migration that deletes mails with their user, on %s', (dialect) => {
  let database: TestDatabase;
  // biome-ignore lint/suspicious/noExplicitAny: the outbox as it was before and after the migration.
  let db: Kysely<any>;
  const before: Record<string, unknown>[] = [];
  let leaving: { id: number; passwordHash: string };

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    db = database.db;
    // Back to the outbox as it was (ON DELETE SET NULL), with mails in it, then forward again.
    await outboxFollowsItsUser.down(db);
    const users = createUsersRepository(database.db);
    const staying = await users.insertUserWithConversation(newUser('Staying'), 'hi', new Date(T0));
    const user = newUser('Leaving');
    leaving = {
      id: (await users.insertUserWithConversation(user, 'hi', new Date(T0))).id,
      passwordHash: user.passwordHash,
    };
    for (const [userId, recipient] of [
      [leaving.id, 'leaving@example.com'],
      [staying.id, 'staying@example.com'],
      [null, 'nobody@example.com'],
    ] as const) {
      await queueMail(
        database.db,
        { userId, recipient, template: 'verify_email', sealedPayload: 'sealed' },
        T0,
      );
    }
    await db
      .updateTable('email_outbox')
      .set({ attempts: 2, last_error: 'timeout' })
      .where('recipient', '=', 'staying@example.com')
      .execute();
    before.push(...(await db.selectFrom('email_outbox').selectAll().orderBy('id').execute()));
    await outboxFollowsItsUser.up(db);
  });
  afterAll(async () => {
    await database.destroy();
  });

  it('keeps every mail as it was', async () => {
    expect(await db.selectFrom('email_outbox').selectAll().orderBy('id').execute()).toEqual(before);
  });

  it("deletes a user's mails with the user, and no one else's", async () => {
    expect(await createUsersRepository(database.db).deleteUser(leaving.id, leaving.passwordHash)).toBe(true);
    const left = await db.selectFrom('email_outbox').select('recipient').orderBy('id').execute();
    expect(left.map((row) => row.recipient)).toEqual(['staying@example.com', 'nobody@example.com']);
  });

  it('goes on numbering mails after the last one', async () => {
    await queueMail(
      database.db,
      { userId: null, recipient: 'next@example.com', template: 'verify_email', sealedPayload: 's' },
      T0,
    );
    const next = await db
      .selectFrom('email_outbox')
      .select('id')
      .where('recipient', '=', 'next@example.com')
      .executeTakeFirstOrThrow();
    expect(Number(next.id)).toBeGreaterThan(Math.max(...before.map((row) => Number(row.id))));
  });
});
