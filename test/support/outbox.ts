import { createSecretBox } from '../../src/security/secret-box.ts';
import { outboxSealContext } from '../../src/services/mail.ts';
import { TEST_SECRET } from './build-test-app.ts';
import type { TestDatabase } from './dialects.ts';

export interface OutboxMail {
  id: number;
  userId: number | null;
  recipient: string;
  template: string;
  /** The sealed values, opened as the sender would. */
  values: { username: string; link?: string; newEmail?: string; signInUrl?: string };
}

const box = createSecretBox([TEST_SECRET]);

/** The outbox's mails, oldest first, their payloads opened; only those to `recipient` when given. */
export async function outboxMails(database: TestDatabase, recipient?: string): Promise<OutboxMail[]> {
  let query = database.db.selectFrom('email_outbox').selectAll().orderBy('id');
  if (recipient !== undefined) query = query.where('recipient', '=', recipient);
  const rows = await query.execute();
  return rows.map((row) => ({
    id: Number(row.id),
    userId: row.user_id === null ? null : Number(row.user_id),
    recipient: row.recipient,
    template: row.template,
    values: JSON.parse(box.open(row.payload ?? '', outboxSealContext(row.template, row.recipient))),
  }));
}

/** The token a mailed link carries in its fragment. */
export function tokenOfLink(link: string | undefined): string {
  const token = new URLSearchParams(new URL(link ?? '').hash.slice(1)).get('token');
  if (!token) throw new Error(`no token in ${link}`);
  return token;
}

/** The token of the newest mail of this template to this recipient. */
export async function mailedToken(
  database: TestDatabase,
  recipient: string,
  template: string,
): Promise<string> {
  const mail = (await outboxMails(database, recipient)).filter((row) => row.template === template).at(-1);
  if (!mail) throw new Error(`no ${template} mail to ${recipient}`);
  return tokenOfLink(mail.values.link);
}
