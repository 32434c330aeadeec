import { type Expression, type ExpressionBuilder, type SqlBool, sql } from 'kysely';
import type { Session } from '../domain/session.ts';
import type { User } from '../domain/user.ts';
import type { Executor } from './one-time-tokens.ts';
import {
  batchedReads,
  executePrepared,
  KEYS_SENTINEL,
  keyIn,
  prepareQuery,
  USER_ID_SENTINEL,
} from './prepared.ts';
import type { Database, Db, Dialect, SessionRow } from './schema.ts';
import { toUser } from './user-rows.ts';

export interface NewSession {
  id: string;
  userId: number;
  expiresAt: Date;
  userAgent: string | undefined;
  ipAddress: string | undefined;
  scope: string;
  /** RFC 8176 authentication methods, space-separated; `pwd` when omitted. */
  amr?: string | undefined;
}

export interface NewRefreshToken {
  id: string;
  secretHash: string;
}

export interface SessionWithUser {
  session: Session;
  user: User;
}

/** Cut-offs for deleting ended sessions: each ended by revocation, by expiry or by disuse before its own instant. */
export interface EndedSessionCutoffs {
  revokedBefore: Date;
  expiredBefore: Date;
  lastUsedBefore: Date;
}

export interface SessionsRepository {
  /**
   * Opens the session with its first refresh token, only while the user's password hash is still the one the login
   * verified and the account is not disabled; false when it changed (or the user went) in the meantime. A login that proved no password (a passkey
   * alone) passes null: only the user's going or the account's disabling refuses it.
   */
  insertSession(
    session: NewSession,
    firstToken: NewRefreshToken,
    verifiedHash: string | null,
    now: Date,
  ): Promise<boolean>;
  findSession(sessionId: string): Promise<Session | undefined>;
  /** The session with its user, in one round trip: the read behind every authenticated request. */
  findSessionWithUser(sessionId: string): Promise<SessionWithUser | undefined>;
  /** Every stored session of the user, ended ones included until they are deleted, newest first. */
  findSessionsOfUser(userId: number): Promise<Session[]>;
  /** Marks the session revoked unless it already is; true if this call revoked it. */
  revokeSession(sessionId: string, reason: string, now: Date): Promise<boolean>;
  /** Marks every unrevoked session of the user revoked, except one if named; returns how many. */
  revokeEverySessionOfUser(
    userId: number,
    reason: string,
    now: Date,
    exceptSessionId?: string,
  ): Promise<number>;
  /** Marks revoked every unrevoked session of the user whose login used no second factor, except one; how many. */
  revokePasswordOnlySessionsOfUser(
    userId: number,
    reason: string,
    now: Date,
    exceptSessionId: string | undefined,
  ): Promise<number>;
  /** Deletes (with their refresh tokens) sessions that ended before the cut-offs; returns how many. */
  deleteEndedSessions(cutoffs: EndedSessionCutoffs): Promise<number>;
}

export const sessionColumns = [
  'sessions.id',
  'sessions.user_id',
  'sessions.created_at_ms',
  'sessions.last_used_at_ms',
  'sessions.expires_at_ms',
  'sessions.revoked_at_ms',
  'sessions.user_agent',
  'sessions.ip_address',
  'sessions.scope',
  'sessions.amr',
] as const;

/** Placeholder for the session id in prepared queries, bound per request. */
export const SESSION_ID_SENTINEL: [string] = ['\u0000session'];

// Placeholders for a new session's columns, in the order insertNewSession binds them.
const NEW_SESSION_SENTINELS: [
  string,
  number,
  number,
  number,
  number,
  string | null,
  string | null,
  string,
  string,
] = ['\u0000sid', USER_ID_SENTINEL[0], -1, -2, -3, '\u0000ua', '\u0000ip', '\u0000scope', '\u0000amr'];
const VERIFIED_HASH_SENTINEL = '\u0000hash';
const FIRST_TOKEN_SENTINELS: [string, string, string, number] = [
  '\u0000tid',
  '\u0000sid',
  '\u0000secret',
  -1,
];

export function createSessionsRepository(db: Db, dialect: Dialect): SessionsRepository {
  // Every authenticated request runs this one: prepared once, bound per batch of requests.
  const sessionIds = keyIn(dialect, 'sessions.id');
  const sessionsWithUsers = prepareQuery(
    db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select([
        ...sessionColumns,
        'users.username',
        'users.email',
        'users.age',
        'users.level',
        'users.created_at_ms as user_created_at_ms',
        'users.roles',
        'users.disabled_at_ms',
        'users.email_verified_at_ms',
        'users.pending_email',
      ])
      .where(sessionIds.condition),
    KEYS_SENTINEL,
  );
  // Under load most requests of a turn of the event loop share one statement: it costs about the same for one
  // session as for thirty (see batchedReads).
  const rowsOfSession = batchedReads(
    async (ids: string[]) => (await executePrepared(db, sessionsWithUsers(sessionIds.bind(ids)))).rows,
    (row) => row.id,
  );

  // Every login runs these three, in insertSession's transaction: prepared once, bound per login.
  const lockUserWithHash = prepareQuery(
    db
      .selectFrom('users')
      .select('id')
      .where('id', '=', USER_ID_SENTINEL[0])
      .where('password_hash', '=', VERIFIED_HASH_SENTINEL)
      .where('disabled_at_ms', 'is', null)
      // SQLite's transactions here begin immediate, holding the database's write lock until they end.
      .$if(dialect === 'postgres', (query) => query.forShare()),
    [USER_ID_SENTINEL[0], VERIFIED_HASH_SENTINEL],
  );
  const lockUser = prepareQuery(
    db
      .selectFrom('users')
      .select('id')
      .where('id', '=', USER_ID_SENTINEL[0])
      .where('disabled_at_ms', 'is', null)
      .$if(dialect === 'postgres', (query) => query.forShare()),
    USER_ID_SENTINEL,
  );
  const insertNewSession = prepareQuery(
    db.insertInto('sessions').values({
      id: NEW_SESSION_SENTINELS[0],
      user_id: NEW_SESSION_SENTINELS[1],
      created_at_ms: NEW_SESSION_SENTINELS[2],
      last_used_at_ms: NEW_SESSION_SENTINELS[3],
      expires_at_ms: NEW_SESSION_SENTINELS[4],
      revoked_at_ms: sql.lit(null),
      revoked_reason: sql.lit(null),
      user_agent: NEW_SESSION_SENTINELS[5],
      ip_address: NEW_SESSION_SENTINELS[6],
      scope: NEW_SESSION_SENTINELS[7],
      amr: NEW_SESSION_SENTINELS[8],
    }),
    NEW_SESSION_SENTINELS,
  );
  const insertFirstToken = prepareQuery(
    db.insertInto('refresh_tokens').values({
      id: FIRST_TOKEN_SENTINELS[0],
      session_id: FIRST_TOKEN_SENTINELS[1],
      secret_hash: FIRST_TOKEN_SENTINELS[2],
      parent_id: sql.lit(null),
      created_at_ms: FIRST_TOKEN_SENTINELS[3],
      used_at_ms: sql.lit(null),
    }),
    FIRST_TOKEN_SENTINELS,
  );

  return {
    async insertSession(session, firstToken, verifiedHash, now) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        // A read that locks out writers of the user's row until the session is in: a password change, deletion or
        // disabling committed first makes it match nothing, one still running makes it wait (and a disabling then
        // ends the session it opened); either way no session outlives the credentials it used or the account's use. It used to be a no-op UPDATE: a new row version of the user at every login.
        const unchanged = await trx.executeQuery(
          verifiedHash === null ? lockUser(session.userId) : lockUserWithHash(session.userId, verifiedHash),
        );
        if (unchanged.rows.length !== 1) return false;
        await trx.executeQuery(
          insertNewSession(
            session.id,
            session.userId,
            nowMs,
            nowMs,
            session.expiresAt.getTime(),
            session.userAgent ?? null,
            session.ipAddress ?? null,
            session.scope,
            session.amr ?? 'pwd',
          ),
        );
        await trx.executeQuery(insertFirstToken(firstToken.id, session.id, firstToken.secretHash, nowMs));
        return true;
      });
    },

    async findSession(sessionId) {
      const row = await db
        .selectFrom('sessions')
        .select(sessionColumns)
        .where('id', '=', sessionId)
        .executeTakeFirst();
      return row ? toSession(row) : undefined;
    },

    async findSessionWithUser(sessionId) {
      // PostgreSQL refuses a NUL in text, and in a batch that error would fail the other requests' reads too.
      if (sessionId.includes('\u0000')) return undefined;
      const row = (await rowsOfSession(sessionId))[0];
      if (!row) return undefined;
      return {
        session: toSession(row),
        // Named fields, not a spread of the row: on the path of every authenticated request, the spread cost 2 µs.
        user: toUser({
          id: row.user_id,
          username: row.username,
          email: row.email,
          age: row.age,
          level: row.level,
          created_at_ms: row.user_created_at_ms,
          roles: row.roles,
          disabled_at_ms: row.disabled_at_ms,
          email_verified_at_ms: row.email_verified_at_ms,
          pending_email: row.pending_email,
        }),
      };
    },

    async findSessionsOfUser(userId) {
      const rows = await db
        .selectFrom('sessions')
        .select(sessionColumns)
        .where('user_id', '=', userId)
        .orderBy('created_at_ms', 'desc')
        .execute();
      return rows.map(toSession);
    },

    async revokeSession(sessionId, reason, now) {
      const result = await db
        .updateTable('sessions')
        .set({ revoked_at_ms: now.getTime(), revoked_reason: reason })
        .where('id', '=', sessionId)
        .where('revoked_at_ms', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    revokeEverySessionOfUser: (userId, reason, now, exceptSessionId) =>
      revokeSessionsOfUser(db, userId, now.getTime(), reason, exceptSessionId),

    async revokePasswordOnlySessionsOfUser(userId, reason, now, exceptSessionId) {
      const result = await db
        .updateTable('sessions')
        .set({ revoked_at_ms: now.getTime(), revoked_reason: reason })
        .where('user_id', '=', userId)
        .where('revoked_at_ms', 'is', null)
        // amr is space-separated (RFC 8176 values): `mfa` names a login that used a second factor.
        .where(sql<boolean>`(' ' || amr || ' ') not like '% mfa %'`)
        .$if(exceptSessionId !== undefined, (query) => query.where('id', '!=', exceptSessionId!))
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    },

    async deleteEndedSessions({ revokedBefore, expiredBefore, lastUsedBefore }) {
      const result = await db
        .deleteFrom('sessions')
        .where((eb) =>
          eb.or([
            eb('revoked_at_ms', '<', revokedBefore.getTime()),
            eb('expires_at_ms', '<', expiredBefore.getTime()),
            eb('last_used_at_ms', '<', lastUsedBefore.getTime()),
          ]),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  };
}

/**
 * Whether one of the user's sessions may still act for it, on the user's row: the account is enabled and the session
 * is live. For reads only: a write guards itself with lockActingSession (db/users.ts), whose statements hold the rows,
 * since on PostgreSQL a single statement that waited for the user's row judges the session by its old snapshot.
 */
export function sessionMayAct(
  eb: ExpressionBuilder<Database, 'users'>,
  sessionId: string,
): Expression<SqlBool> {
  return eb.and([
    eb('users.disabled_at_ms', 'is', null),
    eb.exists(
      eb
        .selectFrom('sessions')
        .select('sessions.id')
        .where('sessions.id', '=', sessionId)
        .whereRef('sessions.user_id', '=', 'users.id')
        .where('sessions.revoked_at_ms', 'is', null),
    ),
  ]);
}

/**
 * Marks every unrevoked session of the user revoked, but `exceptSessionId` if given, in the executor's transaction when
 * it is one; returns how many.
 */
export async function revokeSessionsOfUser(
  executor: Executor,
  userId: number,
  nowMs: number,
  reason: string,
  exceptSessionId?: string,
): Promise<number> {
  const result = await executor
    .updateTable('sessions')
    .set({ revoked_at_ms: nowMs, revoked_reason: reason })
    .where('user_id', '=', userId)
    .where('revoked_at_ms', 'is', null)
    .$if(exceptSessionId !== undefined, (query) => query.where('id', '!=', exceptSessionId!))
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export function toSession(row: SessionRow): Session {
  return {
    id: row.id,
    userId: Number(row.user_id),
    createdAt: new Date(Number(row.created_at_ms)),
    lastUsedAt: new Date(Number(row.last_used_at_ms)),
    expiresAt: new Date(Number(row.expires_at_ms)),
    revokedAt: row.revoked_at_ms === null ? undefined : new Date(Number(row.revoked_at_ms)),
    userAgent: row.user_agent ?? undefined,
    ipAddress: row.ip_address ?? undefined,
    scope: row.scope,
    amr: row.amr,
  };
}
