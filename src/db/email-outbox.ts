import type { ExpressionBuilder, Kysely, Selectable, Transaction } from 'kysely';
import type { Database, Db, Dialect, EmailOutboxTable } from './schema.ts';

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

/** When a failed mail is tried again, and when the outbox stops trying (the row is kept, as `failed`). */
export const MAIL_RETRY = { firstRetryDelayMs: 5000, maxRetryDelayMs: 3600_000, maxAttempts: 10 } as const;

// Enough for the error's code, the server's status and its message, short enough that a chatty server cannot fill the
// table through it.
const MAX_ERROR_LENGTH = 500;

/** Returns how long to wait after the `failures`-th failed attempt: 5 s, doubling, at most an hour. */
export function retryDelayMs(failures: number): number {
  const doublings = Math.min(Math.max(failures - 1, 0), 30);
  return Math.min(MAIL_RETRY.firstRetryDelayMs * 2 ** doublings, MAIL_RETRY.maxRetryDelayMs);
}

export type MailStatus = 'queued' | 'sent' | 'failed';

/** An outbox row as operators see it; the payload is still sealed, and null once the mail was sent. */
export interface OutboxMail {
  id: number;
  userId: number | null;
  recipient: string;
  template: string;
  sealedPayload: string | null;
  createdAtMs: number;
  sendAfterMs: number;
  attempts: number;
  lastError: string | null;
  sentAtMs: number | null;
  status: MailStatus;
}

/** A mail one sender holds until `leaseUntilMs`: no other sender takes it before then. */
export interface ClaimedMail {
  id: number;
  recipient: string;
  template: string;
  sealedPayload: string;
  /** Failed attempts before this one. */
  attempts: number;
  createdAtMs: number;
  leaseUntilMs: number;
}

export interface FailureOutcome {
  givenUp: boolean;
  nextAttemptAtMs: number | undefined;
}

export interface EmailOutboxRepository {
  /**
   * Takes up to `limit` due mails, oldest first, leased to the caller until `nowMs + leaseMs`: long enough to outlast
   * every SMTP timeout of one send (outbound/smtp.ts caps each).
   */
  claimDueMails(nowMs: number, limit: number, leaseMs: number): Promise<ClaimedMail[]>;
  /**
   * Extends the caller's lease of the mail to `nowMs + leaseMs`, while it still holds it; the mail with its new lease,
   * or undefined when its lease has passed to another sender (or the mail is sent).
   */
  renewLease(mail: ClaimedMail, nowMs: number, leaseMs: number): Promise<ClaimedMail | undefined>;
  /** Records the mail as sent and wipes its payload: a sent link is not kept. */
  markMailSent(mail: ClaimedMail, nowMs: number): Promise<void>;
  /**
   * Counts a failed attempt and schedules the next one, or gives up (after MAIL_RETRY.maxAttempts, or at once when
   * `permanent`). Does nothing when the lease has passed to another sender meanwhile.
   */
  markMailFailed(
    mail: ClaimedMail,
    error: string,
    nowMs: number,
    options?: { permanent?: boolean },
  ): Promise<FailureOutcome>;
  /** Gives back claimed mails unsent (a sender stopping), due again at once for every sender. */
  releaseMails(mails: readonly ClaimedMail[]): Promise<void>;
  /** Mails newest first; `next` is the `beforeId` of the following page, undefined on the last one. */
  listMails(page: { limit: number; beforeId?: number }): Promise<{ mails: OutboxMail[]; next?: number }>;
  findMailById(id: number): Promise<OutboxMail | undefined>;
  /** Every payload still stored (mails not sent), for a rotation of GATEHOUSE_SECRET to seal again. */
  findSealedPayloads(): Promise<{ id: number; template: string; recipient: string; sealedPayload: string }[]>;
  /** Replaces a sealed payload if it is still `expected`; false when it changed (sent, wiped) meanwhile. */
  replaceSealedPayload(id: number, expected: string, sealed: string): Promise<boolean>;
  /** Deletes up to `limit` mails created before `beforeMs`, sent or not; how many it deleted. */
  deleteMailsCreatedBefore(beforeMs: number, limit: number): Promise<number>;
}

type OutboxRow = Selectable<EmailOutboxTable>;

const toOutboxMail = (row: OutboxRow): OutboxMail => {
  const attempts = Number(row.attempts);
  const sentAtMs = row.sent_at_ms === null ? null : Number(row.sent_at_ms);
  return {
    id: Number(row.id),
    userId: row.user_id === null ? null : Number(row.user_id),
    recipient: row.recipient,
    template: row.template,
    sealedPayload: row.payload,
    createdAtMs: Number(row.created_at_ms),
    sendAfterMs: Number(row.send_after_ms),
    attempts,
    lastError: row.last_error,
    sentAtMs,
    status: sentAtMs !== null ? 'sent' : attempts >= MAIL_RETRY.maxAttempts ? 'failed' : 'queued',
  };
};

export function createEmailOutboxRepository(db: Db, dialect: Dialect): EmailOutboxRepository {
  return {
    async claimDueMails(nowMs, limit, leaseMs) {
      const leaseUntilMs = nowMs + leaseMs;
      const isDue = (eb: ExpressionBuilder<Database, 'email_outbox'>) =>
        eb.and([
          eb('sent_at_ms', 'is', null),
          eb('attempts', '<', MAIL_RETRY.maxAttempts),
          eb('send_after_ms', '<=', nowMs),
          eb.or([eb('claimed_until_ms', 'is', null), eb('claimed_until_ms', '<=', nowMs)]),
        ]);
      // SQLite has one writer at a time, so the one statement is the whole claim. On PostgreSQL, a concurrent claim
      // skips the rows this one has locked instead of waiting for them. The due rows are a materialised CTE: as a
      // plain subquery of the UPDATE, PostgreSQL may run a LIMIT … SKIP LOCKED query more than once and claim more
      // than the limit. The conditions are checked again on the rows updated, in case one changed in between.
      const rows = await db
        .with(
          (cte) => cte('due').materialized(),
          (query) =>
            query
              .selectFrom('email_outbox')
              .select('id')
              .where(isDue)
              .orderBy('send_after_ms')
              .orderBy('id')
              .limit(limit)
              .$if(dialect === 'postgres', (locking) => locking.forUpdate().skipLocked()),
        )
        .updateTable('email_outbox')
        .set({ claimed_until_ms: leaseUntilMs })
        .where((eb) => eb.and([eb('id', 'in', eb.selectFrom('due').select('due.id')), isDue(eb)]))
        .returning(['id', 'recipient', 'template', 'payload', 'attempts', 'send_after_ms', 'created_at_ms'])
        .execute();
      return rows
        .filter((row) => row.payload !== null)
        .sort((a, b) => Number(a.send_after_ms) - Number(b.send_after_ms) || Number(a.id) - Number(b.id))
        .map((row) => ({
          id: Number(row.id),
          recipient: row.recipient,
          template: row.template,
          sealedPayload: row.payload as string,
          attempts: Number(row.attempts),
          createdAtMs: Number(row.created_at_ms),
          leaseUntilMs,
        }));
    },

    async renewLease(mail, nowMs, leaseMs) {
      const leaseUntilMs = nowMs + leaseMs;
      const result = await db
        .updateTable('email_outbox')
        .set({ claimed_until_ms: leaseUntilMs })
        .where('id', '=', mail.id)
        .where('sent_at_ms', 'is', null)
        .where('claimed_until_ms', '=', mail.leaseUntilMs)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1 ? { ...mail, leaseUntilMs } : undefined;
    },

    async markMailSent(mail, nowMs) {
      await db
        .updateTable('email_outbox')
        .set({ sent_at_ms: nowMs, payload: null, claimed_until_ms: null })
        .where('id', '=', mail.id)
        .where('sent_at_ms', 'is', null)
        .execute();
    },

    async markMailFailed(mail, error, nowMs, options = {}) {
      const attempts = mail.attempts + 1;
      const givenUp = options.permanent === true || attempts >= MAIL_RETRY.maxAttempts;
      const nextAttemptAtMs = givenUp ? undefined : nowMs + retryDelayMs(attempts);
      await db
        .updateTable('email_outbox')
        .set({
          // A permanent failure counts as the last attempt, so that the row reads as failed.
          attempts: givenUp ? Math.max(attempts, MAIL_RETRY.maxAttempts) : attempts,
          last_error: error.slice(0, MAX_ERROR_LENGTH),
          send_after_ms: nextAttemptAtMs ?? nowMs,
          claimed_until_ms: null,
        })
        .where('id', '=', mail.id)
        .where('sent_at_ms', 'is', null)
        .where('claimed_until_ms', '=', mail.leaseUntilMs)
        .execute();
      return { givenUp, nextAttemptAtMs };
    },

    async releaseMails(mails) {
      for (const mail of mails) {
        await db
          .updateTable('email_outbox')
          .set({ claimed_until_ms: null })
          .where('id', '=', mail.id)
          .where('claimed_until_ms', '=', mail.leaseUntilMs)
          .execute();
      }
    },

    async listMails({ limit, beforeId }) {
      const rows = await db
        .selectFrom('email_outbox')
        .selectAll()
        .$if(beforeId !== undefined, (query) => query.where('id', '<', beforeId as number))
        .orderBy('id', 'desc')
        .limit(limit + 1)
        .execute();
      const mails = rows.slice(0, limit).map(toOutboxMail);
      const next = rows.length > limit ? mails.at(-1)?.id : undefined;
      return next === undefined ? { mails } : { mails, next };
    },

    async findMailById(id) {
      const row = await db.selectFrom('email_outbox').selectAll().where('id', '=', id).executeTakeFirst();
      return row ? toOutboxMail(row) : undefined;
    },

    async deleteMailsCreatedBefore(beforeMs, limit) {
      // In bounded batches, as the audit trail's pruning: a first prune after a long pause must not hold SQLite's
      // write lock for long.
      const result = await db
        .deleteFrom('email_outbox')
        .where('id', 'in', (eb) =>
          eb.selectFrom('email_outbox').select('id').where('created_at_ms', '<', beforeMs).limit(limit),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    async findSealedPayloads() {
      const rows = await db
        .selectFrom('email_outbox')
        .select(['id', 'template', 'recipient', 'payload'])
        .where('payload', 'is not', null)
        .execute();
      return rows.map((row) => ({
        id: Number(row.id),
        template: row.template,
        recipient: row.recipient,
        sealedPayload: row.payload as string,
      }));
    },

    async replaceSealedPayload(id, expected, sealed) {
      const result = await db
        .updateTable('email_outbox')
        .set({ payload: sealed })
        .where('id', '=', id)
        .where('payload', '=', expected)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
  };
}
