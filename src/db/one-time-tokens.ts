import { type ExpressionBuilder, type Kysely, sql, type Transaction } from 'kysely';
import { canonicalEmail, sameAddress } from '../domain/email.ts';
import { type QueuedMail, queueMail } from './email-outbox.ts';
import type { Database, Db } from './schema.ts';

/** What may run a repository statement: the database, or a transaction the statement joins. */
export type Executor = Kysely<Database> | Transaction<Database>;

export interface NewOneTimeToken {
  userId: number;
  purpose: string;
  /** The address the token is mailed to: it proves that address and no other. Stored in its canonical form. */
  email: string;
  tokenHash: string;
  expiresAt: Date;
}

/** Whose token it was, and the address it was mailed to. */
export interface OneTimeTokenOwner {
  userId: number;
  email: string;
}

export interface OneTimeTokensRepository {
  /** The user a token of the purpose was issued to, whether or not it could still be spent. */
  findOneTimeTokenUser(tokenHash: string, purpose: string): Promise<number | undefined>;
  /**
   * The owner of a password reset token that could be spent now, without spending it. A live token mailed to an
   * address the account has since left is spent instead (undefined): it proves nothing, and must not come back to
   * life should the account return to that address.
   */
  findLiveResetToken(tokenHash: string, now: Date): Promise<OneTimeTokenOwner | undefined>;
}

/**
 * Stores a token inside the caller's transaction; the user's older tokens of the purpose for the same address stop
 * working. Those for another address stay: a link for the current address and one for a pending address live side by
 * side, and the verification decides which address still counts.
 */
export async function insertOneTimeToken(
  executor: Executor,
  token: NewOneTimeToken,
  now: Date,
): Promise<void> {
  const nowMs = now.getTime();
  await executor
    .updateTable('one_time_tokens')
    .set({ consumed_at_ms: nowMs })
    .where('user_id', '=', token.userId)
    .where('purpose', '=', token.purpose)
    .where((eb) => isAddress(eb, canonicalEmail(token.email)))
    .where('consumed_at_ms', 'is', null)
    .execute();
  // Expired rows open nothing; dropping them here keeps a few rows per user without a pruning job.
  await executor
    .deleteFrom('one_time_tokens')
    .where('user_id', '=', token.userId)
    .where('expires_at_ms', '<=', nowMs)
    .execute();
  await executor
    .insertInto('one_time_tokens')
    .values({
      user_id: token.userId,
      purpose: token.purpose,
      email: canonicalEmail(token.email),
      token_hash: token.tokenHash,
      created_at_ms: nowMs,
      expires_at_ms: token.expiresAt.getTime(),
      consumed_at_ms: null,
    })
    .execute();
}

/**
 * Whether a token's address is this canonical one. Tokens are stored with the canonical address; those stored before
 * (addresses were ASCII then) with the address as written, which lower() folds to its canonical form on both databases.
 */
const isAddress = (eb: ExpressionBuilder<Database, 'one_time_tokens'>, emailCanonical: string) =>
  eb.or([eb('email', '=', emailCanonical), eb(sql<string>`lower(email)`, '=', emailCanonical)]);

/**
 * Spends every unconsumed token of the user inside the caller's transaction: no link mailed before works any more.
 * With `except`, only those of its purpose mailed to another address than `emailCanonical`.
 */
export async function spendTokensOfUser(
  executor: Executor,
  userId: number,
  nowMs: number,
  except?: { purpose: string; emailCanonical: string },
): Promise<void> {
  await executor
    .updateTable('one_time_tokens')
    .set({ consumed_at_ms: nowMs })
    .where('user_id', '=', userId)
    .where('consumed_at_ms', 'is', null)
    .$if(except !== undefined, (query) =>
      query
        .where('purpose', '=', except!.purpose)
        .where((eb) => eb.not(isAddress(eb, except!.emailCanonical))),
    )
    .execute();
}

/** The user a token of the purpose was issued to, whatever its state: whose row to lock before spending it. */
export async function findOneTimeTokenUser(
  executor: Executor,
  tokenHash: string,
  purpose: string,
): Promise<number | undefined> {
  const row = await executor
    .selectFrom('one_time_tokens')
    .select('user_id')
    .where('token_hash', '=', tokenHash)
    .where('purpose', '=', purpose)
    .executeTakeFirst();
  return row ? Number(row.user_id) : undefined;
}

/** Stores a token (insertOneTimeToken) and queues the mails that carry it, in the caller's transaction. */
export async function insertTokenWithMails(
  executor: Executor,
  token: NewOneTimeToken,
  mails: readonly QueuedMail[],
  now: Date,
): Promise<void> {
  await insertOneTimeToken(executor, token, now);
  for (const mail of mails) await queueMail(executor, mail, now.getTime());
}

/**
 * Spends a token in one statement: of parallel callers presenting it, the database lets exactly one match the
 * unconsumed row. Inside the caller's transaction, so that a refused change leaves the token unspent.
 */
export async function consumeOneTimeToken(
  executor: Executor,
  tokenHash: string,
  purpose: string,
  now: Date,
): Promise<OneTimeTokenOwner | undefined> {
  const nowMs = now.getTime();
  const row = await executor
    .updateTable('one_time_tokens')
    .set({ consumed_at_ms: nowMs })
    .where('token_hash', '=', tokenHash)
    .where('purpose', '=', purpose)
    .where('consumed_at_ms', 'is', null)
    .where('expires_at_ms', '>', nowMs)
    .returning(['user_id', 'email'])
    .executeTakeFirst();
  return row ? { userId: Number(row.user_id), email: row.email } : undefined;
}

export function createOneTimeTokensRepository(db: Db): OneTimeTokensRepository {
  return {
    findOneTimeTokenUser: (tokenHash, purpose) => findOneTimeTokenUser(db, tokenHash, purpose),

    async findLiveResetToken(tokenHash, now) {
      const row = await db
        .selectFrom('one_time_tokens')
        .innerJoin('users', 'users.id', 'one_time_tokens.user_id')
        .select(['one_time_tokens.user_id', 'one_time_tokens.email', 'users.email as current_email'])
        .where('one_time_tokens.token_hash', '=', tokenHash)
        .where('one_time_tokens.purpose', '=', 'reset_password')
        .where('one_time_tokens.consumed_at_ms', 'is', null)
        .where('one_time_tokens.expires_at_ms', '>', now.getTime())
        .executeTakeFirst();
      if (!row) return undefined;
      if (!sameAddress(row.email, row.current_email)) {
        await consumeOneTimeToken(db, tokenHash, 'reset_password', now);
        return undefined;
      }
      return { userId: Number(row.user_id), email: row.email };
    },
  };
}
