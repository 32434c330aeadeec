import type { Session } from '../domain/session.ts';
import { prepareQuery } from './prepared.ts';
import type { Db } from './schema.ts';
import { SESSION_ID_SENTINEL, sessionColumns, toSession } from './sessions.ts';

export interface ConversationMessage {
  author: 'system' | 'user';
  body: string;
  createdAt: Date;
}

export interface ConversationOfSession {
  /** The session as stored, for the caller to judge: this read does not decide whether it is live. */
  session: Session;
  username: string;
  /** Oldest first; undefined when the user has no conversation at all. */
  messages: ConversationMessage[] | undefined;
}

export interface ConversationsRepository {
  /**
   * Reads a session with its user's name and conversation: one round trip for the busiest authenticated read.
   * Undefined when there is no such session.
   */
  findConversationOfSession(sessionId: string): Promise<ConversationOfSession | undefined>;
}

export function createConversationsRepository(db: Db): ConversationsRepository {
  const conversationOfSession = prepareQuery(
    db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .leftJoin('conversations', 'conversations.user_id', 'sessions.user_id')
      .leftJoin('messages', 'messages.conversation_id', 'conversations.id')
      .select([
        ...sessionColumns,
        'users.username',
        'conversations.id as conversation_id',
        'messages.id as message_id',
        'messages.author',
        'messages.body',
        'messages.created_at_ms as message_created_at_ms',
      ])
      // No ORDER BY: a Sort node makes each PostgreSQL backend grow and trim its heap on every execution (brk,
      // page faults, TLB shootdowns: 3-4x the database CPU of the whole query, measured); the rows are few and
      // are put in order below.
      .where('sessions.id', '=', SESSION_ID_SENTINEL[0]),
    SESSION_ID_SENTINEL,
  );
  return {
    async findConversationOfSession(sessionId) {
      const { rows } = await db.executeQuery(conversationOfSession(sessionId));
      const first = rows[0];
      if (!first) return undefined;
      const found = { session: toSession(first), username: first.username };
      if (first.conversation_id === null) return { ...found, messages: undefined };
      return {
        ...found,
        messages: rows
          .filter((row) => row.message_id !== null)
          .sort((a, b) => Number(a.message_id) - Number(b.message_id))
          .flatMap((row) =>
            row.author && row.body !== null
              ? [
                  {
                    author: row.author,
                    body: row.body,
                    createdAt: new Date(Number(row.message_created_at_ms)),
                  },
                ]
              : [],
          ),
      };
    },
  };
}
