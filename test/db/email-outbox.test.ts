import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createEmailOutboxRepository,
  type EmailOutboxRepository,
  MAIL_RETRY,
  queueMail,
  retryDelayMs,
} from '../../src/db/email-outbox.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createOutboxRetention } from '../../src/services/mail.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const T0 = Date.UTC(2026, 11, 6, 9, 0, 0);
const DAY_MS = 86_400_000;
const LEASE_MS = 120_000;

describe('retryDelayMs', () => {
  it('waits 5 s after the first failure, doubling up to an hour', () => {
    expect([1, 2, 3, 4, 5].map(retryDelayMs)).toEqual([5000, 10_000, 20_000, 40_000, 80_000]);
    expect(retryDelayMs(11)).toBe(3600_000);
    expect(retryDelayMs(40)).toBe(3600_000);
  });
});

describe.each(dialects)('email outbox on %s', (dialect) => {
  let database: TestDatabase;
  let outbox: EmailOutboxRepository;
  let userId: number;
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    outbox = createEmailOutboxRepository(database.db, database.dialect);
    userId = (
      await createUsersRepository(database.db).insertUserWithConversation(
        newUser('Olive'),
        'hi',
        new Date(T0),
      )
    ).id;
  });
  afterAll(async () => {
    await database.destroy();
  });
  beforeEach(async () => {
    await database.db.deleteFrom('email_outbox').execute();
  });

  const queue = (recipient: string, atMs = T0, template = 'verify_email') =>
    queueMail(database.db, { userId, recipient, template, sealedPayload: `sealed:${recipient}` }, atMs);
  const row = (id: number) =>
    database.db.selectFrom('email_outbox').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  it("removes a deleted user's mails, queued or sent, and only theirs; a refused deletion removes none", async () => {
    const users = createUsersRepository(database.db);
    const leaving = newUser('Leaving');
    const leavingId = (await users.insertUserWithConversation(leaving, 'hi', new Date(T0))).id;
    const mailOf = (id: number, recipient: string, atMs: number) =>
      queueMail(
        database.db,
        { userId: id, recipient, template: 'password_reset', sealedPayload: 'sealed' },
        atMs,
      );
    await mailOf(leavingId, 'sent@example.com', T0);
    const [sent] = await outbox.claimDueMails(T0, 10, LEASE_MS);
    await outbox.markMailSent(sent!, T0 + 1);
    await mailOf(leavingId, 'queued@example.com', T0 + 60_000);
    await mailOf(userId, 'olive@example.com', T0 + 60_000);
    const recipients = async () =>
      (await database.db.selectFrom('email_outbox').select('recipient').orderBy('id').execute()).map(
        (row) => row.recipient,
      );

    expect(await users.deleteUser(leavingId, 'not the stored hash')).toBe(false);
    expect(await recipients()).toEqual(['sent@example.com', 'queued@example.com', 'olive@example.com']);
    expect(await users.deleteUser(leavingId, leaving.passwordHash)).toBe(true);
    expect(await recipients()).toEqual(['olive@example.com']);
  });

  it('forgets the mails created before the retention, whatever became of them, in batches; the rest stay', async () => {
    const clock = createTestClock(new Date(T0 + 91 * DAY_MS));
    const retention = createOutboxRetention({ outbox, clock, retentionDays: 90 });
    for (let index = 0; index < 5; index += 1) await queue(`old${index}@example.com`, T0 + index);
    const [sent] = await outbox.claimDueMails(T0 + 10, 1, LEASE_MS);
    await outbox.markMailSent(sent!, T0 + 20);
    await queue('recent@example.com', T0 + 2 * DAY_MS);
    expect(await outbox.deleteMailsCreatedBefore(T0 + DAY_MS, 2)).toBe(2);
    expect(await retention.pruneOldMails(2)).toBe(3);
    const left = await database.db.selectFrom('email_outbox').select('recipient').execute();
    expect(left.map((mail) => mail.recipient)).toEqual(['recent@example.com']);
    expect(await retention.pruneOldMails()).toBe(0);
  });

  it('claims due mails oldest first with a lease, and no other claim takes them while it lasts', async () => {
    await queue('a@example.com', T0);
    await queue('b@example.com', T0 + 1);
    await queue('later@example.com', T0 + 60_000);
    const claimed = await outbox.claimDueMails(T0 + 10, 10, LEASE_MS);
    expect(claimed.map((mail) => mail.recipient)).toEqual(['a@example.com', 'b@example.com']);
    expect(claimed[0]).toMatchObject({
      template: 'verify_email',
      sealedPayload: 'sealed:a@example.com',
      attempts: 0,
      leaseUntilMs: T0 + 10 + LEASE_MS,
    });
    expect(Number((await row(claimed[0]!.id)).claimed_until_ms)).toBe(T0 + 10 + LEASE_MS);
    expect(await outbox.claimDueMails(T0 + 20, 10, LEASE_MS)).toEqual([]);
    // Past the lease (a sender that died mid-send), the mails are due again.
    const reclaimed = await outbox.claimDueMails(T0 + 10 + LEASE_MS, 10, LEASE_MS);
    expect(reclaimed.map((mail) => mail.recipient)).toEqual([
      'a@example.com',
      'b@example.com',
      'later@example.com',
    ]);
  });

  it('claims at most the limit', async () => {
    for (let i = 0; i < 5; i += 1) await queue(`m${i}@example.com`);
    expect(await outbox.claimDueMails(T0, 3, LEASE_MS)).toHaveLength(3);
    expect(await outbox.claimDueMails(T0, 3, LEASE_MS)).toHaveLength(2);
  });

  it('gives each of many parallel claims distinct mails: no mail is claimed twice', async () => {
    for (let i = 0; i < 30; i += 1) await queue(`p${i}@example.com`);
    const claims = await Promise.all(Array.from({ length: 8 }, () => outbox.claimDueMails(T0, 5, LEASE_MS)));
    const ids = claims.flat().map((mail) => mail.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.length).toBe(30);
  });

  it('marks a mail sent: sent_at_ms set, the payload wiped, never claimed again', async () => {
    await queue('sent@example.com');
    const [mail] = await outbox.claimDueMails(T0, 10, LEASE_MS);
    await outbox.markMailSent(mail!, T0 + 500);
    const stored = await row(mail!.id);
    expect(Number(stored.sent_at_ms)).toBe(T0 + 500);
    expect(stored.payload).toBeNull();
    expect(stored.claimed_until_ms).toBeNull();
    expect(await outbox.claimDueMails(T0 + 10 * LEASE_MS, 10, LEASE_MS)).toEqual([]);
    expect(await outbox.findMailById(mail!.id)).toMatchObject({ status: 'sent', sealedPayload: null });
  });

  it('marks a failure: attempts + 1, the error kept (truncated), the next attempt pushed back', async () => {
    await queue('fail@example.com');
    const [first] = await outbox.claimDueMails(T0, 10, LEASE_MS);
    const outcome = await outbox.markMailFailed(first!, `connect ECONNREFUSED ${'x'.repeat(2000)}`, T0 + 100);
    expect(outcome).toEqual({ givenUp: false, nextAttemptAtMs: T0 + 100 + 5000 });
    const stored = await row(first!.id);
    expect(stored.attempts).toBe(1);
    expect(stored.last_error?.startsWith('connect ECONNREFUSED')).toBe(true);
    expect(stored.last_error?.length).toBeLessThanOrEqual(500);
    expect(stored.claimed_until_ms).toBeNull();
    expect(stored.payload).toBe('sealed:fail@example.com');
    expect(await outbox.claimDueMails(T0 + 100 + 4999, 10, LEASE_MS)).toEqual([]);
    const [second] = await outbox.claimDueMails(T0 + 100 + 5000, 10, LEASE_MS);
    expect(second).toMatchObject({ id: first!.id, attempts: 1 });
    expect(await outbox.markMailFailed(second!, 'again', T0 + 6000)).toEqual({
      givenUp: false,
      nextAttemptAtMs: T0 + 6000 + 10_000,
    });
    expect(await outbox.findMailById(first!.id)).toMatchObject({
      status: 'queued',
      attempts: 2,
      lastError: 'again',
    });
  });

  it(`gives up after ${MAIL_RETRY.maxAttempts} attempts and keeps the row`, async () => {
    await queue('never@example.com');
    let now = T0;
    let outcome: Awaited<ReturnType<EmailOutboxRepository['markMailFailed']>> | undefined;
    for (let attempt = 1; attempt <= MAIL_RETRY.maxAttempts; attempt += 1) {
      const [mail] = await outbox.claimDueMails(now, 10, LEASE_MS);
      expect(mail?.attempts).toBe(attempt - 1);
      outcome = await outbox.markMailFailed(mail!, `failure ${attempt}`, now);
      now += MAIL_RETRY.maxRetryDelayMs;
    }
    expect(outcome).toEqual({ givenUp: true, nextAttemptAtMs: undefined });
    expect(await outbox.claimDueMails(now + 365 * 86400_000, 10, LEASE_MS)).toEqual([]);
    const [kept] = (await outbox.listMails({ limit: 10 })).mails;
    expect(kept).toMatchObject({
      status: 'failed',
      attempts: MAIL_RETRY.maxAttempts,
      lastError: `failure ${MAIL_RETRY.maxAttempts}`,
    });
  });

  it('gives up at once on a failure that no retry can mend', async () => {
    await queue('unreadable@example.com');
    const [mail] = await outbox.claimDueMails(T0, 10, LEASE_MS);
    expect(await outbox.markMailFailed(mail!, 'payload cannot be opened', T0, { permanent: true })).toEqual({
      givenUp: true,
      nextAttemptAtMs: undefined,
    });
    expect(await outbox.findMailById(mail!.id)).toMatchObject({
      status: 'failed',
      attempts: MAIL_RETRY.maxAttempts,
      lastError: 'payload cannot be opened',
    });
    expect(await outbox.claimDueMails(T0 + 365 * 86400_000, 10, LEASE_MS)).toEqual([]);
  });

  it('ignores the failure of a sender whose lease another sender has taken over', async () => {
    await queue('slow@example.com');
    const [stale] = await outbox.claimDueMails(T0, 10, LEASE_MS);
    const [current] = await outbox.claimDueMails(T0 + LEASE_MS, 10, LEASE_MS);
    await outbox.markMailFailed(stale!, 'late timeout', T0 + LEASE_MS + 1);
    const stored = await row(current!.id);
    expect(stored.attempts).toBe(0);
    expect(Number(stored.claimed_until_ms)).toBe(current!.leaseUntilMs);
  });

  it('renews a lease while it is the caller’s, and not once another sender has taken the mail over', async () => {
    await queue('renewed@example.com');
    const [claimed] = await outbox.claimDueMails(T0, 10, LEASE_MS);
    const renewed = await outbox.renewLease(claimed!, T0 + 100_000, LEASE_MS);
    expect(renewed?.leaseUntilMs).toBe(T0 + 100_000 + LEASE_MS);
    expect(await outbox.claimDueMails(T0 + LEASE_MS + 1, 10, LEASE_MS)).toEqual([]);
    // The old lease is no longer the mail's: a sender still holding it cannot renew it.
    expect(await outbox.renewLease(claimed!, T0 + 100_001, LEASE_MS)).toBeUndefined();
    const [takenOver] = await outbox.claimDueMails(T0 + 100_000 + LEASE_MS, 10, LEASE_MS);
    expect(await outbox.renewLease(renewed!, T0 + 100_000 + LEASE_MS + 1, LEASE_MS)).toBeUndefined();
    expect(Number((await row(takenOver!.id)).claimed_until_ms)).toBe(takenOver!.leaseUntilMs);
  });

  it('releases claimed mails unsent: due again at once, unless another sender holds them by now', async () => {
    await queue('released@example.com');
    await queue('taken-over@example.com', T0 + 1);
    const claimed = await outbox.claimDueMails(T0, 10, LEASE_MS);
    const [, takenOver] = await outbox.claimDueMails(T0 + LEASE_MS, 10, LEASE_MS);
    expect(takenOver?.recipient).toBe('taken-over@example.com');
    await outbox.releaseMails(claimed);
    const again = await outbox.claimDueMails(T0 + LEASE_MS + 1, 10, LEASE_MS);
    expect(again).toEqual([]);
    await outbox.releaseMails([takenOver!]);
    expect(
      (await outbox.claimDueMails(T0 + LEASE_MS + 2, 10, LEASE_MS)).map((mail) => mail.recipient),
    ).toEqual(['taken-over@example.com']);
  });

  it('lists mails newest first, a page at a time, and finds one by id', async () => {
    for (let i = 0; i < 5; i += 1) await queue(`l${i}@example.com`, T0 + i);
    const first = await outbox.listMails({ limit: 2 });
    expect(first.mails.map((mail) => mail.recipient)).toEqual(['l4@example.com', 'l3@example.com']);
    expect(first.next).toBeDefined();
    const second = await outbox.listMails({ limit: 2, beforeId: first.next! });
    expect(second.mails.map((mail) => mail.recipient)).toEqual(['l2@example.com', 'l1@example.com']);
    const last = await outbox.listMails({ limit: 2, beforeId: second.next! });
    expect(last.mails.map((mail) => mail.recipient)).toEqual(['l0@example.com']);
    expect(last.next).toBeUndefined();
    const found = await outbox.findMailById(first.mails[0]!.id);
    expect(found).toEqual({
      id: first.mails[0]!.id,
      userId,
      recipient: 'l4@example.com',
      template: 'verify_email',
      sealedPayload: 'sealed:l4@example.com',
      createdAtMs: T0 + 4,
      sendAfterMs: T0 + 4,
      attempts: 0,
      lastError: null,
      sentAtMs: null,
      status: 'queued',
    });
    expect(await outbox.findMailById(999_999)).toBeUndefined();
  });
});
