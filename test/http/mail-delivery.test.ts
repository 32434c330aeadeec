import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { queueMail } from '../../src/db/email-outbox.ts';
import type { Dialect } from '../../src/db/schema.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { createMailComposer, type MailTemplate } from '../../src/services/mail.ts';
import { buildTestApp, TEST_SECRET, type TestApp } from '../support/build-test-app.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { type SmtpInbox, startSmtpInbox } from '../support/smtp-inbox.ts';

const PUBLIC_URL = 'https://id.example.com';
const composer = createMailComposer(createSecretBox([TEST_SECRET]));

async function waitFor<T>(read: () => Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe.each(dialects)('mail delivery on %s', (dialect: Dialect) => {
  let inbox: SmtpInbox;
  const apps: TestApp[] = [];
  let counter = 0;

  beforeAll(async () => {
    inbox = await startSmtpInbox();
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
    await inbox.restart();
  });
  afterAll(async () => {
    await inbox.stop();
  });

  const mailEnv = () => ({
    SMTP_URL: inbox.url,
    PUBLIC_URL,
    MAIL_FROM: 'Gatehouse Test <accounts@id.example.com>',
  });
  const build = async (options: Parameters<typeof buildTestApp>[1] = {}) => {
    const app = await buildTestApp(dialect, { ...options, env: { ...mailEnv(), ...options.env } });
    apps.push(app);
    return app;
  };
  const queue = async (database: TestDatabase, template: MailTemplate = 'password_reset') => {
    counter += 1;
    const to = `user${counter}-${dialect}@example.com`;
    const token = `tok${counter}_${'s'.repeat(40)}`;
    const link = `${PUBLIC_URL}/account/reset-password#token=${token}`;
    await queueMail(
      database.db,
      composer.compose({ userId: null, to, template, values: { username: `user${counter}`, link } }),
      Date.parse('2026-11-25T12:00:00Z'),
    );
    const row = await database.db
      .selectFrom('email_outbox')
      .select('id')
      .where('recipient', '=', to)
      .executeTakeFirstOrThrow();
    return { to, token, link, id: Number(row.id) };
  };
  const stored = (database: TestDatabase, id: number) =>
    database.db.selectFrom('email_outbox').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  it('delivers a queued mail once, from MAIL_FROM to its recipient, with its subject, text and HTML', async () => {
    const { database } = await build();
    const mail = await queue(database);
    const received = await inbox.next({ to: mail.to });
    expect(received.from).toBe('accounts@id.example.com');
    expect(received.parsed.from?.text).toBe('"Gatehouse Test" <accounts@id.example.com>');
    expect(received.to).toEqual([mail.to]);
    expect(received.envelopeTo).toEqual([mail.to]);
    expect(received.subject).toBe('Reset your Gatehouse password');
    expect(received.subject).not.toContain(mail.token);
    expect(received.text).toContain(mail.link);
    expect(received.html).toContain(`href="${mail.link}"`);
    const sent = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.sent_at_ms === null ? undefined : row;
    }, 'the mail to be marked sent');
    expect(sent.payload).toBeNull();
    expect(sent.attempts).toBe(0);
    // One Message-ID per outbox row, the same on every attempt, so that a receiver can drop a repeated delivery.
    expect(received.parsed.messageId).toBe(
      `<outbox.${mail.id}.${Number(sent.created_at_ms).toString(36)}@id.example.com>`,
    );
    // Several polls later, still one mail.
    await sleep(2500);
    expect(inbox.all().filter((each) => each.envelopeTo.includes(mail.to))).toHaveLength(1);
  });

  it('keeps a mail queued while the SMTP server is down, and delivers it exactly once when it is back', async () => {
    const clock = createTestClock();
    const { database, logs } = await build({ clock });
    await inbox.stop();
    const mail = await queue(database);
    const failed = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.attempts >= 1 ? row : undefined;
    }, 'a failed attempt');
    expect(failed.attempts).toBe(1);
    expect(failed.last_error).toMatch(/ECONNREFUSED|ECONNECTION/);
    expect(failed.sent_at_ms).toBeNull();
    expect(failed.payload).not.toBeNull();
    expect(failed.claimed_until_ms).toBeNull();
    expect(Number(failed.send_after_ms)).toBe(clock.now().getTime() + 5000);
    // The next attempt waits for the back-off: the clock does not move, so neither does the mail.
    await sleep(1500);
    expect((await stored(database, mail.id)).attempts).toBe(1);

    await inbox.restart();
    clock.advanceSeconds(5);
    const received = await inbox.next({ to: mail.to });
    expect(received.text).toContain(mail.link);
    const sent = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.sent_at_ms === null ? undefined : row;
    }, 'the mail to be marked sent');
    expect(sent.payload).toBeNull();
    expect(sent.attempts).toBe(1);
    await sleep(1500);
    expect(inbox.all().filter((each) => each.envelopeTo.includes(mail.to))).toHaveLength(1);

    const failures = logs.filter((line) => line.includes('mail not sent'));
    expect(failures).toHaveLength(1);
    expect(JSON.parse(failures[0]!)).toMatchObject({
      level: 40,
      mailId: mail.id,
      template: 'password_reset',
    });
    for (const line of logs) {
      expect(line).not.toContain(mail.token);
      expect(line).not.toContain(mail.to);
    }
  });

  it('tries again after the server refused a recipient for now (451)', async () => {
    const clock = createTestClock();
    const { database } = await build({ clock });
    inbox.failNext();
    const mail = await queue(database, 'verify_email');
    const failed = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.attempts >= 1 ? row : undefined;
    }, 'a failed attempt');
    expect(failed.last_error).toMatch(/451/);
    clock.advanceSeconds(5);
    const received = await inbox.next({ to: mail.to });
    expect(received.subject).toBe('Confirm your email address');
  });

  // Found from outside: a server's refusal quoted the recipient (550 <user@…>: User unknown) or the message (a content
  // filter's 554 … for https://…#token=…), and the reply went word for word into the log and the outbox, where the
  // link stayed after the mail was sent, and still reset the password.
  it("keeps no address, link or token of a server's refusal, in the outbox or the log", async () => {
    const clock = createTestClock();
    const { database, logs } = await build({ clock });
    inbox.refuseNext('rcpt', ({ to }) => ({
      code: 550,
      message: `<${to}>: Recipient address rejected: User unknown`,
    }));
    const mail = await queue(database);
    const refusedAtRecipient = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.attempts >= 1 ? row : undefined;
    }, 'a refused recipient');
    expect(refusedAtRecipient.last_error).toMatch(/550/);
    expect(refusedAtRecipient.last_error).toMatch(/Recipient address rejected: User unknown/);
    expect(refusedAtRecipient.last_error).not.toContain(mail.to);
    expect(refusedAtRecipient.last_error).not.toContain('@');

    inbox.refuseNext('data', ({ text }) => ({
      code: 554,
      message: `content rejected: spam score high for ${/https:\S+/.exec(text)?.[0]} (${mail.token.slice(3)})`,
    }));
    clock.advanceSeconds(5);
    const refusedAtData = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.attempts >= 2 ? row : undefined;
    }, 'a refused message');
    expect(refusedAtData.last_error).toMatch(/554 content rejected: spam score high for/);
    expect(refusedAtData.last_error).not.toContain(mail.token.slice(3, 23));
    expect(refusedAtData.last_error).not.toContain('id.example.com/account');

    clock.advanceSeconds(30);
    await inbox.next({ to: mail.to });
    const sent = await waitFor(async () => {
      const row = await stored(database, mail.id);
      return row.sent_at_ms === null ? undefined : row;
    }, 'the mail to be marked sent');
    expect(sent.last_error ?? '').not.toContain(mail.token.slice(3, 23));
    expect(logs.filter((line) => line.includes('mail not sent'))).toHaveLength(2);
    for (const line of logs) {
      expect(line).not.toContain(mail.token.slice(3, 23));
      expect(line).not.toContain(mail.to);
    }
  });

  it('sends each mail once when two apps share the database', async () => {
    const database = await createTestDatabase(dialect);
    try {
      await build({ database });
      await build({ database });
      const mails = [];
      for (let i = 0; i < 20; i += 1) mails.push(await queue(database));
      for (const mail of mails) await inbox.next({ to: mail.to, timeoutMs: 15_000 });
      await sleep(2500);
      for (const mail of mails) {
        expect(inbox.all().filter((each) => each.envelopeTo.includes(mail.to))).toHaveLength(1);
      }
      const unsent = await database.db
        .selectFrom('email_outbox')
        .select('id')
        .where('sent_at_ms', 'is', null)
        .execute();
      expect(unsent).toEqual([]);
    } finally {
      await Promise.all(apps.splice(0).map((app) => app.close()));
      await database.destroy();
    }
  });

  it('runs no sender without SMTP_URL: mails stay in the outbox', async () => {
    const app = await buildTestApp(dialect);
    apps.push(app);
    const mail = await queue(app.database);
    await sleep(1500);
    const row = await stored(app.database, mail.id);
    expect(row).toMatchObject({ attempts: 0, sent_at_ms: null, last_error: null });
    expect(row.payload).not.toBeNull();
    expect(inbox.all().filter((each) => each.envelopeTo.includes(mail.to))).toEqual([]);
  });

  it('stops its sender on close: a closed app sends nothing more', async () => {
    const database = await createTestDatabase(dialect);
    try {
      const app = await build({ database });
      await app.close();
      apps.splice(apps.indexOf(app), 1);
      const mail = await queue(database);
      await sleep(1500);
      expect(await stored(database, mail.id)).toMatchObject({ attempts: 0, sent_at_ms: null });
    } finally {
      await database.destroy();
    }
  });
});
