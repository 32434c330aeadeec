import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ConversationsService } from '../../services/conversations.ts';
import { requireScope } from '../authenticate.ts';
import { ConversationResponse, DetailResponse, ForbiddenResponse } from '../schemas.ts';

export const conversationRoutes: FastifyPluginAsyncTypebox<{ conversations: ConversationsService }> = async (
  app,
  { conversations },
) => {
  app.get(
    '/conversation',
    {
      schema: {
        summary: "Read the current user's conversation",
        description:
          "The seed's shape: the newest 50 messages of the conversation, oldest first, one a line (all of them: GET /conversation/messages, a page at a time).",
        tags: ['conversation'],
        security: [{ OAuth2PasswordBearer: ['conversation:read'] }],
        response: { 200: ConversationResponse, 401: DetailResponse, 403: ForbiddenResponse },
      },
      onRequest: requireScope('conversation:read'),
    },
    async (request) => {
      const { username, conversation } = await conversations.readConversationOfSession(request.claim!);
      return { conversation, current_user: username };
    },
  );
};
