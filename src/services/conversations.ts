import type { ConversationsRepository } from '../db/conversations.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import { isClaimedSessionLive, type SessionClaim, type SessionPolicy } from './session-state.ts';

export interface ConversationsService {
  /**
   * Returns the conversation of the user behind a verified access token, one message a line, reading the claimed
   * session in the same round trip: throws invalid_token when it is not live, not_found when there is no conversation.
   */
  readConversationOfSession(claim: SessionClaim): Promise<{ username: string; conversation: string }>;
}

/** Builds read access to each user's own conversation. */
export function createConversationsService(deps: {
  conversations: ConversationsRepository;
  clock: Clock;
  policy: SessionPolicy;
}): ConversationsService {
  return {
    async readConversationOfSession(claim) {
      const found = await deps.conversations.findConversationOfSession(claim.sessionId);
      if (!found || !isClaimedSessionLive(claim, found.session, deps.clock.now(), deps.policy)) {
        throw new AppError('invalid_token', 'Could not validate credentials');
      }
      if (!found.messages) throw new AppError('not_found', 'Conversation not found');
      return {
        username: found.username,
        conversation: found.messages.map((message) => message.body).join('\n'),
      };
    },
  };
}
