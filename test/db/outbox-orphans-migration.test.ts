import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueMail } from '../../src/db/email-outbox.ts';
import * as forgetMailsOfDeletedAccounts from '../../src/db/migrations/2026_12_13_0900_forget_mails_of_deleted_accounts.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const T0 = Date.UTC(2026, 11, 7, 9, 0, 0);

// Found from outside: before mails followed their user, deleting an account left its mails with no user, queued ones
// too; the version that made them follow kept those, and sent them after an upgrade (two reset links, an email-change
// link and a notice, of two accounts deleted before it).
describe.each(dialects)(
  'the migration that forgets the mails of accounts deleted earlier, on %s',
  (dialect) => {
    let database: TestDatabase;
    // biome-ignore lint/suspicious/noExplicitAny: the outbox as the migration finds it.
    let db: Kysely<any>;

    beforeAll(async () => {
      database = await createTestDatabase(dialect);
      db = database.db;
      const staying = await createUsersRepository(database.db).insertUserWithConversation(
        newUser('Staying'),
        'hi',
        new Date(T0),
      );
      for (const [userId, recipient, sent] of [
        [staying.id, 'staying@example.com', false],
        [null, 'gone@example.com', false],
        [null, 'gone-too@example.com', true],
      ] as const) {
        await queueMail(
          database.db,
          { userId, recipient, template: 'password_reset', sealedPayload: 's' },
          T0,
        );
        if (sent)
          await db
            .updateTable('email_outbox')
            .set({ sent_at_ms: T0 })
            .where('recipient', '=', recipient)
            .execute();
      }
      await forgetMailsOfDeletedAccounts.up(db);
    });
    afterAll(async () => {
      await database.destroy();
    });

    it('deletes every mail without a user, queued or sent, and keeps the others', async () => {
      const left = await db.selectFrom('email_outbox').select('recipient').orderBy('id').execute();
      expect(left.map((row) => row.recipient)).toEqual(['staying@example.com']);
    });
  },
);
