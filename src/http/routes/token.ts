import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import { AppError } from '../../errors.ts';
import type { LoginService, PasswordGrantResult } from '../../services/login.ts';
import type { LoginSecondFactorProof } from '../../services/mfa.ts';
import type { RequestContext } from '../../services/request-context.ts';
import { ACCOUNT_DISABLED } from '../../services/session-state.ts';
import type { SessionsService, TokenGrant } from '../../services/sessions.ts';
import { registerFormParser, registerMultipartParser } from '../body-parsers.ts';
import { requestContext } from '../request-context.ts';
import {
  MfaRequiredResponse,
  OAuthErrorResponse,
  RevokeRequestBody,
  TokenRequestBody,
  TokenResponse,
} from '../schemas.ts';
import { routedPath } from '../unrouted-requests.ts';
import { isWebClient, type WebClientCookies } from '../web-client.ts';

const CREDENTIAL_PARAMETERS = [
  'username',
  'password',
  'refresh_token',
  'client_secret',
  'access_token',
  'token',
  'device_token',
  'mfa_token',
  'otp',
  'recovery_code',
];
const MFA_GRANT = 'urn:gatehouse:params:oauth:grant-type:mfa';
const FORM_OR_JSON = (schema: typeof TokenRequestBody | typeof RevokeRequestBody) => ({
  content: {
    'application/x-www-form-urlencoded': { schema },
    'application/json': { schema },
  },
});

const toTokenResponse = (grant: TokenGrant, deviceToken?: string): TokenResponse => ({
  access_token: grant.accessToken,
  token_type: grant.tokenType,
  expires_in: grant.expiresInSeconds,
  refresh_token: grant.refreshToken,
  scope: grant.scope,
  ...(deviceToken === undefined ? {} : { device_token: deviceToken }),
});

/** The one second factor an MFA grant presents; undefined when none or more than one. */
function secondFactorOf(body: TokenRequestBody): LoginSecondFactorProof | undefined {
  const otp = body.otp || undefined;
  const recoveryCode = body.recovery_code || undefined;
  const challengeId = body.challenge_id || undefined;
  const webauthnResponse = body.webauthn_response || undefined;
  const given = [otp, recoveryCode, challengeId ?? webauthnResponse].filter((value) => value !== undefined);
  if (given.length !== 1) return undefined;
  if (otp !== undefined) return { otp };
  if (recoveryCode !== undefined) return { recoveryCode };
  if (challengeId === undefined || webauthnResponse === undefined) return undefined;
  return { webauthn: { challengeId, response: webauthnResponse } };
}

function answerPasswordGrant(result: PasswordGrantResult): TokenResponse {
  switch (result.outcome) {
    case 'granted':
      return toTokenResponse(result.tokens, result.deviceToken);
    case 'refused':
      throw new AppError('invalid_grant', 'Incorrect username or password');
    case 'disabled':
      throw new AppError('invalid_grant', ACCOUNT_DISABLED);
    case 'email_not_verified':
      throw new AppError('invalid_grant', 'Email not verified');
    case 'locked':
      throw new AppError('temporarily_unavailable', 'Login throttled', {
        retryAfterSeconds: result.retryAfterSeconds,
      });
    case 'second_factor_required':
      throw new AppError('mfa_required', 'A second factor is required', {
        mfaToken: result.mfaToken,
        mfaMethods: result.methods,
      });
  }
}

export const WEBAUTHN_GRANT = 'urn:gatehouse:params:oauth:grant-type:webauthn';

const TOKEN_PATH = '/token';
const REVOKE_PATH = '/revoke';
const TOKEN_ENDPOINT_PATHS = new Set([TOKEN_PATH, REVOKE_PATH]);

/**
 * RFC 6749 §5.1: answers of the token endpoint carry `Cache-Control: no-store` and `Pragma: no-cache`, all of them:
 * a wrong method's 405 and a CORS preflight too, which no hook of the routes' own scope reaches. Registered at the
 * root, before the CORS plugin answers preflights.
 */
export function registerTokenEndpointHeaders(app: FastifyInstance): void {
  app.addHook('onRequest', (request, reply, done) => {
    if (TOKEN_ENDPOINT_PATHS.has(routedPath(request))) {
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
    }
    done();
  });
}

/** The web client's answer: the refresh and device tokens go into cookies, never into what script can read. */
function answerInCookies(
  response: TokenResponse,
  cookies: WebClientCookies,
  request: FastifyRequest,
  reply: FastifyReply,
): TokenResponse {
  const { refresh_token: refreshToken, device_token: deviceToken, ...readable } = response;
  if (refreshToken !== undefined) cookies.keepRefreshToken(request, reply, refreshToken);
  if (deviceToken !== undefined) cookies.keepDeviceToken(request, reply, deviceToken);
  return readable;
}

export const tokenRoutes: FastifyPluginAsyncTypebox<{
  login: LoginService;
  sessions: SessionsService;
  cookies: WebClientCookies;
  /** Whether passkeys are wired: without them the passwordless grant is unsupported. */
  passwordless?: boolean | undefined;
}> = async (app, { login, sessions, cookies, passwordless }) => {
  registerFormParser(app);
  registerMultipartParser(app);

  const refreshFromCookie = async (
    request: FastifyRequest,
    reply: FastifyReply,
    context: RequestContext,
    scope: string | undefined,
  ) => {
    const refreshToken = cookies.refreshTokenOf(request);
    if (!refreshToken) throw new AppError('invalid_request', 'No session cookie: sign in');
    try {
      const grant = await login.refreshTokenGrant(refreshToken, context, scope);
      return answerInCookies(toTokenResponse(grant), cookies, request, reply);
    } catch (error) {
      // A cookie that can never refresh again is dropped, so that the page stops offering it.
      if (error instanceof AppError && error.code === 'invalid_grant')
        cookies.forgetRefreshToken(request, reply);
      throw error;
    }
  };

  // RFC 6749 §3.2 and ASVS 14.2.1: credentials never travel in the URL.
  // RFC 6749 §3.2: a parameter sent without a value is treated as omitted; in JSON, that is null. The seed's own
  // LoginData(...).dict() sends its unset fields so, and the seed logs such a body in. (A form's empty copies of a
  // parameter: its parsers, body-parsers.ts.)
  app.addHook('preValidation', (request, _reply, done) => {
    const body = request.body;
    if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
      for (const [name, value] of Object.entries(body)) {
        if (value === null) delete (body as Record<string, unknown>)[name];
      }
    }
    done();
  });
  app.addHook('onRequest', async (request) => {
    const query = request.query as Record<string, unknown>;
    if (CREDENTIAL_PARAMETERS.some((name) => name in query)) {
      throw new AppError('invalid_request', 'Credentials must be sent in the request body, not the URL');
    }
  });

  app.post(
    TOKEN_PATH,
    {
      config: { errorStyle: 'oauth', isMostlyHashing: true },
      schema: {
        summary:
          'Get tokens: password grant (log in), the MFA grant (its second factor) or refresh_token grant (stay logged in)',
        description:
          'Accepts application/x-www-form-urlencoded (RFC 6749, as OAuth2 clients and Swagger UI send it), multipart/form-data (as FastAPI reads Form fields; curl -F) or JSON. ' +
          'grant_type may be omitted (FastAPI compatibility: password) or be "password" or "refresh_token". ' +
          'Every refresh rotates the refresh token; a spent one presented again after the grace window ends the session. ' +
          '`scope` (space-separated) narrows the token: conversation:read, conversation:write (both by default), and ' +
          "admin for users with the admin role, only when asked for. A refresh may narrow the login's scope, never widen it. " +
          'An account with a second factor answers a right password with 403 mfa_required, an mfa_token and mfa_methods ' +
          `(otp, recovery_code, webauthn); continue with grant_type=${MFA_GRANT}, the mfa_token and exactly one of otp, ` +
          'recovery_code, or challenge_id with webauthn_response. Any refusal of that grant is 400 invalid_grant. ' +
          'Access tokens carry amr (RFC 8176: ["pwd"], ["pwd","otp","mfa"], ...) and auth_time, kept through refreshes.',
        tags: ['tokens'],
        body: {
          content: {
            ...FORM_OR_JSON(TokenRequestBody).content,
            // FastAPI reads its Form fields from multipart bodies too, so the seed's clients may send one (curl -F).
            'multipart/form-data': { schema: TokenRequestBody },
          },
        },
        response: {
          200: TokenResponse,
          400: OAuthErrorResponse,
          403: MfaRequiredResponse,
          429: OAuthErrorResponse,
        },
      },
    },
    async (request, reply) => {
      const body: TokenRequestBody = request.body ?? {};
      const context = requestContext(request, reply);
      // RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
      const grantType = body.grant_type || 'password';
      const web = isWebClient(request);
      if (grantType === 'password') {
        const username = body.username?.trim();
        const password = body.password;
        if (!username || !password) {
          throw new AppError('invalid_request', 'The username and password parameters are required');
        }
        if (!web) {
          const deviceToken = body.device_token || undefined;
          return answerPasswordGrant(
            await login.passwordGrant({ username, password, deviceToken, scope: body.scope }, context),
          );
        }
        const deviceToken = cookies.deviceTokenOf(request);
        const result = await login.passwordGrant(
          { username, password, deviceToken, scope: body.scope },
          context,
        );
        return answerInCookies(answerPasswordGrant(result), cookies, request, reply);
      }
      if (grantType === 'refresh_token') {
        // The page's refresh token is its cookie; another in the body would be a second one, silently unread.
        if (web && body.refresh_token)
          throw new AppError(
            'invalid_request',
            "The web client's refresh token is its cookie: send none in the body",
          );
        if (web) return refreshFromCookie(request, reply, context, body.scope);
        if (!body.refresh_token) {
          // The cookie came without the page's header: a cross-site form, or a script that is not the page.
          if (cookies.carriesRefreshCookie(request))
            throw new AppError('cross_site_request', 'Cookie without header');
          throw new AppError('invalid_request', 'The refresh_token parameter is required');
        }
        return toTokenResponse(await login.refreshTokenGrant(body.refresh_token, context, body.scope));
      }
      if (grantType === MFA_GRANT) {
        const proof = secondFactorOf(body);
        if (!body.mfa_token || !proof) {
          throw new AppError(
            'invalid_request',
            'The mfa_token parameter and exactly one of otp, recovery_code or challenge_id with webauthn_response are required',
          );
        }
        const deviceToken = web ? cookies.deviceTokenOf(request) : body.device_token || undefined;
        const { tokens, deviceToken: renewed } = await login.mfaGrant(
          { mfaToken: body.mfa_token, proof, deviceToken },
          context,
        );
        const response = toTokenResponse(tokens, renewed);
        return web ? answerInCookies(response, cookies, request, reply) : response;
      }
      if (grantType === WEBAUTHN_GRANT && passwordless) {
        const challengeId = body.challenge_id;
        const response = body.webauthn_response;
        if (!challengeId || response === undefined || response === '') {
          throw new AppError(
            'invalid_request',
            'The challenge_id and webauthn_response parameters are required',
          );
        }
        const deviceToken = web ? cookies.deviceTokenOf(request) : body.device_token || undefined;
        const { tokens, deviceToken: renewed } = await login.passwordlessGrant(
          { challengeId, response, scope: body.scope, deviceToken },
          context,
        );
        const grant = toTokenResponse(tokens, renewed);
        return web ? answerInCookies(grant, cookies, request, reply) : grant;
      }
      const grants = ['password', 'refresh_token', MFA_GRANT, ...(passwordless ? [WEBAUTHN_GRANT] : [])];
      throw new AppError(
        'unsupported_grant_type',
        `Only the ${grants.slice(0, -1).join(', ')} and ${grants.at(-1)} grants are supported`,
      );
    },
  );

  app.post(
    REVOKE_PATH,
    {
      config: { errorStyle: 'oauth' },
      schema: {
        summary: 'Revoke a refresh token or an access token (RFC 7009): its whole session ends',
        description: 'Answers 200 whether or not the token was known, as RFC 7009 §2.2 requires.',
        tags: ['tokens'],
        body: FORM_OR_JSON(RevokeRequestBody),
        response: { 200: Type.Object({}), 400: OAuthErrorResponse },
      },
    },
    async (request, reply) => {
      const body: RevokeRequestBody = request.body ?? {};
      if (!body.token) throw new AppError('invalid_request', 'The token parameter is required');
      await sessions.revokeToken(body.token, requestContext(request));
      // RFC 7009 §2.2: the body is ignored by clients; an empty object keeps every response JSON.
      return reply.code(200).send({});
    },
  );
};
