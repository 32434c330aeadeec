import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ConversationsService } from '../../services/conversations.ts';
import { ConversationResponse, DetailResponse } from '../schemas.ts';

export const conversationRoutes: FastifyPluginAsyncTypebox<{ conversations: ConversationsService }> = async (
  app,
  { conversations },
) => {
  app.get(
    '/conversation',
    {
      schema: {
        summary: "Read the current user's conversation",
        tags: ['conversation'],
        security: [{ OAuth2PasswordBearer: [] }],
        response: { 200: ConversationResponse, 401: DetailResponse },
      },
    },
    async (request) => {
      const { username, conversation } = await conversations.readConversationOfSession(request.claim!);
      return { conversation, current_user: username };
    },
  );
};
