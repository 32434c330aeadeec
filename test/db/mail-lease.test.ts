import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEmailOutboxRepository, queueMail } from '../../src/db/email-outbox.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createSmtpTransport } from '../../src/outbound/smtp.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { createMailComposer, createMailRenderer } from '../../src/services/mail.ts';
import { createMailSender } from '../../src/services/mail-sender.ts';
import { TEST_SECRET } from '../support/build-test-app.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';
import { type SmtpInbox, startSmtpInbox } from '../support/smtp-inbox.ts';

// Found from outside: two instances sharing an outbox sent mails twice. The lease covered a batch of up to ten, sent one
// after another; once the batch outlasted it (a slow server within every timeout), the other instance claimed the
// rest and sent them too. Here the lease is short, and the server takes most of it to accept each mail.
describe.each(dialects)('two senders sharing an outbox whose batch outlasts a lease, on %s', (dialect) => {
  let database: TestDatabase;
  let inbox: SmtpInbox;
  const LEASE_MS = 600;
  const MAILS = 4;

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    inbox = await startSmtpInbox({ dataDelayMs: 400 });
  });
  afterAll(async () => {
    await inbox.stop();
    await database.destroy();
  });

  it('sends every mail once: a sender keeps the lease of the mail it sends, and renews each before sending it', async () => {
    const box = createSecretBox([TEST_SECRET]);
    const composer = createMailComposer(box);
    const user = await createUsersRepository(database.db).insertUserWithConversation(
      newUser('Leased'),
      'hi',
      new Date(),
    );
    for (let index = 0; index < MAILS; index += 1) {
      const recipient = `lease${index}@example.com`;
      const mail = composer.compose({
        userId: user.id,
        to: recipient,
        template: 'password_reset',
        values: { username: 'Leased', link: `http://localhost:8000/account/reset-password#token=${index}` },
      });
      await queueMail(database.db, mail, Date.now());
    }
    const sender = () =>
      createMailSender({
        outbox: createEmailOutboxRepository(database.db, database.dialect),
        renderer: createMailRenderer(box),
        transport: createSmtpTransport(inbox.url),
        from: 'Gatehouse <no-reply@example.com>',
        clock: { now: () => new Date() },
        events: { sent: () => {}, failed: () => {}, outboxUnavailable: () => {}, outboxAvailable: () => {} },
        pollIntervalMs: 20,
        leaseMs: LEASE_MS,
      });
    const first = sender();
    const second = sender();
    first.start();
    await new Promise((resolve) => setTimeout(resolve, 100));
    second.start();
    for (let waited = 0; inbox.all().length < MAILS && waited < 15_000; waited += 50)
      await new Promise((resolve) => setTimeout(resolve, 50));
    // Past every lease once more: a duplicate would have been claimed and sent by now.
    await new Promise((resolve) => setTimeout(resolve, 2 * LEASE_MS));
    await Promise.all([first.stop(), second.stop()]);
    const recipients = inbox.all().flatMap((mail) => mail.envelopeTo);
    expect(recipients.sort()).toEqual(
      Array.from({ length: MAILS }, (_, index) => `lease${index}@example.com`),
    );
  });
});
