import formbody from '@fastify/formbody';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppError } from '../../errors.ts';
import type { AccountsService } from '../../services/accounts.ts';
import type { SessionsService } from '../../services/sessions.ts';
import { OAuthErrorResponse, TokenRequestBody, TokenResponse } from '../schemas.ts';

const CREDENTIAL_PARAMETERS = ['username', 'password', 'refresh_token', 'client_secret', 'access_token'];

export const tokenRoutes: FastifyPluginAsyncTypebox<{
  accounts: AccountsService;
  sessions: SessionsService;
}> = async (app, { accounts, sessions }) => {
  await app.register(formbody);

  app.post(
    '/token',
    {
      config: { errorStyle: 'oauth' },
      schema: {
        summary: 'Exchange a username and password for an access token (OAuth 2.0 password grant)',
        description:
          'Accepts application/x-www-form-urlencoded (RFC 6749 §4.3.2, as OAuth2 clients and Swagger UI send it) ' +
          'or JSON. grant_type may be omitted (FastAPI compatibility) or be "password".',
        tags: ['tokens'],
        body: {
          content: {
            'application/x-www-form-urlencoded': { schema: TokenRequestBody },
            'application/json': { schema: TokenRequestBody },
          },
        },
        response: { 200: TokenResponse, 400: OAuthErrorResponse },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
      // RFC 6749 §3.2 and ASVS 14.2.1: credentials never travel in the URL.
      const query = request.query as Record<string, unknown>;
      if (CREDENTIAL_PARAMETERS.some((name) => name in query)) {
        throw new AppError('invalid_request', 'Credentials must be sent in the request body, not the URL');
      }
      const body: TokenRequestBody = request.body ?? {};
      // RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
      const grantType = body.grant_type || 'password';
      if (grantType !== 'password') {
        throw new AppError('unsupported_grant_type', 'Only the password grant is supported');
      }
      const username = body.username?.trim();
      const password = body.password;
      if (!username || !password) {
        throw new AppError('invalid_request', 'The username and password parameters are required');
      }
      const user = await accounts.verifyCredentials(username, password);
      if (!user) {
        request.log.info({ event: 'login_failed', username: username.slice(0, 64) }, 'login failed');
        throw new AppError('invalid_grant', 'Incorrect username or password');
      }
      request.log.info({ event: 'login_succeeded', userId: user.id }, 'login succeeded');
      const grant = await sessions.issueTokens(user);
      return {
        access_token: grant.accessToken,
        token_type: grant.tokenType,
        expires_in: grant.expiresInSeconds,
        scope: grant.scope,
      };
    },
  );
};
