import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  type ConversationMessage,
  type ConversationsService,
  MAX_CONVERSATION_MESSAGES,
} from '../../services/conversations.ts';
import type { Throttle } from '../../services/throttle.ts';
import { requireScope } from '../authenticate.ts';
import { requestContext } from '../request-context.ts';
import {
  acceptDigitStringLimit,
  ConversationFullResponse,
  DetailResponse,
  ForbiddenResponse,
  MessageBody,
  MessageResponse,
  MessagesQuery,
  MessagesResponse,
  ValidationErrorResponse,
} from '../schemas.ts';

const DEFAULT_PAGE_SIZE = 20;

const toMessageResponse = (message: ConversationMessage) => ({
  id: message.id,
  author: message.author,
  text: message.body,
  created_at: message.createdAt.toISOString(),
});

/** The conversation's messages; registered inside a requireLiveSession scope. */
export const messageRoutes: FastifyPluginAsyncTypebox<{
  conversations: ConversationsService;
  throttle?: Throttle | undefined;
}> = async (app, { conversations, throttle }) => {
  app.post(
    '/conversation/messages',
    {
      schema: {
        summary: 'Add a message to your conversation',
        description: `At most ${MAX_CONVERSATION_MESSAGES} messages a conversation, and a rate per user a minute (429 past it).`,
        tags: ['conversation'],
        security: [{ OAuth2PasswordBearer: ['conversation:write'] }],
        body: MessageBody,
        response: {
          201: MessageResponse,
          401: DetailResponse,
          403: ForbiddenResponse,
          409: ConversationFullResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
      onRequest: requireScope('conversation:write'),
    },
    async (request, reply) => {
      // Every post counts (R8), refused or not: a flood of invalid texts costs the same checks.
      await throttle?.admitMessage(request.auth!.user.id, requestContext(request));
      const message = await conversations.postMessage(request.auth!.user.id, request.body.text);
      return reply.code(201).send(toMessageResponse(message));
    },
  );

  app.get(
    '/conversation/messages',
    {
      schema: {
        summary: 'Page through your conversation, newest first',
        description:
          'Pages with `limit` (1 to 100, default 20) and `before` (the `next` of the previous page).',
        tags: ['conversation'],
        security: [{ OAuth2PasswordBearer: ['conversation:read'] }],
        querystring: MessagesQuery,
        response: {
          200: MessagesResponse,
          401: DetailResponse,
          403: ForbiddenResponse,
          422: ValidationErrorResponse,
        },
      },
      onRequest: requireScope('conversation:read'),
      preValidation: acceptDigitStringLimit,
    },
    async (request) => {
      const page = await conversations.listMessages(request.auth!.user.id, {
        limit: request.query.limit ?? DEFAULT_PAGE_SIZE,
        before: request.query.before,
      });
      return { messages: page.messages.map(toMessageResponse), next: page.next ?? null };
    },
  );
};
