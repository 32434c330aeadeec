import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { AccountsService } from '../../services/accounts.ts';
import type { Throttle } from '../../services/throttle.ts';
import { clientGone, requestContext } from '../request-context.ts';
import {
  acceptDigitStringAge,
  ConflictResponse,
  DetailResponse,
  RegisterBody,
  toUserResponse,
  UserResponse,
  ValidationErrorResponse,
} from '../schemas.ts';

export const registerRoutes: FastifyPluginAsyncTypebox<{
  accounts: AccountsService;
  throttle?: Throttle | undefined;
}> = async (app, { accounts, throttle }) => {
  if (throttle) {
    // Before the body is even read: every attempt counts (R6), and a refused one costs no parsing or hashing.
    app.addHook('onRequest', (request) => throttle.admitRegistration(requestContext(request)));
  }
  for (const url of ['/register/', '/register']) {
    app.post(
      url,
      {
        config: { isMostlyHashing: true },
        schema: {
          summary: 'Register a user',
          tags: ['accounts'],
          hide: url === '/register',
          body: RegisterBody,
          response: {
            200: UserResponse,
            409: ConflictResponse,
            422: ValidationErrorResponse,
            429: DetailResponse,
          },
        },
        preValidation: acceptDigitStringAge,
      },
      async (request, reply) => {
        const { username, email, password, age, level } = request.body;
        const context = requestContext(request);
        const user = await accounts.registerUser({ username, email, password, age, level }, context, {
          signal: clientGone(reply),
        });
        context.audit('user_registered', { userId: user.id });
        return toUserResponse(user);
      },
    );
  }
};
