import { sql } from 'kysely';
import { canonicalEmail } from '../domain/email.ts';
import { type Level, ROLES, type Role, type User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import { type QueuedMail, queueMail } from './email-outbox.ts';
import { insertTokenWithMails, type NewOneTimeToken, spendTokensOfUser } from './one-time-tokens.ts';
import { executePrepared, prepareQuery, USER_ID_SENTINEL } from './prepared.ts';
import type { Db, NewUserRow } from './schema.ts';
import { revokeSessionsOfUser, sessionMayAct } from './sessions.ts';
import { violatedUniqueConstraint } from './unique-violation.ts';
import { toUser, userColumns } from './user-rows.ts';

/** The largest user id: ids are the users table's integer column (32 bits on PostgreSQL); none is larger. */
export const MAX_USER_ID = 2_147_483_647;

export interface NewUser {
  username: string;
  usernameCanonical: string;
  usernameSkeleton: string;
  email: string;
  emailCanonical: string;
  passwordHash: string;
  age: number;
  level: Level;
}

export interface ProfileChanges {
  /** The same address in another letter case: it replaces the display form at once. */
  email?: { display: string; canonical: string };
  /** A new address, kept apart until a link mailed to it is used; null abandons a pending one and spends its links. */
  pendingEmail?: string | null;
  age?: number;
  level?: Level;
}

export interface UserSearch {
  /** Matched, as a substring, against the canonical username; the caller case-folds it. */
  search: string | undefined;
  /** Matched, as substrings, against the canonical email (any of them), when `search` is given. */
  emailSearches: readonly string[];
  limit: number;
  /** Only users with a greater id: the page after the one that ended there. */
  afterId: number | undefined;
}

export interface Credentials {
  user: User;
  passwordHash: string;
}

export interface UsersRepository {
  insertUserWithConversation(user: NewUser, welcomeMessage: string, now: Date): Promise<User>;
  findUserById(id: number): Promise<User | undefined>;
  findUserByUsername(usernameCanonical: string): Promise<User | undefined>;
  findUserByEmail(emailCanonical: string): Promise<User | undefined>;
  /** Users in id order, at most `limit`, after `afterId` and matching `search` when given. */
  searchUsers(query: UserSearch): Promise<User[]>;
  findCredentialsByUsername(usernameCanonical: string): Promise<Credentials | undefined>;
  /** Whether any user still has a bcrypt hash (imported, not yet upgraded at a login). */
  hasBcryptPasswordHashes(): Promise<boolean>;
  /** Whether any stored password hash does not start with `prefix` (bcrypt, or argon2id of other parameters). */
  hasPasswordHashesUnlike(prefix: string): Promise<boolean>;
  findCredentialsById(id: number): Promise<Credentials | undefined>;
  /** Replaces the hash only if it is still `expectedHash` (a concurrent change wins otherwise); true if replaced. */
  replacePasswordHash(id: number, expectedHash: string, passwordHash: string, now: Date): Promise<boolean>;
  /**
   * As replacePasswordHash, and in the same transaction ends every session of the user but `keepSessionId`, forgets
   * their trusted clients (forgetTrustedClients), cancels a pending email change (cancelEmailChange) and queues
   * `mailsOf(the user as stored then)`.
   */
  replacePasswordHashEndingOtherSessions(
    id: number,
    expectedHash: string,
    passwordHash: string,
    /** The session asking, kept: the change lands only while it may act (lockActingSession). */
    keepSessionId: string,
    now: Date,
    mailsOf?: (user: User) => readonly QueuedMail[],
  ): Promise<boolean>;
  /**
   * Updates the user only while `guard` holds (the session may act, lockActingSession; the hash is still
   * `expectedHash`), in one transaction; undefined when it does not, or there is no such user. With `issued`, its token
   * is stored and its mails queued in the same transaction, and only if the update landed.
   */
  updateUserProfile(
    id: number,
    changes: ProfileChanges,
    now: Date,
    guard: { liveSessionId: string; expectedHash?: string },
    issued?: { token: NewOneTimeToken; mails: readonly QueuedMail[] },
  ): Promise<User | undefined>;
  /** Forgets the user's trusted clients: raises their trust generation (voiding device tokens) and known addresses. */
  forgetTrustedClients(id: number): Promise<void>;
  /**
   * Deletes the user, and every mail of theirs in the outbox, only if `expectedHash` is still their hash and, for a
   * deletion a session asks for, that session may act (lockActingSession); true if deleted.
   */
  deleteUser(id: number, expectedHash: string, sessionId?: string): Promise<boolean>;
  /** Whether the session may still act for the user (sessionMayAct): false once ended, or the account disabled or gone. */
  sessionMayAct(id: number, sessionId: string): Promise<boolean>;
  /**
   * Disables the account since `disabledAt`, or enables it with null; the user as now stored, undefined if none.
   * Disabling also cancels a pending email change (its link then dies, as it would for an abandoned address) and the
   * second legs of logins in progress (their mfa_tokens).
   */
  setUserDisabled(id: number, disabledAt: Date | null): Promise<User | undefined>;
  /** Replaces the user's roles; the user as now stored, undefined if none. */
  setUserRoles(id: number, roles: readonly Role[]): Promise<User | undefined>;
}

/** The row of a new user, created now. */
export function toNewUserRow(user: NewUser, now: Date): NewUserRow {
  return {
    username: user.username,
    username_canonical: user.usernameCanonical,
    username_skeleton: user.usernameSkeleton,
    email: user.email,
    email_canonical: user.emailCanonical,
    password_hash: user.passwordHash,
    age: user.age,
    level: user.level,
    created_at_ms: now.getTime(),
    updated_at_ms: now.getTime(),
  };
}

/** Placeholder for a canonical username in prepared queries, bound per request. */
const USERNAME_SENTINEL: [string] = ['\u0000username'];

export function createUsersRepository(db: Db): UsersRepository {
  // Every password login and every refresh runs one of these: prepared once, bound per request.
  const userById = prepareQuery(
    db.selectFrom('users').select(userColumns).where('id', '=', USER_ID_SENTINEL[0]),
    USER_ID_SENTINEL,
  );
  const credentialsByUsername = prepareQuery(
    db
      .selectFrom('users')
      .select([...userColumns, 'password_hash'])
      .where('username_canonical', '=', USERNAME_SENTINEL[0]),
    USERNAME_SENTINEL,
  );

  return {
    async insertUserWithConversation(user, welcomeMessage, now) {
      const nowMs = now.getTime();
      try {
        return await db.transaction().execute(async (trx) => {
          const row = await trx
            .insertInto('users')
            .values(toNewUserRow(user, now))
            .returning(userColumns)
            .executeTakeFirstOrThrow();
          const conversation = await trx
            .insertInto('conversations')
            .values({ user_id: row.id, created_at_ms: nowMs })
            .returning('id')
            .executeTakeFirstOrThrow();
          await trx
            .insertInto('messages')
            .values({
              conversation_id: conversation.id,
              author: 'system',
              body: welcomeMessage,
              created_at_ms: nowMs,
            })
            .execute();
          return toUser(row);
        });
      } catch (error) {
        const constraint = violatedUniqueConstraint(error);
        // A row can break the username and the email index at once, and which one is reported differs (SQLite
        // names the email, PostgreSQL the username): the username comes first, as in the FastAPI seed.
        if (
          constraint?.includes('username') ||
          (constraint?.includes('email') && (await isUsernameTaken(db, user)))
        ) {
          throw new AppError('username_taken', 'Username already registered', { cause: error });
        }
        if (constraint?.includes('email')) {
          throw new AppError('email_taken', 'Email already registered', { cause: error });
        }
        throw error;
      }
    },

    async findUserById(id) {
      if (id > MAX_USER_ID) return undefined;
      const row = (await executePrepared(db, userById(id))).rows[0];
      return row ? toUser(row) : undefined;
    },

    async findUserByUsername(usernameCanonical) {
      const row = await db
        .selectFrom('users')
        .select(userColumns)
        .where('username_canonical', '=', usernameCanonical)
        .executeTakeFirst();
      return row ? toUser(row) : undefined;
    },

    async findUserByEmail(emailCanonical) {
      const row = await db
        .selectFrom('users')
        .select(userColumns)
        .where('email_canonical', '=', emailCanonical)
        .executeTakeFirst();
      return row ? toUser(row) : undefined;
    },

    async searchUsers({ search, emailSearches, limit, afterId }) {
      // No stored name or address holds a NUL, which PostgreSQL's text cannot even be compared with.
      const hasNul = (text: string) => text.includes('\0');
      if (
        (search !== undefined && hasNul(search)) ||
        emailSearches.some(hasNul) ||
        (afterId !== undefined && afterId >= MAX_USER_ID)
      ) {
        return [];
      }
      let query = db.selectFrom('users').select(userColumns);
      if (afterId !== undefined) query = query.where('id', '>', afterId);
      // Explicit ESCAPE: SQLite has no default escape character, and a searched % or _ is meant literally.
      const pattern = (text: string) => `%${text.replace(/[\\%_]/g, (character) => `\\${character}`)}%`;
      if (search) {
        query = query.where((eb) =>
          eb.or([
            sql<boolean>`${eb.ref('username_canonical')} like ${pattern(search)} escape '\\'`,
            ...emailSearches.map(
              (text) => sql<boolean>`${eb.ref('email_canonical')} like ${pattern(text)} escape '\\'`,
            ),
          ]),
        );
      }
      const rows = await query.orderBy('id').limit(limit).execute();
      return rows.map(toUser);
    },

    async findCredentialsById(id) {
      if (id > MAX_USER_ID) return undefined;
      const row = await db
        .selectFrom('users')
        .select([...userColumns, 'password_hash'])
        .where('id', '=', id)
        .executeTakeFirst();
      return row ? { user: toUser(row), passwordHash: row.password_hash } : undefined;
    },

    async hasBcryptPasswordHashes() {
      const row = await db
        .selectFrom('users')
        .select('id')
        .where('password_hash', 'like', '$2%')
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    async hasPasswordHashesUnlike(prefix) {
      // Not LIKE, whose _ and % a prefix could hold: the first characters compared as they are.
      const row = await db
        .selectFrom('users')
        .select('id')
        .where((eb) => eb(eb.fn('substr', ['password_hash', eb.lit(1), eb.lit(prefix.length)]), '!=', prefix))
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    async findCredentialsByUsername(usernameCanonical) {
      // By the canonical form, never the skeleton: the skeleton only keeps lookalikes from registering, and
      // rows that shared one before it was unique keep theirs suffixed, so it names no one to log in as.
      const row = (await executePrepared(db, credentialsByUsername(usernameCanonical))).rows[0];
      return row ? { user: toUser(row), passwordHash: row.password_hash } : undefined;
    },

    replacePasswordHash: (id, expectedHash, passwordHash, now) =>
      compareAndSwapHash(db, id, expectedHash, passwordHash, now),

    async replacePasswordHashEndingOtherSessions(
      id,
      expectedHash,
      passwordHash,
      keepSessionId,
      now,
      mailsOf,
    ) {
      return db.transaction().execute(async (trx) => {
        if (!(await lockActingSession(trx, id, keepSessionId))) return false;
        if (!(await compareAndSwapHash(trx, id, expectedHash, passwordHash, now))) return false;
        await revokeSessionsOfUser(trx, id, now.getTime(), 'password_changed', keepSessionId);
        await forgetTrustedClients(trx, id);
        await cancelEmailChange(trx, id, now.getTime());
        if (mailsOf) {
          // The row as this transaction holds it: an address verified since the request read the user gets the mail.
          const row = await trx
            .selectFrom('users')
            .select(userColumns)
            .where('id', '=', id)
            .executeTakeFirstOrThrow();
          for (const mail of mailsOf(toUser(row))) await queueMail(trx, mail, now.getTime());
        }
        return true;
      });
    },

    forgetTrustedClients: (id) => db.transaction().execute((trx) => forgetTrustedClients(trx, id)),

    async updateUserProfile(id, changes, now, guard, issued) {
      const { liveSessionId, expectedHash } = guard;
      const update = (executor: Db) =>
        executor
          .updateTable('users')
          .set({
            ...(changes.email
              ? { email: changes.email.display, email_canonical: changes.email.canonical }
              : {}),
            ...(changes.pendingEmail !== undefined ? { pending_email: changes.pendingEmail } : {}),
            ...(changes.age !== undefined ? { age: changes.age } : {}),
            ...(changes.level !== undefined ? { level: changes.level } : {}),
            updated_at_ms: now.getTime(),
          })
          .where('id', '=', id)
          .$if(expectedHash !== undefined, (query) => query.where('password_hash', '=', expectedHash!))
          .returning(userColumns)
          .executeTakeFirst();
      try {
        const abandons = changes.pendingEmail === null;
        const row = await db.transaction().execute(async (trx) => {
          // A password change revokes the other sessions in the transaction that swaps the hash.
          if (!(await lockActingSession(trx, id, liveSessionId))) return undefined;
          const updated = await update(trx);
          if (!updated) return undefined;
          if (abandons) {
            await spendTokensOfUser(trx, id, now.getTime(), {
              purpose: 'verify_email',
              emailCanonical: canonicalEmail(updated.email),
            });
          }
          if (issued) await insertTokenWithMails(trx, issued.token, issued.mails, now);
          return updated;
        });
        return row ? toUser(row) : undefined;
      } catch (error) {
        if (violatedUniqueConstraint(error)?.includes('email')) {
          throw new AppError('email_taken', 'Email already registered', { cause: error });
        }
        throw error;
      }
    },

    async setUserDisabled(id, disabledAt) {
      const update = (executor: Db) =>
        executor
          .updateTable('users')
          // Disabling also cancels a pending email change, whose link would otherwise complete it once enabled again:
          // an operator who freezes an account must not be raced by a change its thief already asked for.
          .set(
            disabledAt === null
              ? { disabled_at_ms: null }
              : { disabled_at_ms: disabledAt.getTime(), pending_email: null },
          )
          .where('id', '=', id)
          .returning(userColumns)
          .executeTakeFirst();
      if (disabledAt === null) {
        const row = await update(db);
        return row ? toUser(row) : undefined;
      }
      // And the second leg of a login in progress, whose mfa_token would otherwise open a session once enabled again.
      const row = await db.transaction().execute(async (trx) => {
        const disabled = await update(trx);
        await trx.deleteFrom('mfa_challenges').where('user_id', '=', id).execute();
        return disabled;
      });
      return row ? toUser(row) : undefined;
    },

    async setUserRoles(id, roles) {
      const row = await db
        .updateTable('users')
        .set({ roles: formatRoles(roles) })
        .where('id', '=', id)
        .returning(userColumns)
        .executeTakeFirst();
      return row ? toUser(row) : undefined;
    },

    async deleteUser(id, expectedHash, sessionId) {
      // Sessions, refresh tokens, the conversation and its messages go with the user (ON DELETE CASCADE), and so do
      // its mails in the outbox, queued or sent: none may reach a person about an account that is gone.
      const remove = async (executor: Db) => {
        const result = await executor
          .deleteFrom('users')
          .where('id', '=', id)
          .where('password_hash', '=', expectedHash)
          .executeTakeFirst();
        return Number(result.numDeletedRows) === 1;
      };
      if (sessionId === undefined) return remove(db);
      return db
        .transaction()
        .execute(async (trx) => (await lockActingSession(trx, id, sessionId)) && (await remove(trx)));
    },

    async sessionMayAct(id, sessionId) {
      const row = await db
        .selectFrom('users')
        .select('id')
        .where('id', '=', id)
        .where((eb) => sessionMayAct(eb, sessionId))
        .executeTakeFirst();
      return row !== undefined;
    },
  };
}

async function isUsernameTaken(db: Db, user: NewUser): Promise<boolean> {
  const row = await db
    .selectFrom('users')
    .select('id')
    .where((eb) =>
      eb.or([
        eb('username_canonical', '=', user.usernameCanonical),
        eb('username_skeleton', '=', user.usernameSkeleton),
      ]),
    )
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Locks the user's row for the rest of `db`'s transaction (a write that changes nothing: PostgreSQL's row lock, SQLite's
 * single writer). Transactions that touch a user's row and their one-time tokens take the row first, so that a profile
 * change and a verification never wait for each other in opposite orders.
 */
export async function lockUserRow(db: Db, id: number): Promise<void> {
  await db
    .updateTable('users')
    .set((eb) => ({ id: eb.ref('id') }))
    .where('id', '=', id)
    .execute();
}

/**
 * Locks the user's row, then the session's, for the rest of `db`'s transaction, while the session may act for the user
 * (the account enabled, the session live: sessionMayAct); false, with nothing locked, otherwise. A request checks both
 * when it comes, then may hash for a long while: a disabling, or an end of the session, that commits meanwhile must not
 * be overtaken by its write.
 */
export async function lockActingSession(db: Db, id: number, sessionId: string): Promise<boolean> {
  const user = await db
    .updateTable('users')
    .set((eb) => ({ id: eb.ref('id') }))
    .where('id', '=', id)
    .where('disabled_at_ms', 'is', null)
    .returning('id')
    .executeTakeFirst();
  if (!user) return false;
  // A statement of its own, once the user's row is held: PostgreSQL re-checks a waiting statement against the new
  // version of the row it waited for, and judges the rest of it (the session) by its old snapshot, so a password
  // change or reset that ended this session while holding the user's row went unseen (found in review). Holding the
  // session's row also makes a logout of it wait for this write, rather than be answered before it lands.
  const session = await db
    .updateTable('sessions')
    .set((eb) => ({ id: eb.ref('id') }))
    .where('id', '=', sessionId)
    .where('user_id', '=', id)
    .where('revoked_at_ms', 'is', null)
    .returning('id')
    .executeTakeFirst();
  return session !== undefined;
}

/** As lockActingSession, throwing invalid_token (which rolls the transaction back) when the session may not act. */
export async function lockForSession(db: Db, id: number, sessionId: string): Promise<void> {
  if (!(await lockActingSession(db, id, sessionId)))
    throw new AppError('invalid_token', 'Could not validate credentials');
}

/**
 * Drops the pending address and spends every mailed link of the user, in `db`'s transaction: after a password reset or
 * change, an email change asked for with the old credentials (perhaps by whoever stole them) must not complete.
 */
export async function cancelEmailChange(db: Db, id: number, nowMs: number): Promise<void> {
  await db.updateTable('users').set({ pending_email: null }).where('id', '=', id).execute();
  await spendTokensOfUser(db, id, nowMs);
}

/** Raises the user's trust generation (voiding device tokens) and forgets their known addresses, in `db`'s transaction. */
export async function forgetTrustedClients(db: Db, id: number): Promise<void> {
  await db
    .updateTable('users')
    .set((eb) => ({ trust_generation: eb('trust_generation', '+', 1) }))
    .where('id', '=', id)
    .execute();
  await db.deleteFrom('known_ips').where('user_id', '=', id).execute();
}

async function compareAndSwapHash(db: Db, id: number, expectedHash: string, passwordHash: string, now: Date) {
  const result = await db
    .updateTable('users')
    .set({ password_hash: passwordHash, updated_at_ms: now.getTime() })
    .where('id', '=', id)
    .where('password_hash', '=', expectedHash)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

function formatRoles(roles: readonly Role[]): string {
  return ROLES.filter((role) => roles.includes(role)).join(' ');
}
