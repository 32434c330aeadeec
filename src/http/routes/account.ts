import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import type { ListedSession } from '../../domain/session.ts';
import type { AccountsService } from '../../services/accounts.ts';
import { sessionRecord } from '../../services/records.ts';
import type { SessionsService } from '../../services/sessions.ts';
import { requestContext } from '../request-context.ts';
import {
  AccountDeletionBody,
  acceptDigitStringAge,
  CodedErrorResponse,
  ConflictResponse,
  DetailResponse,
  EmailChangeBody,
  OwnUserResponse,
  PasswordChangeBody,
  ProfileUpdateBody,
  SessionListResponse,
  toOwnUserResponse,
  ValidationErrorResponse,
} from '../schemas.ts';
import { isWebClient, type WebClientCookies } from '../web-client.ts';

const secured = { security: [{ OAuth2PasswordBearer: [] }] };

const toSessionResponse = (session: ListedSession, currentSessionId: string) => ({
  ...sessionRecord(session),
  current: session.id === currentSessionId,
});

export const accountRoutes: FastifyPluginAsyncTypebox<{
  accounts: AccountsService;
  sessions: SessionsService;
  cookies: WebClientCookies;
}> = async (app, { accounts, sessions, cookies }) => {
  /**
   * After a sign-out of the web client, its refresh cookie goes unless another session, still live, holds it: the
   * cookie is the browser's, and another tab may have signed in since. Found from outside: a tab still showing the
   * first account signed out, the cookie of the account another tab had signed in went with it, and that session
   * lived on with nothing holding its token.
   */
  const forgetCookiesOfEndedSession = async (
    request: FastifyRequest,
    reply: FastifyReply,
    device = false,
  ) => {
    if (!isWebClient(request)) return;
    const held = cookies.refreshTokenOf(request);
    if (held && (await sessions.isRefreshTokenLive(held))) return;
    cookies.forgetRefreshToken(request, reply);
    if (device) cookies.forgetDeviceToken(request, reply);
  };
  app.post(
    '/logout',
    {
      schema: {
        summary: 'End the current session',
        tags: ['sessions'],
        ...secured,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      const { user, sessionId } = request.auth!;
      await sessions.revokeSession(sessionId, 'logout');
      requestContext(request).audit('logout', { userId: user.id, sessionId });
      // The device cookie stays: the browser remains a known client of the account at its next sign-in.
      await forgetCookiesOfEndedSession(request, reply);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/logout/all',
    {
      schema: {
        summary: 'End every session of the user',
        tags: ['sessions'],
        ...secured,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      const { user } = request.auth!;
      const ended = await sessions.revokeEverySession(user.id, 'logout_all');
      requestContext(request).audit('logout_all', { userId: user.id, ended });
      await forgetCookiesOfEndedSession(request, reply);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/users/me',
    {
      schema: {
        summary: 'Read your account',
        tags: ['account'],
        ...secured,
        response: { 200: OwnUserResponse },
      },
    },
    async (request) => toOwnUserResponse(request.auth!.user),
  );

  app.patch(
    '/users/me',
    {
      schema: {
        summary:
          'Change your age or level, or your email: a new address stays pending_email until the link mailed to it is used',
        tags: ['account'],
        ...secured,
        body: ProfileUpdateBody,
        response: {
          200: OwnUserResponse,
          409: ConflictResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
      preValidation: acceptDigitStringAge,
    },
    async (request) => {
      const { email, current_password: currentPassword, age, level } = request.body;
      const user = await accounts.updateProfile(
        request.auth!.user.id,
        {
          sessionId: request.auth!.sessionId,
          ...(email !== undefined ? { email } : {}),
          ...(currentPassword !== undefined ? { currentPassword } : {}),
          ...(age !== undefined ? { age } : {}),
          ...(level !== undefined ? { level } : {}),
        },
        requestContext(request),
      );
      return toOwnUserResponse(user);
    },
  );

  // The same change as PATCH /users/me {email, current_password}, under the name peers give it (a dedicated route
  // whose password is not optional).
  app.post(
    '/users/me/email',
    {
      schema: {
        summary: 'Change your email: the new address stays pending_email until the link mailed to it is used',
        tags: ['account'],
        ...secured,
        body: EmailChangeBody,
        response: {
          200: OwnUserResponse,
          400: CodedErrorResponse,
          409: ConflictResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request) => {
      const user = await accounts.updateProfile(
        request.auth!.user.id,
        {
          sessionId: request.auth!.sessionId,
          email: request.body.new_email,
          currentPassword: request.body.password,
        },
        requestContext(request),
      );
      return toOwnUserResponse(user);
    },
  );

  app.post(
    '/users/me/password',
    {
      schema: {
        summary: 'Change your password; every other session ends',
        tags: ['account'],
        ...secured,
        body: PasswordChangeBody,
        response: { 204: Type.Null(), 422: ValidationErrorResponse },
      },
    },
    async (request, reply) => {
      const { user, sessionId } = request.auth!;
      await accounts.changePassword(
        user.id,
        {
          currentPassword: request.body.current_password,
          newPassword: request.body.new_password,
          keepSessionId: sessionId,
        },
        requestContext(request),
      );
      requestContext(request).audit('password_changed', { userId: user.id });
      return reply.code(204).send(null);
    },
  );

  app.delete(
    '/users/me',
    {
      schema: {
        summary: 'Delete your account, conversation and sessions',
        tags: ['account'],
        ...secured,
        body: AccountDeletionBody,
        response: { 204: Type.Null() },
      },
    },
    async (request, reply) => {
      const { user, sessionId } = request.auth!;
      await accounts.deleteAccount(user.id, request.body.password, sessionId, requestContext(request));
      // The name stays with the events that outlive the account, for whoever investigates what happened to it.
      requestContext(request).audit('user_deleted', { userId: user.id, username: user.username });
      await forgetCookiesOfEndedSession(request, reply, true);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/users/me/sessions',
    {
      schema: {
        summary: 'List your live sessions',
        tags: ['sessions'],
        ...secured,
        response: { 200: SessionListResponse },
      },
    },
    async (request) => {
      const { user, sessionId } = request.auth!;
      const live = await sessions.listSessions(user.id);
      return { sessions: live.map((session) => toSessionResponse(session, sessionId)) };
    },
  );

  app.delete(
    '/users/me/sessions/:id',
    {
      schema: {
        summary: 'End one of your sessions',
        tags: ['sessions'],
        ...secured,
        params: Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }) }),
        response: { 204: Type.Null(), 404: DetailResponse },
      },
    },
    async (request, reply) => {
      const { user } = request.auth!;
      await sessions.endUserSession(user.id, request.params.id);
      requestContext(request).audit('session_ended', { userId: user.id, sessionId: request.params.id });
      return reply.code(204).send(null);
    },
  );
};
