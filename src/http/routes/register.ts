import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { AccountsService } from '../../services/accounts.ts';
import { ConflictResponse, RegisterBody, UserResponse, ValidationErrorResponse } from '../schemas.ts';

const DIGITS = /^-?\d+$/;

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
        // FastAPI (pydantic lax mode) takes "42" for an integer, and seed clients send it; nothing else is coerced.
        preValidation: async (request) => {
          const body = request.body as Record<string, unknown> | null;
          if (
            body &&
            typeof body === 'object' &&
            typeof body.age === 'string' &&
            DIGITS.test(body.age.trim())
          ) {
            body.age = Number(body.age.trim());
          }
        },
      },
      async (request) => {
        const { username, email, password, age, level } = request.body;
        const user = await accounts.registerUser({ username, email, password, age, level });
        request.log.info({ event: 'user_registered', userId: user.id }, 'user registered');
        return { id: user.id, username: user.username, email: user.email, age: user.age, level: user.level };
      },
    );
  }
};
