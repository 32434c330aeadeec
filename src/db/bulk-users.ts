import type { Db, NewUserRow } from './schema.ts';

export interface BulkUsersRepository {
  /**
   * Inserts users with their conversations and welcome messages, set-wise, skipping any whose username (or a lookalike
   * of it) or email is taken (by a registration, an earlier or a concurrent run); returns how many were inserted.
   */
  insertUsersWithConversations(users: NewUserRow[], welcomeMessage: string, now: Date): Promise<number>;
  countUsers(): Promise<number>;
  /** Counts users whose email is outside the given domain: those the seeding did not create. */
  countUsersOutsideEmailDomain(domain: string): Promise<number>;
}

export function createBulkUsersRepository(db: Db): BulkUsersRepository {
  return {
    async insertUsersWithConversations(users, welcomeMessage, now) {
      if (users.length === 0) return 0;
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        const inserted = await trx
          .insertInto('users')
          .values(users)
          .onConflict((conflict) => conflict.doNothing())
          .returning('id')
          .execute();
        const ids = inserted.map((row) => Number(row.id));
        await insertWelcomedConversations(trx, ids, welcomeMessage, nowMs);
        return ids.length;
      });
    },

    async countUsers() {
      const row = await db
        .selectFrom('users')
        .select((eb) => eb.fn.countAll().as('count'))
        .executeTakeFirstOrThrow();
      return Number(row.count);
    },

    async countUsersOutsideEmailDomain(domain) {
      const row = await db
        .selectFrom('users')
        .select((eb) => eb.fn.countAll().as('count'))
        .where('email_canonical', 'not like', `%@${domain}`)
        .executeTakeFirstOrThrow();
      return Number(row.count);
    },
  };
}

/** Gives each of these new users their conversation, opened by the welcome message, as a registration does. */
export async function insertWelcomedConversations(
  trx: Db,
  userIds: number[],
  welcomeMessage: string,
  nowMs: number,
): Promise<void> {
  if (userIds.length === 0) return;
  const conversations = await trx
    .insertInto('conversations')
    .values(userIds.map((id) => ({ user_id: id, created_at_ms: nowMs })))
    .returning('id')
    .execute();
  await trx
    .insertInto('messages')
    .values(
      conversations.map((row) => ({
        conversation_id: Number(row.id),
        author: 'system' as const,
        body: welcomeMessage,
        created_at_ms: nowMs,
      })),
    )
    .execute();
}
