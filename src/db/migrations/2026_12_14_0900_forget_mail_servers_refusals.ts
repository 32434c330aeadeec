import type { Kysely } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

/**
 * Earlier versions stored a mail server's refusal word for word, and a server may quote the recipient or the message,
 * its link and token included (found from outside: a reset link kept there after its mail was sent still reset the
 * password). The refusals stored so far go; a mail still queued records its next one, as this version words it.
 */
export async function up(db: AnyDb): Promise<void> {
  await db
    .updateTable('email_outbox')
    .set({ last_error: null })
    .where('last_error', 'is not', null)
    .execute();
}

// What was forgotten is gone.
export async function down(_db: AnyDb): Promise<void> {}
