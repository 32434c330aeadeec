import type { Kysely, Transaction } from 'kysely';
import type { Database } from './schema.ts';

/** A mail ready for the outbox: its payload already sealed (services/mail.ts), so that no link is stored in clear. */
export interface QueuedMail {
  userId: number | null;
  recipient: string;
  template: string;
  sealedPayload: string;
}

/**
 * Adds a mail to the outbox. Called with the transaction of the change that causes the mail, so that the mail exists
 * exactly when the change does.
 */
export async function queueMail(
  executor: Kysely<Database> | Transaction<Database>,
  mail: QueuedMail,
  nowMs: number,
): Promise<void> {
  await executor
    .insertInto('email_outbox')
    .values({
      user_id: mail.userId,
      recipient: mail.recipient,
      template: mail.template,
      payload: mail.sealedPayload,
      created_at_ms: nowMs,
      send_after_ms: nowMs,
      last_error: null,
      claimed_until_ms: null,
      sent_at_ms: null,
    })
    .execute();
}
