import { sql } from 'kysely';
import type { Session } from '../domain/session.ts';
import { prepareQuery } from './prepared.ts';
import type { Db, Dialect } from './schema.ts';
import { type NewRefreshToken, SESSION_ID_SENTINEL, sessionColumns, toSession } from './sessions.ts';

export interface StoredRefreshToken {
  id: string;
  secretHash: string;
  usedAt: Date | undefined;
  session: Session;
}

export type RotationOutcome = 'rotated' | 'already_used' | 'session_ended' | 'not_confirmed';

export interface RefreshTokensRepository {
  findRefreshToken(id: string): Promise<StoredRefreshToken | undefined>;
  /**
   * Spends the parent and adds its successor atomically, once `judgeLocked` has found the session live as it stands
   * with its row locked (it returns the instant of that judgement, which the writes record): 'rotated', or
   * 'already_used' when another request spent the parent first, or 'session_ended'.
   */
  markRefreshTokenUsed(
    parentId: string,
    successor: NewRefreshToken,
    sessionId: string,
    judgeLocked: (session: Session) => Date | undefined,
    /**
     * Asked of the one request that spends the token, before its successor is written, while the session is locked:
     * false rolls the spend back ('not_confirmed'), and the token stays as it was.
     */
    confirmSpend?: () => Promise<boolean>,
  ): Promise<RotationOutcome>;
}

/** Thrown inside the rotation's transaction to roll it back when its spend is not confirmed. */
class SpendNotConfirmed extends Error {}

const TOKEN_ID_SENTINEL = '\u0000token';
const NOW_MS_SENTINEL = -1;
// Placeholders for a successor's columns, in the order insertSuccessor binds them.
const SUCCESSOR_SENTINELS: [string, string, string, string, number] = [
  '\u0000successor',
  '\u0000session',
  '\u0000secret',
  '\u0000parent',
  NOW_MS_SENTINEL,
];

export function createRefreshTokensRepository(db: Db, dialect: Dialect): RefreshTokensRepository {
  // Every refresh runs these: prepared once, bound per request.
  const tokenWithSession = prepareQuery(
    db
      .selectFrom('refresh_tokens')
      .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
      .select([...sessionColumns, 'refresh_tokens.secret_hash', 'refresh_tokens.used_at_ms'])
      .where('refresh_tokens.id', '=', TOKEN_ID_SENTINEL),
    [TOKEN_ID_SENTINEL],
  );
  // Why the lock, and why this one on PostgreSQL: in markRefreshTokenUsed.
  const lockedSession = prepareQuery(
    db
      .selectFrom('sessions')
      .select(sessionColumns)
      .where('id', '=', SESSION_ID_SENTINEL[0])
      .$if(dialect === 'postgres', (query) => query.forNoKeyUpdate()),
    SESSION_ID_SENTINEL,
  );
  const touchSession = prepareQuery(
    db
      .updateTable('sessions')
      .set({ last_used_at_ms: NOW_MS_SENTINEL })
      .where('id', '=', SESSION_ID_SENTINEL[0]),
    [NOW_MS_SENTINEL, SESSION_ID_SENTINEL[0]],
  );
  const spendToken = prepareQuery(
    db
      .updateTable('refresh_tokens')
      .set({ used_at_ms: NOW_MS_SENTINEL })
      .where('id', '=', TOKEN_ID_SENTINEL)
      .where('used_at_ms', 'is', null),
    [NOW_MS_SENTINEL, TOKEN_ID_SENTINEL],
  );
  const insertSuccessor = prepareQuery(
    db.insertInto('refresh_tokens').values({
      id: SUCCESSOR_SENTINELS[0],
      session_id: SUCCESSOR_SENTINELS[1],
      secret_hash: SUCCESSOR_SENTINELS[2],
      parent_id: SUCCESSOR_SENTINELS[3],
      created_at_ms: SUCCESSOR_SENTINELS[4],
      used_at_ms: sql.lit(null),
    }),
    SUCCESSOR_SENTINELS,
  );

  return {
    async findRefreshToken(id) {
      const row = (await db.executeQuery(tokenWithSession(id))).rows[0];
      if (!row) return undefined;
      return {
        id,
        secretHash: row.secret_hash,
        usedAt: row.used_at_ms === null ? undefined : new Date(Number(row.used_at_ms)),
        session: toSession(row),
      };
    },

    async markRefreshTokenUsed(parentId, successor, sessionId, judgeLocked, confirmSpend) {
      const rotation = db.transaction().execute(async (trx): Promise<RotationOutcome> => {
        // The session row is read locked: a logout that commits first is seen here and makes this refresh fail
        // instead of answering with tokens that are already dead; one that comes later waits for this transaction.
        // PostgreSQL: FOR NO KEY UPDATE (an update that changes nothing would do too, but then the next update of the
        // row re-checks its foreign key, locking the user's row after the session's: an account deletion, which
        // locks them the other way round, deadlocked with it). SQLite: the transaction began with the write lock.
        const locked = (await trx.executeQuery(lockedSession(sessionId))).rows[0];
        // Judged now, not when the request began: a refresh that waited on the lock past the idle cut-off must not
        // bring back a session that every other path already refuses.
        const judgedAt = locked && judgeLocked(toSession(locked));
        if (!judgedAt) return 'session_ended';
        const nowMs = judgedAt.getTime();
        await trx.executeQuery(touchSession(nowMs, sessionId));
        // The conditional update is the lock: of many concurrent refreshes, exactly one changes the row.
        const spent = await trx.executeQuery(spendToken(nowMs, parentId));
        if (Number(spent.numAffectedRows) !== 1) return 'already_used';
        if (confirmSpend && !(await confirmSpend())) throw new SpendNotConfirmed();
        await trx.executeQuery(
          insertSuccessor(successor.id, sessionId, successor.secretHash, parentId, nowMs),
        );
        return 'rotated';
      });
      return rotation.catch((error: unknown) => {
        if (error instanceof SpendNotConfirmed) return 'not_confirmed';
        throw error;
      });
    },
  };
}
