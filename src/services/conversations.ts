import type { ConversationsRepository } from '../db/conversations.ts';
import { AppError } from '../errors.ts';

export interface ConversationsService {
  /** Returns the user's conversation as text, one message a line; throws not_found if they have none. */
  readConversation(userId: number): Promise<string>;
}

/** Builds read access to each user's own conversation. */
export function createConversationsService(deps: {
  conversations: ConversationsRepository;
}): ConversationsService {
  return {
    async readConversation(userId) {
      const messages = await deps.conversations.findMessagesByUserId(userId);
      if (!messages) throw new AppError('not_found', 'Conversation not found');
      return messages.map((message) => message.body).join('\n');
    },
  };
}
