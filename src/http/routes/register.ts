import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { AccountsService } from '../../services/accounts.ts';
import { clientGone, requestContext } from '../request-context.ts';
import {
  acceptDigitStringAge,
  ConflictResponse,
  RegisterBody,
  toUserResponse,
  UserResponse,
  ValidationErrorResponse,
} from '../schemas.ts';

export const registerRoutes: FastifyPluginAsyncTypebox<{ accounts: AccountsService }> = async (
  app,
  { accounts },
) => {
  for (const url of ['/register/', '/register']) {
    app.post(
      url,
      {
        schema: {
          summary: 'Register a user',
          tags: ['accounts'],
          hide: url === '/register',
          body: RegisterBody,
          response: { 200: UserResponse, 409: ConflictResponse, 422: ValidationErrorResponse },
        },
        preValidation: acceptDigitStringAge,
      },
      async (request, reply) => {
        const { username, email, password, age, level } = request.body;
        const user = await accounts.registerUser(
          { username, email, password, age, level },
          { signal: clientGone(reply) },
        );
        requestContext(request).audit('user_registered', { userId: user.id });
        return toUserResponse(user);
      },
    );
  }
};
