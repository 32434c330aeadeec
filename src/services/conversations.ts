import type { ConversationsRepository } from '../db/conversations.ts';
import { AppError } from '../errors.ts';
import type { SessionClaim } from './sessions.ts';

export interface ConversationsService {
  /**
   * Returns the conversation of the user behind a verified token, one message a line, checking the session in
   * the same read: throws invalid_token when it is not live, not_found when the user has no conversation.
   */
  readConversationOfSession(claim: SessionClaim): Promise<{ username: string; conversation: string }>;
}

/** Builds read access to each user's own conversation. */
export function createConversationsService(deps: {
  conversations: ConversationsRepository;
}): ConversationsService {
  return {
    async readConversationOfSession({ sessionId, userId, now, idleSince }) {
      const found = await deps.conversations.findConversationOfLiveSession(sessionId, userId, now, idleSince);
      if (!found) throw new AppError('invalid_token', 'Could not validate credentials');
      if (!found.messages) throw new AppError('not_found', 'Conversation not found');
      return {
        username: found.username,
        conversation: found.messages.map((message) => message.body).join('\n'),
      };
    },
  };
}
