import type { Expression, ExpressionBuilder, Selectable, SqlBool } from 'kysely';
import { prepareQuery } from './prepared.ts';
import type { Database, Db, SessionsTable } from './schema.ts';
import { toUser, type User, userColumns } from './users.ts';

export interface Session {
  id: string;
  userId: number;
  createdAt: Date;
  lastUsedAt: Date;
  expiresAt: Date;
  revokedAt: Date | undefined;
  userAgent: string | undefined;
  ipAddress: string | undefined;
}

export interface NewSession {
  id: string;
  userId: number;
  expiresAt: Date;
  userAgent: string | undefined;
  ipAddress: string | undefined;
}

export interface NewRefreshToken {
  id: string;
  secretHash: string;
}

export interface StoredRefreshToken {
  id: string;
  secretHash: string;
  usedAt: Date | undefined;
  session: Session;
}

export interface SessionsRepository {
  /**
   * Opens the session only while the user's password hash is still the one the login verified; false when it
   * changed (or the user went) in the meantime.
   */
  insertSession(
    session: NewSession,
    firstToken: NewRefreshToken,
    verifiedHash: string,
    now: Date,
  ): Promise<boolean>;
  findRefreshToken(id: string): Promise<StoredRefreshToken | undefined>;
  /**
   * Spends the parent and adds its successor atomically, if the session is still live: 'rotated', or
   * 'already_used' when another request spent it first, or 'session_ended'.
   */
  markRefreshTokenUsed(
    parentId: string,
    successor: NewRefreshToken,
    sessionId: string,
    now: Date,
    idleSince: Date,
  ): Promise<'rotated' | 'already_used' | 'session_ended'>;
  findUserOfLiveSession(
    sessionId: string,
    userId: number,
    now: Date,
    idleSince: Date,
  ): Promise<User | undefined>;
  findLiveSessions(userId: number, now: Date, idleSince: Date): Promise<Session[]>;
  revokeSession(sessionId: string, reason: string, now: Date): Promise<boolean>;
  revokeSessionOfUser(
    userId: number,
    sessionId: string,
    reason: string,
    now: Date,
    idleSince: Date,
  ): Promise<boolean>;
  revokeSessionsOfUser(userId: number, reason: string, now: Date, exceptSessionId?: string): Promise<number>;
  /** Deletes sessions revoked or expired before `endedBefore`, or idle since before it; returns how many. */
  deleteSessionsEndedBefore(endedBefore: Date, idleSince: Date): Promise<number>;
}

const sessionColumns = [
  'sessions.id',
  'sessions.user_id',
  'sessions.created_at_ms',
  'sessions.last_used_at_ms',
  'sessions.expires_at_ms',
  'sessions.revoked_at_ms',
  'sessions.user_agent',
  'sessions.ip_address',
] as const;

type SessionRow = Omit<Selectable<SessionsTable>, 'revoked_reason'>;

/**
 * The rule every authenticated read applies: the session is the user's, not revoked, not past its absolute
 * expiry and used since the idle cut-off. Takes [sessionId, userId, nowMs, idleSinceMs], in that order.
 */
export function isLiveSession([sessionId, userId, nowMs, idleSinceMs]: [string, number, number, number]) {
  return (eb: ExpressionBuilder<Database, 'sessions'>): Expression<SqlBool> =>
    eb.and([
      eb('sessions.id', '=', sessionId),
      eb('sessions.user_id', '=', userId),
      eb('sessions.revoked_at_ms', 'is', null),
      eb('sessions.expires_at_ms', '>', nowMs),
      eb('sessions.last_used_at_ms', '>', idleSinceMs),
    ]);
}

/** Placeholders for isLiveSession in prepared queries, bound per request to the same four values. */
export const LIVE_SESSION_SENTINELS: [string, number, number, number] = ['\u0000session', -1, -2, -3];

export function createSessionsRepository(db: Db): SessionsRepository {
  // Every authenticated request runs this one: prepared once, bound per request.
  const userOfLiveSession = prepareQuery(
    db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .select(userColumns.map((column) => `users.${column}` as const))
      .where(isLiveSession(LIVE_SESSION_SENTINELS)),
    LIVE_SESSION_SENTINELS,
  );

  return {
    async insertSession(session, firstToken, verifiedHash, now) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        // A write that locks the user's row: a password change (or deletion) committed first makes it match
        // nothing, one still running makes it wait; either way no session outlives the credentials it used.
        const unchanged = await trx
          .updateTable('users')
          .set((eb) => ({ password_hash: eb.ref('password_hash') }))
          .where('id', '=', session.userId)
          .where('password_hash', '=', verifiedHash)
          .executeTakeFirst();
        if (Number(unchanged.numUpdatedRows) !== 1) return false;
        await trx
          .insertInto('sessions')
          .values({
            id: session.id,
            user_id: session.userId,
            created_at_ms: nowMs,
            last_used_at_ms: nowMs,
            expires_at_ms: session.expiresAt.getTime(),
            revoked_at_ms: null,
            revoked_reason: null,
            user_agent: session.userAgent ?? null,
            ip_address: session.ipAddress ?? null,
          })
          .execute();
        await trx
          .insertInto('refresh_tokens')
          .values({
            id: firstToken.id,
            session_id: session.id,
            secret_hash: firstToken.secretHash,
            parent_id: null,
            created_at_ms: nowMs,
            used_at_ms: null,
          })
          .execute();
        return true;
      });
    },

    async findRefreshToken(id) {
      const row = await db
        .selectFrom('refresh_tokens')
        .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
        .select([...sessionColumns, 'refresh_tokens.secret_hash', 'refresh_tokens.used_at_ms'])
        .where('refresh_tokens.id', '=', id)
        .executeTakeFirst();
      if (!row) return undefined;
      return {
        id,
        secretHash: row.secret_hash,
        usedAt: row.used_at_ms === null ? undefined : new Date(Number(row.used_at_ms)),
        session: toSession(row),
      };
    },

    async markRefreshTokenUsed(parentId, successor, sessionId, now, idleSince) {
      const nowMs = now.getTime();
      return db.transaction().execute(async (trx) => {
        // Liveness is decided inside the transaction on the locked session row: a logout that commits first
        // makes this refresh fail instead of answering with tokens that are already dead.
        const live = await trx
          .updateTable('sessions')
          .set({ last_used_at_ms: nowMs })
          .where('id', '=', sessionId)
          .where('revoked_at_ms', 'is', null)
          .where('expires_at_ms', '>', nowMs)
          .where('last_used_at_ms', '>', idleSince.getTime())
          .executeTakeFirst();
        if (Number(live.numUpdatedRows) !== 1) return 'session_ended';
        // The conditional update is the lock: of many concurrent refreshes, exactly one changes the row.
        const spent = await trx
          .updateTable('refresh_tokens')
          .set({ used_at_ms: nowMs })
          .where('id', '=', parentId)
          .where('used_at_ms', 'is', null)
          .executeTakeFirst();
        if (Number(spent.numUpdatedRows) !== 1) return 'already_used';
        await trx
          .insertInto('refresh_tokens')
          .values({
            id: successor.id,
            session_id: sessionId,
            secret_hash: successor.secretHash,
            parent_id: parentId,
            created_at_ms: nowMs,
            used_at_ms: null,
          })
          .execute();
        return 'rotated';
      });
    },

    async findUserOfLiveSession(sessionId, userId, now, idleSince) {
      const { rows } = await db.executeQuery(
        userOfLiveSession(sessionId, userId, now.getTime(), idleSince.getTime()),
      );
      return rows[0] ? toUser(rows[0]) : undefined;
    },

    async findLiveSessions(userId, now, idleSince) {
      const rows = await db
        .selectFrom('sessions')
        .select(sessionColumns)
        .where('user_id', '=', userId)
        .where('revoked_at_ms', 'is', null)
        .where('expires_at_ms', '>', now.getTime())
        .where('last_used_at_ms', '>', idleSince.getTime())
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

    async revokeSessionOfUser(userId, sessionId, reason, now, idleSince) {
      const result = await db
        .updateTable('sessions')
        .set({ revoked_at_ms: now.getTime(), revoked_reason: reason })
        .where('id', '=', sessionId)
        .where('user_id', '=', userId)
        .where('revoked_at_ms', 'is', null)
        .where('expires_at_ms', '>', now.getTime())
        .where('last_used_at_ms', '>', idleSince.getTime())
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    async revokeSessionsOfUser(userId, reason, now, exceptSessionId) {
      let query = db
        .updateTable('sessions')
        .set({ revoked_at_ms: now.getTime(), revoked_reason: reason })
        .where('user_id', '=', userId)
        .where('revoked_at_ms', 'is', null);
      if (exceptSessionId) query = query.where('id', '!=', exceptSessionId);
      const result = await query.executeTakeFirst();
      return Number(result.numUpdatedRows);
    },

    async deleteSessionsEndedBefore(endedBefore, idleSince) {
      const cutoff = endedBefore.getTime();
      const idleCutoff = Math.min(cutoff, idleSince.getTime() - 86400_000);
      const result = await db
        .deleteFrom('sessions')
        .where((eb) =>
          eb.or([
            eb('revoked_at_ms', '<', cutoff),
            eb('expires_at_ms', '<', cutoff),
            eb('last_used_at_ms', '<', idleCutoff),
          ]),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  };
}

function toSession(row: SessionRow): Session {
  return {
    id: row.id,
    userId: Number(row.user_id),
    createdAt: new Date(Number(row.created_at_ms)),
    lastUsedAt: new Date(Number(row.last_used_at_ms)),
    expiresAt: new Date(Number(row.expires_at_ms)),
    revokedAt: row.revoked_at_ms === null ? undefined : new Date(Number(row.revoked_at_ms)),
    userAgent: row.user_agent ?? undefined,
    ipAddress: row.ip_address ?? undefined,
  };
}
