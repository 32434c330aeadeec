import { canonicalEmail, sameAddress } from '../domain/email.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import { type QueuedMail, queueMail } from './email-outbox.ts';
import {
  consumeOneTimeToken,
  type Executor,
  findOneTimeTokenUser,
  insertTokenWithMails,
  type NewOneTimeToken,
  spendTokensOfUser,
} from './one-time-tokens.ts';
import type { Db } from './schema.ts';
import { revokeSessionsOfUser } from './sessions.ts';
import { violatedUniqueConstraint } from './unique-violation.ts';
import { toUser, userColumns } from './user-rows.ts';
import { forgetTrustedClients, lockUserRow } from './users.ts';

/** A verification that went through: the account as now stored, and the address it replaced, if it replaced one. */
export interface EmailVerified {
  outcome: 'verified';
  user: User;
  /** The former address when the verified one was the pending address; undefined when the email itself was proved. */
  previousEmail: string | undefined;
  endedSessions: number;
}

export type EmailVerification = EmailVerified | { outcome: 'invalid_token' };

export interface PasswordReset {
  user: User;
  endedSessions: number;
}

export interface EmailFlowsRepository {
  /** Stores a one-time token (voiding the user's older ones of its purpose) and queues its mails, in one transaction. */
  issueTokenWithMails(token: NewOneTimeToken, mails: readonly QueuedMail[], now: Date): Promise<void>;
  /**
   * Spends a verify_email token and, in the same transaction, marks its address verified (making a pending address
   * the email), ends every session of the user and queues `mailsOf(result)`. invalid_token when the token is bad,
   * spent, expired or mailed to an address that is neither the email nor the pending one; throws email_taken when
   * another account took the pending address meanwhile (and the token stays unspent).
   */
  verifyEmail(
    tokenHash: string,
    now: Date,
    mailsOf: (verified: EmailVerified) => readonly QueuedMail[],
  ): Promise<EmailVerification>;
  /**
   * Spends a reset_password token and, in the same transaction, sets the hash, marks the email verified, ends every
   * session and queues `mailsOf(user)`; undefined when the token is bad, spent, expired, or was mailed to an address
   * that is no longer the email.
   */
  resetPassword(
    tokenHash: string,
    passwordHash: string,
    now: Date,
    mailsOf: (user: User) => readonly QueuedMail[],
  ): Promise<PasswordReset | undefined>;
}

async function endEverySession(
  trx: Executor,
  userId: number,
  reason: string,
  nowMs: number,
): Promise<number> {
  const ended = await revokeSessionsOfUser(trx, userId, nowMs, reason);
  await forgetTrustedClients(trx, userId);
  return ended;
}

/** Spends the token after locking its user's row (lockUserRow: the order every such transaction takes). */
async function consumeLockingUser(trx: Executor, tokenHash: string, purpose: string, now: Date) {
  const userId = await findOneTimeTokenUser(trx, tokenHash, purpose);
  if (userId === undefined) return undefined;
  await lockUserRow(trx, userId);
  return consumeOneTimeToken(trx, tokenHash, purpose, now);
}

async function queueAll(trx: Executor, mails: readonly QueuedMail[], nowMs: number): Promise<void> {
  for (const mail of mails) await queueMail(trx, mail, nowMs);
}

export function createEmailFlowsRepository(db: Db): EmailFlowsRepository {
  return {
    issueTokenWithMails: (token, mails, now) =>
      db.transaction().execute(async (trx) => {
        await insertTokenWithMails(trx, token, mails, now);
      }),

    async verifyEmail(tokenHash, now, mailsOf) {
      const nowMs = now.getTime();
      try {
        return await db.transaction().execute(async (trx): Promise<EmailVerification> => {
          const owner = await consumeLockingUser(trx, tokenHash, 'verify_email', now);
          if (!owner) return { outcome: 'invalid_token' };
          const current = await trx
            .selectFrom('users')
            .select(['email', 'pending_email', 'disabled_at_ms'])
            .where('id', '=', owner.userId)
            .executeTakeFirst();
          // Shut to its user until enabled, as a reset link is: rolled back, so that the link is not spent meanwhile.
          if (current?.disabled_at_ms != null) throw new DisabledAccount();
          const provesEmail = current !== undefined && sameAddress(owner.email, current.email);
          const provesPending =
            current?.pending_email != null && sameAddress(owner.email, current.pending_email);
          // Spent all the same: a link for an address the account no longer has must not come back to life.
          if (!current || !(provesEmail || provesPending)) return { outcome: 'invalid_token' };
          const row = await trx
            .updateTable('users')
            .set(
              provesEmail
                ? { email_verified_at_ms: nowMs }
                : {
                    email: current.pending_email as string,
                    email_canonical: canonicalEmail(current.pending_email as string),
                    pending_email: null,
                    email_verified_at_ms: nowMs,
                    updated_at_ms: nowMs,
                  },
            )
            .where('id', '=', owner.userId)
            .returning(userColumns)
            .executeTakeFirstOrThrow();
          // Links mailed to the address left behind must stay dead, should the account ever come back to it.
          if (!provesEmail) await spendTokensOfUser(trx, owner.userId, nowMs);
          // Pre-account hijacking: whoever registered this address before its owner proved it loses every session.
          const endedSessions = await endEverySession(trx, owner.userId, 'email_verified', nowMs);
          const verified: EmailVerified = {
            outcome: 'verified',
            user: toUser(row),
            previousEmail: provesEmail ? undefined : current.email,
            endedSessions,
          };
          await queueAll(trx, mailsOf(verified), nowMs);
          return verified;
        });
      } catch (error) {
        if (error instanceof DisabledAccount) return { outcome: 'invalid_token' };
        if (violatedUniqueConstraint(error)?.includes('email')) {
          throw new AppError('email_taken', 'Email already registered', { cause: error });
        }
        throw error;
      }
    },

    async resetPassword(tokenHash, passwordHash, now, mailsOf) {
      try {
        return await db.transaction().execute(async (trx) => {
          const nowMs = now.getTime();
          const owner = await consumeLockingUser(trx, tokenHash, 'reset_password', now);
          if (!owner) return undefined;
          // Disabled while the new password was hashed (found from outside: the reset then landed after the disabling).
          const account = await trx
            .selectFrom('users')
            .select('disabled_at_ms')
            .where('id', '=', owner.userId)
            .executeTakeFirst();
          if (account?.disabled_at_ms != null) throw new DisabledAccount();
          const row = await trx
            .updateTable('users')
            .set((eb) => ({
              password_hash: passwordHash,
              // The reset proved the address: reading the mail was the only way in.
              email_verified_at_ms: eb.fn.coalesce('email_verified_at_ms', eb.val(nowMs)),
              pending_email: null,
              updated_at_ms: nowMs,
            }))
            .where('id', '=', owner.userId)
            .where('email_canonical', '=', canonicalEmail(owner.email))
            .returning(userColumns)
            .executeTakeFirst();
          if (!row) return undefined;
          // As cancelEmailChange does: a change asked for with the credentials this reset replaces must not complete.
          await spendTokensOfUser(trx, owner.userId, nowMs);
          const endedSessions = await endEverySession(trx, owner.userId, 'password_reset', nowMs);
          const user = toUser(row);
          await queueAll(trx, mailsOf(user), nowMs);
          return { user, endedSessions };
        });
      } catch (error) {
        if (error instanceof DisabledAccount) return undefined;
        throw error;
      }
    },
  };
}

/** Rolls back the transaction of a link whose account is disabled. */
class DisabledAccount extends Error {}
