import type { Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueMail } from '../../src/db/email-outbox.ts';
import * as forgetMailServersRefusals from '../../src/db/migrations/2026_12_14_0900_forget_mail_servers_refusals.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const T0 = Date.UTC(2026, 11, 8, 9, 0, 0);
const QUOTED_LINK =
  '554 spam score high for https://id.example.com/account/reset-password#token=Zm9vYmFyYmF6cXV4';

// Found from outside: earlier versions stored a server's refusal word for word, a link quoted in it included, and kept
// it after the mail was sent.
describe.each(dialects)('the migration that forgets the refusals of mail servers, on %s', (dialect) => {
  let database: TestDatabase;
  // biome-ignore lint/suspicious/noExplicitAny: the outbox as the migration finds it.
  let db: Kysely<any>;

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    db = database.db;
    const user = await createUsersRepository(database.db).insertUserWithConversation(
      newUser('Refused'),
      'hi',
      new Date(T0),
    );
    for (const [recipient, sent, lastError] of [
      ['sent@example.com', true, QUOTED_LINK],
      ['queued@example.com', false, '550 <queued@example.com>: Recipient address rejected'],
      ['untried@example.com', false, null],
    ] as const) {
      await queueMail(
        database.db,
        { userId: user.id, recipient, template: 'password_reset', sealedPayload: 's' },
        T0,
      );
      await db
        .updateTable('email_outbox')
        .set({
          last_error: lastError,
          attempts: lastError ? 1 : 0,
          ...(sent ? { sent_at_ms: T0, payload: null } : {}),
        })
        .where('recipient', '=', recipient)
        .execute();
    }
    await forgetMailServersRefusals.up(db);
  });
  afterAll(async () => {
    await database.destroy();
  });

  it('forgets every stored refusal, of sent and queued mails, and keeps the mails and their attempts', async () => {
    const rows = await db
      .selectFrom('email_outbox')
      .select(['recipient', 'last_error', 'attempts', 'payload'])
      .orderBy('id')
      .execute();
    expect(rows.map((row) => [row.recipient, row.last_error, Number(row.attempts)])).toEqual([
      ['sent@example.com', null, 1],
      ['queued@example.com', null, 1],
      ['untried@example.com', null, 0],
    ]);
    expect(rows[1]?.payload).toBe('s');
  });
});
