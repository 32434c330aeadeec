import { prepareQuery } from './prepared.ts';
import type { Db } from './schema.ts';
import { isLiveSession, LIVE_SESSION_SENTINELS } from './sessions.ts';

export interface ConversationMessage {
  author: 'system' | 'user';
  body: string;
  createdAt: Date;
}

export interface ConversationOfSession {
  username: string;
  /** Oldest first; undefined when the user has no conversation at all. */
  messages: ConversationMessage[] | undefined;
}

export interface ConversationsRepository {
  /**
   * Reads the conversation of the user behind a live session, with the session check in the same query: one
   * round trip for the busiest authenticated read. Undefined when the session is not live (see isLiveSession).
   */
  findConversationOfLiveSession(
    sessionId: string,
    userId: number,
    now: Date,
    idleSince: Date,
  ): Promise<ConversationOfSession | undefined>;
}

export function createConversationsRepository(db: Db): ConversationsRepository {
  const conversationOfLiveSession = prepareQuery(
    db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .leftJoin('conversations', 'conversations.user_id', 'sessions.user_id')
      .leftJoin('messages', 'messages.conversation_id', 'conversations.id')
      .select([
        'users.username',
        'conversations.id as conversation_id',
        'messages.id as message_id',
        'messages.author',
        'messages.body',
        'messages.created_at_ms',
      ])
      // No ORDER BY: a Sort node makes each PostgreSQL backend grow and trim its heap on every execution (brk,
      // page faults, TLB shootdowns: 3-4x the database CPU of the whole query, measured); the rows are few and
      // are put in order below.
      .where(isLiveSession(LIVE_SESSION_SENTINELS)),
    LIVE_SESSION_SENTINELS,
  );
  return {
    async findConversationOfLiveSession(sessionId, userId, now, idleSince) {
      const { rows } = await db.executeQuery(
        conversationOfLiveSession(sessionId, userId, now.getTime(), idleSince.getTime()),
      );
      const first = rows[0];
      if (!first) return undefined;
      if (first.conversation_id === null) return { username: first.username, messages: undefined };
      return {
        username: first.username,
        messages: rows
          .filter((row) => row.message_id !== null)
          .sort((a, b) => Number(a.message_id) - Number(b.message_id))
          .flatMap((row) =>
            row.author && row.body !== null
              ? [{ author: row.author, body: row.body, createdAt: new Date(Number(row.created_at_ms)) }]
              : [],
          ),
      };
    },
  };
}
