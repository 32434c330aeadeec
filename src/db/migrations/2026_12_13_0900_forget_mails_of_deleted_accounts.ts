import type { Kysely } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

/**
 * Every mail is queued for a user, and goes with its user since 2026_12_11_0900_outbox_follows_its_user; a mail with no
 * user is one whose account an earlier version deleted (ON DELETE SET NULL), queued ones included. That migration kept
 * them, and they were sent after an upgrade (found from outside): reset and email-change links, and the addresses, of
 * accounts that are gone.
 */
export async function up(db: AnyDb): Promise<void> {
  await db.deleteFrom('email_outbox').where('user_id', 'is', null).execute();
}

// What was deleted is gone, as the accounts are.
export async function down(_db: AnyDb): Promise<void> {}
