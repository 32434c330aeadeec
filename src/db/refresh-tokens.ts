import type { Session } from '../domain/session.ts';
import type { Db, Dialect } from './schema.ts';
import { type NewRefreshToken, sessionColumns, toSession } from './sessions.ts';

export interface StoredRefreshToken {
  id: string;
  secretHash: string;
  usedAt: Date | undefined;
  session: Session;
}

export type RotationOutcome = 'rotated' | 'already_used' | 'session_ended';

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
  ): Promise<RotationOutcome>;
}

export function createRefreshTokensRepository(db: Db, dialect: Dialect): RefreshTokensRepository {
  return {
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

    async markRefreshTokenUsed(parentId, successor, sessionId, judgeLocked) {
      return db.transaction().execute(async (trx) => {
        // The session row is read locked: a logout that commits first is seen here and makes this refresh fail
        // instead of answering with tokens that are already dead; one that comes later waits for this transaction.
        // PostgreSQL: FOR NO KEY UPDATE (an update that changes nothing would do too, but then the next update of the
        // row re-checks its foreign key, locking the user's row after the session's: an account deletion, which
        // locks them the other way round, deadlocked with it). SQLite: the transaction began with the write lock.
        const locked = await trx
          .selectFrom('sessions')
          .select(sessionColumns)
          .where('id', '=', sessionId)
          .$if(dialect === 'postgres', (query) => query.forNoKeyUpdate())
          .executeTakeFirst();
        // Judged now, not when the request began: a refresh that waited on the lock past the idle cut-off must not
        // bring back a session that every other path already refuses.
        const judgedAt = locked && judgeLocked(toSession(locked));
        if (!judgedAt) return 'session_ended';
        const nowMs = judgedAt.getTime();
        await trx
          .updateTable('sessions')
          .set({ last_used_at_ms: nowMs })
          .where('id', '=', sessionId)
          .execute();
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
  };
}
