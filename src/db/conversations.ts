import { prepareQuery } from './prepared.ts';
import type { Db } from './schema.ts';

export interface ConversationMessage {
  author: 'system' | 'user';
  body: string;
  createdAt: Date;
}

export interface ConversationsRepository {
  findMessagesByUserId(userId: number): Promise<ConversationMessage[] | undefined>;
}

export function createConversationsRepository(db: Db): ConversationsRepository {
  const messagesOfUser = prepareQuery(
    db
      .selectFrom('conversations')
      .leftJoin('messages', 'messages.conversation_id', 'conversations.id')
      .select(['messages.author', 'messages.body', 'messages.created_at_ms'])
      .where('conversations.user_id', '=', -1)
      .orderBy('messages.id'),
    [-1],
  );
  return {
    async findMessagesByUserId(userId) {
      const { rows } = await db.executeQuery(messagesOfUser(userId));
      if (rows.length === 0) return undefined;
      return rows.flatMap((row) =>
        row.author && row.body !== null
          ? [{ author: row.author, body: row.body, createdAt: new Date(Number(row.created_at_ms)) }]
          : [],
      );
    },
  };
}
