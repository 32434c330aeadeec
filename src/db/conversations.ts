import { sql } from 'kysely';
import type { Session } from '../domain/session.ts';
import { batchedReads, executePrepared, KEYS_SENTINEL, keyIn, prepareQuery } from './prepared.ts';
import type { Db, Dialect } from './schema.ts';
import { sessionColumns, toSession } from './sessions.ts';

export interface ConversationMessage {
  id: number;
  author: 'system' | 'user';
  body: string;
  createdAt: Date;
}

export interface ConversationOfSession {
  /** The session as stored, for the caller to judge: this read does not decide whether it is live. */
  session: Session;
  username: string;
  /** Since when the session's user is disabled, or null: for the caller to judge as well. */
  accountDisabledAt: Date | null;
  /** The newest NEWEST_MESSAGES_OF_SESSION, oldest first; undefined when the user has no conversation at all. */
  messages: ConversationMessage[] | undefined;
}

export interface ConversationsRepository {
  /**
   * Reads a session with its user's name, account state and conversation: one round trip for the busiest
   * authenticated read. Undefined when there is no such session.
   */
  findConversationOfSession(sessionId: string): Promise<ConversationOfSession | undefined>;
  /**
   * Appends a message to the user's conversation, creating the conversation if the user has none (imported users),
   * unless it already holds `maxMessages` ('full'); undefined when there is no such user.
   */
  insertMessageOfUser(
    userId: number,
    message: { author: 'user'; body: string; createdAt: Date },
    maxMessages: number,
  ): Promise<ConversationMessage | 'full' | undefined>;
  /** The user's messages with an id below `beforeId` (all when undefined), newest first, at most `limit`. */
  findMessagesOfUser(
    userId: number,
    page: { limit: number; beforeId: number | undefined },
  ): Promise<ConversationMessage[]>;
}

/** How many messages, the newest, the session's read joins: the whole history pages through findMessagesOfUser. */
export const NEWEST_MESSAGES_OF_SESSION = 50;

const messageColumns = ['messages.id', 'messages.author', 'messages.body', 'messages.created_at_ms'] as const;

export function createConversationsRepository(db: Db, dialect: Dialect): ConversationsRepository {
  const sessionIds = keyIn(dialect, 'sessions.id');
  const conversationsOfSessions = prepareQuery(
    db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .leftJoin('conversations', 'conversations.user_id', 'sessions.user_id')
      // The newest messages only: their oldest id is read from the (conversation_id, id) index, walking back
      // NEWEST_MESSAGES_OF_SESSION entries; with fewer, every message. Literals, not parameters: the prepared query
      // takes the session ids alone.
      .leftJoin('messages', (join) =>
        join.onRef('messages.conversation_id', '=', 'conversations.id').on((eb) =>
          eb(
            'messages.id',
            '>=',
            eb.fn.coalesce(
              eb
                .selectFrom('messages as newest')
                .select('newest.id')
                .whereRef('newest.conversation_id', '=', 'conversations.id')
                .orderBy('newest.id', 'desc')
                .limit(sql.lit(1))
                .offset(sql.lit(NEWEST_MESSAGES_OF_SESSION - 1)),
              sql.lit(0),
            ),
          ),
        ),
      )
      .select([
        ...sessionColumns,
        'users.username',
        'users.disabled_at_ms',
        'conversations.id as conversation_id',
        'messages.id as message_id',
        'messages.author',
        'messages.body',
        'messages.created_at_ms as message_created_at_ms',
      ])
      // No ORDER BY: a Sort node makes each PostgreSQL backend grow and trim its heap on every execution (brk,
      // page faults, TLB shootdowns: 3-4x the database CPU of the whole query, measured); the rows are few and
      // are put in order below.
      .where(sessionIds.condition),
    KEYS_SENTINEL,
  );
  // The busiest authenticated read: under load most requests of a turn of the event loop share one statement (see
  // batchedReads).
  const rowsOfSession = batchedReads(
    async (ids: string[]) => (await executePrepared(db, conversationsOfSessions(sessionIds.bind(ids)))).rows,
    (row) => row.id,
  );

  // One statement when the conversation exists, as it does for every user who registered here. The cap is checked in
  // that statement, by walking the (conversation_id, id) index to the maxMessages-th entry, and the time is never
  // earlier than the last message's, so that ids and times agree (a post takes its time before its turn comes). On
  // SQLite writes are serial; on PostgreSQL the caller holds the conversation's row (appendInTurn).
  const appendToExisting = (
    executor: Db,
    userId: number,
    body: string,
    createdAtMs: number,
    maxMessages: number,
  ) =>
    executor
      .insertInto('messages')
      .columns(['conversation_id', 'author', 'body', 'created_at_ms'])
      .expression((eb) =>
        eb
          .selectFrom('conversations')
          .select((inner) => {
            // Typed, or PostgreSQL reads a parameter in a select list as text.
            const given = inner.cast<number>(inner.val(createdAtMs), 'bigint');
            const last = inner
              .selectFrom('messages as last')
              .select('last.created_at_ms')
              .whereRef('last.conversation_id', '=', 'conversations.id')
              .orderBy('last.id', 'desc')
              .limit(1);
            return [
              'conversations.id',
              inner.val('user' as const).as('author'),
              inner.val(body).as('body'),
              sql<number>`${sql.raw(dialect === 'postgres' ? 'greatest' : 'max')}(${given}, coalesce((${last}), 0))`.as(
                'created_at_ms',
              ),
            ];
          })
          .where('conversations.user_id', '=', userId)
          .where((eb) =>
            eb.not(
              eb.exists(
                eb
                  .selectFrom('messages as stored')
                  .select('stored.id')
                  .whereRef('stored.conversation_id', '=', 'conversations.id')
                  .orderBy('stored.id')
                  .limit(1)
                  .offset(maxMessages - 1),
              ),
            ),
          ),
      )
      .returning(['id', 'author', 'body', 'created_at_ms'])
      .executeTakeFirst();

  // PostgreSQL: a user's posts take turns on their conversation's row, so that each sees the ones before it (the cap,
  // the last time). Each statement of a READ COMMITTED transaction reads what was committed when it began.
  const appendInTurn = (userId: number, body: string, createdAtMs: number, maxMessages: number) =>
    dialect === 'postgres'
      ? db.transaction().execute(async (trx) => {
          await trx
            .selectFrom('conversations')
            .select('id')
            .where('user_id', '=', userId)
            .forUpdate()
            .execute();
          return appendToExisting(trx, userId, body, createdAtMs, maxMessages);
        })
      : appendToExisting(db, userId, body, createdAtMs, maxMessages);

  const conversationOf = (userId: number) =>
    db.selectFrom('conversations').select('id').where('user_id', '=', userId).executeTakeFirst();

  return {
    async findConversationOfSession(sessionId) {
      // PostgreSQL refuses a NUL in text, and in a batch that error would fail the other requests' reads too.
      if (sessionId.includes('\u0000')) return undefined;
      const rows = await rowsOfSession(sessionId);
      const first = rows[0];
      if (!first) return undefined;
      const found = {
        session: toSession(first),
        username: first.username,
        accountDisabledAt: first.disabled_at_ms === null ? null : new Date(Number(first.disabled_at_ms)),
      };
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
                    id: Number(row.message_id),
                    author: row.author,
                    body: row.body,
                    createdAt: new Date(Number(row.message_created_at_ms)),
                  },
                ]
              : [],
          ),
      };
    },

    async insertMessageOfUser(userId, message, maxMessages) {
      const createdAtMs = message.createdAt.getTime();
      let row = await appendInTurn(userId, message.body, createdAtMs, maxMessages);
      if (!row) {
        if (!(await conversationOf(userId))) {
          // Users imported from the FastAPI seed have no conversation until their first message. The unique index
          // on conversations.user_id settles concurrent first messages: one conversation, all messages in it.
          const user = await db.selectFrom('users').select('id').where('id', '=', userId).executeTakeFirst();
          if (!user) return undefined;
          await db
            .insertInto('conversations')
            .values({ user_id: userId, created_at_ms: createdAtMs })
            .onConflict((conflict) => conflict.column('user_id').doNothing())
            .execute();
        }
        // Again, since a concurrent first message may have made the conversation after the first attempt: failing
        // now, with a conversation there, it is full.
        row = await appendInTurn(userId, message.body, createdAtMs, maxMessages);
        if (!row) return 'full';
      }
      return toMessage(row);
    },

    async findMessagesOfUser(userId, { limit, beforeId }) {
      const rows = await db
        .selectFrom('messages')
        .innerJoin('conversations', 'conversations.id', 'messages.conversation_id')
        .select(messageColumns)
        .where('conversations.user_id', '=', userId)
        .$if(beforeId !== undefined, (query) => query.where('messages.id', '<', beforeId!))
        .orderBy('messages.id', 'desc')
        .limit(limit)
        .execute();
      return rows.map(toMessage);
    },
  };
}

function toMessage(row: {
  id: number;
  author: 'system' | 'user';
  body: string;
  created_at_ms: number;
}): ConversationMessage {
  return {
    id: Number(row.id),
    author: row.author,
    body: row.body,
    createdAt: new Date(Number(row.created_at_ms)),
  };
}
