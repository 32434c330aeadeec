import { sql } from 'kysely';
import { type QueuedMail, queueMail } from './email-outbox.ts';
import type { Executor } from './one-time-tokens.ts';
import { executePrepared, prepareQuery, USER_ID_SENTINEL } from './prepared.ts';
import type { Db } from './schema.ts';
import { violatedUniqueConstraint } from './unique-violation.ts';
import { lockForSession } from './users.ts';

export interface TotpFactor {
  id: string;
  userId: number;
  status: 'pending' | 'active';
  secretSealed: string;
  lastUsedStep: number | undefined;
  createdAt: Date;
  confirmedAt: Date | undefined;
}

export interface NewMfaChallenge {
  tokenHash: string;
  userId: number;
  scope: string;
  passwordDigest: string;
  expiresAt: Date;
}

/** A challenge an attempt was counted against: whose it is and what its password leg granted. */
export interface MfaChallengeAttempt {
  userId: number;
  scope: string;
  passwordDigest: string;
}

/** A recovery code as stored: an argon2id PHC string, or the SHA-256 (base64url) of earlier versions. */
export interface StoredRecoveryCode {
  id: number;
  codeHash: string;
}

export interface MfaRepository {
  findTotpFactor(userId: number): Promise<TotpFactor | undefined>;
  /** True when the user has an active factor of any type. */
  hasActiveFactor(userId: number): Promise<boolean>;
  /**
   * Stores a pending TOTP factor in place of a pending one; false (nothing stored) when an active one exists or another
   * enrolment stored its factor first. With `sessionId`, only while that session may act (lockForSession: else
   * invalid_token), as for every change below made for a session.
   */
  insertPendingTotp(
    factor: Omit<TotpFactor, 'status' | 'lastUsedStep' | 'confirmedAt'>,
    sessionId?: string,
  ): Promise<boolean>;
  /**
   * Activates a pending factor with the step its confirming code matched, replaces the user's recovery codes and
   * queues the mails, in one transaction; false when the factor is no longer pending or the step is spent.
   */
  activateTotp(
    factorId: string,
    userId: number,
    step: number,
    recoveryCodeHashes: readonly string[],
    mails: readonly QueuedMail[],
    now: Date,
    sessionId?: string,
  ): Promise<boolean>;
  /** Claims a step of an active factor: true for exactly one caller per step, and never for an earlier step. */
  claimTotpStep(factorId: string, step: number): Promise<boolean>;
  /** The user's unused recovery codes, oldest first, at most `limit`. */
  unusedRecoveryCodes(userId: number, limit: number): Promise<StoredRecoveryCode[]>;
  /** Spends an unused recovery code of the user, by its id: true for exactly one caller. */
  claimRecoveryCodeById(userId: number, id: number, now: Date): Promise<boolean>;
  /** Gives back a code this caller claimed at `claimedAt` for something that then did not happen. */
  releaseRecoveryCode(userId: number, id: number, claimedAt: Date): Promise<void>;
  countRecoveryCodesLeft(userId: number): Promise<number>;
  /** Replaces every recovery code of the user and queues the mails, in one transaction. */
  replaceRecoveryCodes(
    userId: number,
    codeHashes: readonly string[],
    mails: readonly QueuedMail[],
    now: Date,
    sessionId?: string,
  ): Promise<void>;
  /**
   * Deletes every factor, recovery code and challenge of the user and queues the mails (only when a factor went, unless
   * `mailAnyway`); true when a factor went.
   */
  deleteSecondFactors(
    userId: number,
    mails: readonly QueuedMail[],
    now: Date,
    options?: { mailAnyway?: boolean; sessionId?: string },
  ): Promise<boolean>;
  /**
   * Stores the second leg of a login while the account is enabled; false when it is disabled (a login whose password
   * was checked before the disabling must not leave a challenge that outlives it).
   */
  insertMfaChallenge(challenge: NewMfaChallenge, now: Date): Promise<boolean>;
  /**
   * Counts an attempt against a challenge that is unspent, unexpired and below `maxAttempts`, in one statement;
   * undefined when there is no such challenge. Counting before the code is checked lets parallel attempts each take a
   * place.
   */
  countMfaChallengeAttempt(
    tokenHash: string,
    maxAttempts: number,
    now: Date,
  ): Promise<MfaChallengeAttempt | undefined>;
  /** Spends a challenge: true for exactly one caller. */
  consumeMfaChallenge(tokenHash: string, now: Date): Promise<boolean>;
  /** The user of a challenge that could still be redeemed, read without counting an attempt. */
  findMfaChallengeUser(tokenHash: string, maxAttempts: number, now: Date): Promise<number | undefined>;
  /** Every TOTP secret as stored (sealed), for a rotation of GATEHOUSE_SECRET to seal again. */
  findSealedTotpSecrets(): Promise<{ id: string; userId: number; secretSealed: string }[]>;
  /** Replaces a sealed TOTP secret if it is still `expected`; false when it changed meanwhile. */
  replaceSealedTotpSecret(id: string, expected: string, sealed: string): Promise<boolean>;
}

async function insertRecoveryCodes(
  executor: Executor,
  userId: number,
  codeHashes: readonly string[],
  nowMs: number,
) {
  await executor.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
  if (codeHashes.length === 0) return;
  await executor
    .insertInto('recovery_codes')
    .values(
      codeHashes.map((code_hash) => ({ user_id: userId, code_hash, created_at_ms: nowMs, used_at_ms: null })),
    )
    .execute();
}

async function queueMails(executor: Executor, mails: readonly QueuedMail[], nowMs: number) {
  for (const mail of mails) await queueMail(executor, mail, nowMs);
}

export function createMfaRepository(db: Db): MfaRepository {
  // Every password login asks it: prepared once, bound per request.
  const activeFactorOfUser = prepareQuery(
    db
      .selectFrom('mfa_factors')
      .select('id')
      .where('user_id', '=', USER_ID_SENTINEL[0])
      .where('status', '=', sql.lit('active')),
    USER_ID_SENTINEL,
  );

  return {
    async findTotpFactor(userId) {
      const row = await db
        .selectFrom('mfa_factors')
        .selectAll()
        .where('user_id', '=', userId)
        .where('type', '=', 'totp')
        .executeTakeFirst();
      if (!row) return undefined;
      return {
        id: row.id,
        userId: Number(row.user_id),
        status: row.status,
        secretSealed: row.secret_sealed,
        lastUsedStep: row.last_used_step === null ? undefined : Number(row.last_used_step),
        createdAt: new Date(Number(row.created_at_ms)),
        confirmedAt: row.confirmed_at_ms === null ? undefined : new Date(Number(row.confirmed_at_ms)),
      };
    },

    async hasActiveFactor(userId) {
      return (await executePrepared(db, activeFactorOfUser(userId))).rows.length > 0;
    },

    async insertPendingTotp(factor, sessionId) {
      try {
        return await db.transaction().execute(async (trx) => {
          if (sessionId !== undefined) await lockForSession(trx, factor.userId, sessionId);
          await trx
            .deleteFrom('mfa_factors')
            .where('user_id', '=', factor.userId)
            .where('type', '=', 'totp')
            .where('status', '=', 'pending')
            .execute();
          // The unique index on (user_id, type) refuses the insert while an active factor exists.
          await trx
            .insertInto('mfa_factors')
            .values({
              id: factor.id,
              user_id: factor.userId,
              type: 'totp',
              status: 'pending',
              secret_sealed: factor.secretSealed,
              last_used_step: null,
              created_at_ms: factor.createdAt.getTime(),
              confirmed_at_ms: null,
            })
            .execute();
          return true;
        });
      } catch (error) {
        if (violatedUniqueConstraint(error)) return false;
        throw error;
      }
    },

    async activateTotp(factorId, userId, step, recoveryCodeHashes, mails, now, sessionId) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        if (sessionId !== undefined) await lockForSession(trx, userId, sessionId);
        const activated = await trx
          .updateTable('mfa_factors')
          .set({ status: 'active', last_used_step: step, confirmed_at_ms: nowMs })
          .where('id', '=', factorId)
          .where('user_id', '=', userId)
          .where('status', '=', 'pending')
          .executeTakeFirst();
        if (Number(activated.numUpdatedRows) !== 1) return false;
        await insertRecoveryCodes(trx, userId, recoveryCodeHashes, nowMs);
        await queueMails(trx, mails, nowMs);
        return true;
      });
    },

    async claimTotpStep(factorId, step) {
      // RFC 6238 §5.2: one statement decides, so that parallel submissions of one code have a single winner.
      const claimed = await db
        .updateTable('mfa_factors')
        .set({ last_used_step: step })
        .where('id', '=', factorId)
        .where('status', '=', 'active')
        .where((eb) => eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', step)]))
        .executeTakeFirst();
      return Number(claimed.numUpdatedRows) === 1;
    },

    async unusedRecoveryCodes(userId, limit) {
      const rows = await db
        .selectFrom('recovery_codes')
        .select(['id', 'code_hash'])
        .where('user_id', '=', userId)
        .where('used_at_ms', 'is', null)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map((row) => ({ id: Number(row.id), codeHash: row.code_hash }));
    },

    async releaseRecoveryCode(userId, id, claimedAt) {
      await db
        .updateTable('recovery_codes')
        .set({ used_at_ms: null })
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .where('used_at_ms', '=', claimedAt.getTime())
        .execute();
    },

    async claimRecoveryCodeById(userId, id, now) {
      // One statement decides: of parallel uses of one code, only the first finds the row unused.
      const claimed = await db
        .updateTable('recovery_codes')
        .set({ used_at_ms: now.getTime() })
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .where('used_at_ms', 'is', null)
        .executeTakeFirst();
      return Number(claimed.numUpdatedRows) === 1;
    },

    async countRecoveryCodesLeft(userId) {
      const row = await db
        .selectFrom('recovery_codes')
        .select((eb) => eb.fn.countAll<number | string>().as('left'))
        .where('user_id', '=', userId)
        .where('used_at_ms', 'is', null)
        .executeTakeFirstOrThrow();
      return Number(row.left);
    },

    async replaceRecoveryCodes(userId, codeHashes, mails, now, sessionId) {
      const nowMs = now.getTime();
      await db.transaction().execute(async (trx) => {
        if (sessionId !== undefined) await lockForSession(trx, userId, sessionId);
        await insertRecoveryCodes(trx, userId, codeHashes, nowMs);
        await queueMails(trx, mails, nowMs);
      });
    },

    async deleteSecondFactors(userId, mails, now, options = {}) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        if (options.sessionId !== undefined) await lockForSession(trx, userId, options.sessionId);
        const deleted = await trx.deleteFrom('mfa_factors').where('user_id', '=', userId).executeTakeFirst();
        await trx.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
        await trx.deleteFrom('mfa_challenges').where('user_id', '=', userId).execute();
        const went = Number(deleted.numDeletedRows) > 0;
        if (went || options.mailAnyway) await queueMails(trx, mails, nowMs);
        return went;
      });
    },

    async insertMfaChallenge(challenge, now) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        // A write that changes nothing, to hold the user's row while the account is enabled: a disabling committed
        // first makes it match nothing, one still running makes it wait and then deletes this challenge with the rest.
        const enabled = await trx
          .updateTable('users')
          .set({ disabled_at_ms: null })
          .where('id', '=', challenge.userId)
          .where('disabled_at_ms', 'is', null)
          .executeTakeFirst();
        if (Number(enabled.numUpdatedRows) !== 1) return false;
        // Spent and expired challenges open nothing; dropping them here keeps a few rows per user without a pruning
        // job.
        await trx
          .deleteFrom('mfa_challenges')
          .where('user_id', '=', challenge.userId)
          .where('expires_at_ms', '<=', nowMs)
          .execute();
        await trx
          .insertInto('mfa_challenges')
          .values({
            token_hash: challenge.tokenHash,
            user_id: challenge.userId,
            scope: challenge.scope,
            password_digest: challenge.passwordDigest,
            created_at_ms: nowMs,
            expires_at_ms: challenge.expiresAt.getTime(),
            consumed_at_ms: null,
          })
          .execute();
        return true;
      });
    },

    async countMfaChallengeAttempt(tokenHash, maxAttempts, now) {
      const row = await db
        .updateTable('mfa_challenges')
        .set((eb) => ({ attempts: eb('attempts', '+', 1) }))
        .where('token_hash', '=', tokenHash)
        .where('consumed_at_ms', 'is', null)
        .where('expires_at_ms', '>', now.getTime())
        .where('attempts', '<', maxAttempts)
        .returning(['user_id', 'scope', 'password_digest'])
        .executeTakeFirst();
      return row && { userId: Number(row.user_id), scope: row.scope, passwordDigest: row.password_digest };
    },

    async consumeMfaChallenge(tokenHash, now) {
      const consumed = await db
        .updateTable('mfa_challenges')
        .set({ consumed_at_ms: now.getTime() })
        .where('token_hash', '=', tokenHash)
        .where('consumed_at_ms', 'is', null)
        .executeTakeFirst();
      return Number(consumed.numUpdatedRows) === 1;
    },

    async findMfaChallengeUser(tokenHash, maxAttempts, now) {
      const row = await db
        .selectFrom('mfa_challenges')
        .select('user_id')
        .where('token_hash', '=', tokenHash)
        .where('consumed_at_ms', 'is', null)
        .where('expires_at_ms', '>', now.getTime())
        .where('attempts', '<', maxAttempts)
        .executeTakeFirst();
      return row && Number(row.user_id);
    },

    async findSealedTotpSecrets() {
      const rows = await db.selectFrom('mfa_factors').select(['id', 'user_id', 'secret_sealed']).execute();
      return rows.map((row) => ({
        id: row.id,
        userId: Number(row.user_id),
        secretSealed: row.secret_sealed,
      }));
    },

    async replaceSealedTotpSecret(id, expected, sealed) {
      const result = await db
        .updateTable('mfa_factors')
        .set({ secret_sealed: sealed })
        .where('id', '=', id)
        .where('secret_sealed', '=', expected)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
  };
}
