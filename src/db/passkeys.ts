import { type Selectable, sql } from 'kysely';
import { type QueuedMail, queueMail } from './email-outbox.ts';
import type { Executor } from './one-time-tokens.ts';
import { executePrepared, prepareQuery, USER_ID_SENTINEL } from './prepared.ts';
import type { Db, WebauthnChallengesTable, WebauthnCredentialsTable } from './schema.ts';
import { violatedUniqueConstraint } from './unique-violation.ts';
import { lockActingSession, lockForSession } from './users.ts';

export type ChallengePurpose = WebauthnChallengesTable['purpose'];

export interface StoredPasskey {
  id: string;
  userId: number;
  credentialId: string;
  publicKey: string;
  signCount: number;
  transports: string[];
  aaguid: string;
  backupEligible: boolean;
  backupState: boolean;
  uvInitialized: boolean;
  suspect: boolean;
  name: string;
  createdAt: Date;
  lastUsedAt: Date | undefined;
}

export type NewPasskey = Omit<StoredPasskey, 'suspect' | 'lastUsedAt' | 'createdAt'>;

export interface NewChallenge {
  id: string;
  purpose: ChallengePurpose;
  userId: number | undefined;
  challenge: string;
  expiresAt: Date;
}

/** What registering a passkey came to: stored, refused at the per-user cap, or a credential id already registered. */
export type PasskeyInsertion = 'inserted' | 'limit' | 'duplicate' | 'user_gone';

/** A counter-checked use of a passkey: the counter it was read with, and what the assertion reported. */
export interface PasskeyUse {
  id: string;
  storedCount: number;
  newCount: number;
  backupState: boolean;
  userVerified: boolean;
}

export interface PasskeysRepository {
  /** The user's handle, stored first as `candidate` if the user has none; undefined for an unknown user. */
  ensureUserHandle(userId: number, candidate: string): Promise<string | undefined>;
  findUserHandle(userId: number): Promise<string | undefined>;
  listPasskeys(userId: number): Promise<StoredPasskey[]>;
  countPasskeys(userId: number): Promise<number>;
  /** The passkeys that are not suspect: those that can still sign in. */
  countUsablePasskeys(userId: number): Promise<number>;
  findPasskey(userId: number, id: string): Promise<StoredPasskey | undefined>;
  findByCredentialId(credentialId: string): Promise<StoredPasskey | undefined>;
  insertChallenge(challenge: NewChallenge, now: Date): Promise<void>;
  /**
   * Spends an unexpired challenge of this purpose (and this user, or of no user when `userId` is undefined) in one
   * statement; its value, or undefined for every other caller.
   */
  consumeChallenge(
    id: string,
    purpose: ChallengePurpose,
    userId: number | undefined,
    now: Date,
  ): Promise<string | undefined>;
  /**
   * Stores a passkey while the user has fewer than `max`, and queues the mails, in one transaction that holds the
   * user's row: parallel registrations cannot pass the cap together. With `sessionId`, only while that session may act
   * (lockActingSession); 'user_gone' otherwise.
   */
  insertPasskey(
    passkey: NewPasskey,
    max: number,
    mails: readonly QueuedMail[],
    now: Date,
    sessionId?: string,
  ): Promise<PasskeyInsertion>;
  renamePasskey(userId: number, id: string, name: string): Promise<StoredPasskey | undefined>;
  /**
   * Deletes one of the user's passkeys and queues the mails; false (nothing queued) when it was not theirs. With
   * `sessionId`, only while that session may act (lockForSession: else invalid_token).
   */
  deletePasskey(
    userId: number,
    id: string,
    mails: readonly QueuedMail[],
    now: Date,
    sessionId?: string,
  ): Promise<boolean>;
  /** Deletes every passkey and challenge of the user and queues the mails when one went; returns how many went. */
  deleteAllPasskeys(userId: number, mails: readonly QueuedMail[], now: Date): Promise<number>;
  /**
   * Records an accepted assertion only while the stored counter is still the one it was checked against and the
   * passkey is not suspect: of two assertions racing with one counter, one lands.
   */
  recordUse(use: PasskeyUse, now: Date): Promise<boolean>;
  /** Marks a passkey suspect (its counter went backwards) and queues the mails; false when it already was. */
  markSuspect(id: string, mails: readonly QueuedMail[], now: Date): Promise<boolean>;
}

const flag = (value: boolean) => (value ? 1 : 0);

function toPasskey(row: Selectable<WebauthnCredentialsTable>): StoredPasskey {
  return {
    id: row.id,
    userId: Number(row.user_id),
    credentialId: row.credential_id,
    publicKey: row.public_key,
    signCount: Number(row.sign_count),
    transports: row.transports === '' ? [] : row.transports.split(' '),
    aaguid: row.aaguid,
    backupEligible: Number(row.backup_eligible) === 1,
    backupState: Number(row.backup_state) === 1,
    uvInitialized: Number(row.uv_initialized) === 1,
    suspect: Number(row.suspect) === 1,
    name: row.name,
    createdAt: new Date(Number(row.created_at_ms)),
    lastUsedAt: row.last_used_at_ms === null ? undefined : new Date(Number(row.last_used_at_ms)),
  };
}

async function queueMails(executor: Executor, mails: readonly QueuedMail[], nowMs: number) {
  for (const mail of mails) await queueMail(executor, mail, nowMs);
}

export function createPasskeysRepository(db: Db): PasskeysRepository {
  // Every password login asks it: prepared once, bound per request.
  const usablePasskeysOfUser = prepareQuery(
    db
      .selectFrom('webauthn_credentials')
      .select((eb) => eb.fn.countAll<number | string>().as('count'))
      .where('user_id', '=', USER_ID_SENTINEL[0])
      .where('suspect', '=', sql.lit(0)),
    USER_ID_SENTINEL,
  );

  const findUserHandle = async (userId: number) => {
    const row = await db
      .selectFrom('users')
      .select('webauthn_user_handle')
      .where('id', '=', userId)
      .executeTakeFirst();
    return row?.webauthn_user_handle ?? undefined;
  };

  return {
    async ensureUserHandle(userId, candidate) {
      await db
        .updateTable('users')
        .set({ webauthn_user_handle: candidate })
        .where('id', '=', userId)
        .where('webauthn_user_handle', 'is', null)
        .execute();
      return findUserHandle(userId);
    },

    findUserHandle,

    async listPasskeys(userId) {
      const rows = await db
        .selectFrom('webauthn_credentials')
        .selectAll()
        .where('user_id', '=', userId)
        .orderBy('created_at_ms')
        .orderBy('id')
        .execute();
      return rows.map(toPasskey);
    },

    async countPasskeys(userId) {
      const row = await db
        .selectFrom('webauthn_credentials')
        .select((eb) => eb.fn.countAll<number | string>().as('count'))
        .where('user_id', '=', userId)
        .executeTakeFirstOrThrow();
      return Number(row.count);
    },

    async countUsablePasskeys(userId) {
      const [row] = (await executePrepared(db, usablePasskeysOfUser(userId))).rows;
      return Number(row!.count);
    },

    async findPasskey(userId, id) {
      const row = await db
        .selectFrom('webauthn_credentials')
        .selectAll()
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .executeTakeFirst();
      return row && toPasskey(row);
    },

    async findByCredentialId(credentialId) {
      const row = await db
        .selectFrom('webauthn_credentials')
        .selectAll()
        .where('credential_id', '=', credentialId)
        .executeTakeFirst();
      return row && toPasskey(row);
    },

    async insertChallenge(challenge, now) {
      const nowMs = now.getTime();
      // Expired challenges open nothing; dropping them here keeps the table small without a pruning job.
      await db.deleteFrom('webauthn_challenges').where('expires_at_ms', '<=', nowMs).execute();
      await db
        .insertInto('webauthn_challenges')
        .values({
          id: challenge.id,
          purpose: challenge.purpose,
          user_id: challenge.userId ?? null,
          challenge: challenge.challenge,
          created_at_ms: nowMs,
          expires_at_ms: challenge.expiresAt.getTime(),
          consumed_at_ms: null,
        })
        .execute();
    },

    async consumeChallenge(id, purpose, userId, now) {
      const nowMs = now.getTime();
      const row = await db
        .updateTable('webauthn_challenges')
        .set({ consumed_at_ms: nowMs })
        .where('id', '=', id)
        .where('purpose', '=', purpose)
        .where('user_id', userId === undefined ? 'is' : '=', userId ?? null)
        .where('consumed_at_ms', 'is', null)
        .where('expires_at_ms', '>', nowMs)
        .returning('challenge')
        .executeTakeFirst();
      return row?.challenge;
    },

    async insertPasskey(passkey, max, mails, now, sessionId) {
      const nowMs = now.getTime();
      try {
        return await db.transaction().execute(async (trx) => {
          // A write that locks the user's row (PostgreSQL) or takes the write lock (SQLite) before the count: a
          // parallel registration waits here and then counts this one.
          // The account was deleted, disabled or its session ended since the request read it.
          if (sessionId !== undefined) {
            if (!(await lockActingSession(trx, passkey.userId, sessionId))) return 'user_gone';
          } else {
            const held = await trx
              .updateTable('users')
              .set((eb) => ({ webauthn_user_handle: eb.ref('webauthn_user_handle') }))
              .where('id', '=', passkey.userId)
              .executeTakeFirst();
            if (Number(held.numUpdatedRows) !== 1) return 'user_gone';
          }
          const { count } = await trx
            .selectFrom('webauthn_credentials')
            .select((eb) => eb.fn.countAll<number | string>().as('count'))
            .where('user_id', '=', passkey.userId)
            .executeTakeFirstOrThrow();
          if (Number(count) >= max) return 'limit';
          await trx
            .insertInto('webauthn_credentials')
            .values({
              id: passkey.id,
              user_id: passkey.userId,
              credential_id: passkey.credentialId,
              public_key: passkey.publicKey,
              sign_count: passkey.signCount,
              transports: passkey.transports.join(' '),
              aaguid: passkey.aaguid,
              backup_eligible: flag(passkey.backupEligible),
              backup_state: flag(passkey.backupState),
              uv_initialized: flag(passkey.uvInitialized),
              suspect: 0,
              name: passkey.name,
              created_at_ms: nowMs,
              last_used_at_ms: null,
            })
            .execute();
          await queueMails(trx, mails, nowMs);
          return 'inserted';
        });
      } catch (error) {
        if (violatedUniqueConstraint(error)) return 'duplicate';
        throw error;
      }
    },

    async renamePasskey(userId, id, name) {
      const row = await db
        .updateTable('webauthn_credentials')
        .set({ name })
        .where('id', '=', id)
        .where('user_id', '=', userId)
        .returningAll()
        .executeTakeFirst();
      return row && toPasskey(row);
    },

    async deletePasskey(userId, id, mails, now, sessionId) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        if (sessionId !== undefined) await lockForSession(trx, userId, sessionId);
        const deleted = await trx
          .deleteFrom('webauthn_credentials')
          .where('id', '=', id)
          .where('user_id', '=', userId)
          .executeTakeFirst();
        if (Number(deleted.numDeletedRows) !== 1) return false;
        await queueMails(trx, mails, nowMs);
        return true;
      });
    },

    async deleteAllPasskeys(userId, mails, now) {
      return db.transaction().execute(async (trx) => {
        const deleted = await trx
          .deleteFrom('webauthn_credentials')
          .where('user_id', '=', userId)
          .executeTakeFirst();
        await trx.deleteFrom('webauthn_challenges').where('user_id', '=', userId).execute();
        const count = Number(deleted.numDeletedRows);
        if (count > 0) await queueMails(trx, mails, now.getTime());
        return count;
      });
    },

    async recordUse(use, now) {
      const updated = await db
        .updateTable('webauthn_credentials')
        .set({
          sign_count: use.newCount,
          backup_state: flag(use.backupState),
          last_used_at_ms: now.getTime(),
          ...(use.userVerified ? { uv_initialized: 1 } : {}),
        })
        .where('id', '=', use.id)
        .where('sign_count', '=', use.storedCount)
        .where('suspect', '=', 0)
        .executeTakeFirst();
      return Number(updated.numUpdatedRows) === 1;
    },

    async markSuspect(id, mails, now) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        const marked = await trx
          .updateTable('webauthn_credentials')
          .set({ suspect: 1 })
          .where('id', '=', id)
          .where('suspect', '=', 0)
          .executeTakeFirst();
        if (Number(marked.numUpdatedRows) !== 1) return false;
        await queueMails(trx, mails, nowMs);
        return true;
      });
    },
  };
}
