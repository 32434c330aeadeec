import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import Type from 'typebox';
import { ROLES } from '../../domain/user.ts';
import type { OperatorContext, OperatorService } from '../../services/operators.ts';
import { auditEventRecord, sessionRecord } from '../../services/records.ts';
import { requireScope } from '../authenticate.ts';
import { requestContext } from '../request-context.ts';
import {
  ActivityQuery,
  ActivityResponse,
  AdminSessionListResponse,
  AdminUserDetailsResponse,
  AdminUserListQuery,
  AdminUserPageResponse,
  AdminUserParams,
  AdminUserResponse,
  acceptDigitStringLimit,
  DetailResponse,
  EndedSessionsResponse,
  toAdminUserResponse,
  UnlockResponse,
  ValidationErrorResponse,
} from '../schemas.ts';

const DEFAULT_USER_PAGE_SIZE = 50;
const DEFAULT_EVENT_PAGE_SIZE = 20;

const admin = {
  tags: ['admin'],
  // The OpenAPI document names the scope these routes need; only users with the admin role are granted it.
  security: [{ OAuth2PasswordBearer: ['admin'] }],
};
const refusals = { 403: DetailResponse, 404: DetailResponse, 422: ValidationErrorResponse };

const RoleParams = Type.Object({ ...AdminUserParams.properties, role: Type.Enum([...ROLES]) });
const SessionParams = Type.Object({
  ...AdminUserParams.properties,
  sessionId: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
});

/**
 * The operator service over HTTP, for callers whose account has the `admin` role and whose token was issued with
 * the `admin` scope. Registered inside a requireLiveSession scope: request.auth is set.
 */
export const adminRoutes: FastifyPluginAsyncTypebox<{ operators: OperatorService }> = async (
  app,
  { operators },
) => {
  // Under requireLiveSession the token's scopes have already lost `admin` if the user no longer holds the role.
  app.addHook('onRequest', requireScope('admin'));

  const contextOf = (request: FastifyRequest): OperatorContext => ({
    actor: { kind: 'admin', userId: request.auth!.user.id },
    audit: requestContext(request).audit,
  });
  const target = (params: { id: string }) => ({ id: Number(params.id) });

  app.get(
    '/admin/users',
    {
      schema: {
        summary: 'List users in id order, a page at a time, optionally searching username and email',
        ...admin,
        querystring: AdminUserListQuery,
        response: { 200: AdminUserPageResponse, ...refusals },
      },
      preValidation: acceptDigitStringLimit,
    },
    async (request) => {
      const { search, limit, cursor } = request.query;
      const page = await operators.listUsers({
        limit: limit ?? DEFAULT_USER_PAGE_SIZE,
        ...(search !== undefined ? { search } : {}),
        ...(cursor !== undefined ? { cursor } : {}),
      });
      return { users: page.users.map(toAdminUserResponse), next: page.next ?? null };
    },
  );

  app.get(
    '/admin/users/:id',
    {
      schema: {
        summary: 'Read an account with its roles, status, live sessions and last login',
        ...admin,
        params: AdminUserParams,
        response: { 200: AdminUserDetailsResponse, ...refusals },
      },
    },
    async (request) => {
      const details = await operators.showUser(target(request.params), contextOf(request));
      return {
        ...toAdminUserResponse(details.user),
        live_sessions: details.liveSessions,
        last_login_at: details.lastLoginAt?.toISOString() ?? null,
      };
    },
  );

  app.post(
    '/admin/users/:id/disable',
    {
      schema: {
        summary: 'Disable an account: it cannot log in, and its sessions end at once',
        ...admin,
        params: AdminUserParams,
        response: { 200: AdminUserResponse, ...refusals },
      },
    },
    async (request) =>
      toAdminUserResponse((await operators.disableUser(target(request.params), contextOf(request))).user),
  );

  app.post(
    '/admin/users/:id/enable',
    {
      schema: {
        summary: 'Let a disabled account log in again',
        ...admin,
        params: AdminUserParams,
        response: { 200: AdminUserResponse, ...refusals },
      },
    },
    async (request) =>
      toAdminUserResponse((await operators.enableUser(target(request.params), contextOf(request))).user),
  );

  app.post(
    '/admin/users/:id/unlock',
    {
      schema: {
        summary:
          'Forget the failed logins counted against the account (login throttling R2 and R3) and its second-factor lock (R13)',
        ...admin,
        params: AdminUserParams,
        response: { 200: UnlockResponse, ...refusals },
      },
    },
    async (request) => {
      const { outcome } = await operators.unlockUser(target(request.params), contextOf(request));
      return { unlocked: outcome === 'cleared' };
    },
  );

  app.delete(
    '/admin/users/:id',
    {
      schema: {
        summary: 'Delete an account with its conversation and sessions',
        ...admin,
        params: AdminUserParams,
        response: { 204: Type.Null(), ...refusals },
      },
    },
    async (request, reply) => {
      await operators.deleteUser(target(request.params), contextOf(request));
      return reply.code(204).send(null);
    },
  );

  app.put(
    '/admin/users/:id/roles/:role',
    {
      schema: {
        summary: 'Grant a role',
        ...admin,
        params: RoleParams,
        response: { 200: AdminUserResponse, ...refusals },
      },
    },
    async (request) => {
      const { role } = request.params;
      const change = await operators.grantRole(target(request.params), role, contextOf(request));
      return toAdminUserResponse(change.user);
    },
  );

  app.delete(
    '/admin/users/:id/roles/:role',
    {
      schema: {
        summary: 'Revoke a role; tokens of the account lose it at their next request',
        ...admin,
        params: RoleParams,
        response: { 200: AdminUserResponse, ...refusals },
      },
    },
    async (request) => {
      const { role } = request.params;
      const change = await operators.revokeRole(target(request.params), role, contextOf(request));
      return toAdminUserResponse(change.user);
    },
  );

  app.get(
    '/admin/users/:id/sessions',
    {
      schema: {
        summary: "An account's live sessions, newest first",
        ...admin,
        params: AdminUserParams,
        response: { 200: AdminSessionListResponse, ...refusals },
      },
    },
    async (request) => {
      const { sessions } = await operators.listSessions(target(request.params), contextOf(request));
      return { sessions: sessions.map(sessionRecord) };
    },
  );

  app.delete(
    '/admin/users/:id/sessions',
    {
      schema: {
        summary: 'End every session of an account (and forget its trusted clients)',
        ...admin,
        params: AdminUserParams,
        response: { 200: EndedSessionsResponse, ...refusals },
      },
    },
    async (request) => {
      const { ended } = await operators.revokeSessions(target(request.params), undefined, contextOf(request));
      return { ended };
    },
  );

  app.delete(
    '/admin/users/:id/sessions/:sessionId',
    {
      schema: {
        summary: 'End one live session of an account',
        ...admin,
        params: SessionParams,
        response: { 204: Type.Null(), ...refusals },
      },
    },
    async (request, reply) => {
      await operators.revokeSessions(target(request.params), request.params.sessionId, contextOf(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/admin/users/:id/audit-events',
    {
      schema: {
        summary: "An account's audit events, newest first",
        ...admin,
        params: AdminUserParams,
        querystring: ActivityQuery,
        response: { 200: ActivityResponse, ...refusals },
      },
      preValidation: acceptDigitStringLimit,
    },
    async (request) => {
      const page = await operators.listAuditEvents(
        target(request.params),
        { limit: request.query.limit ?? DEFAULT_EVENT_PAGE_SIZE, before: request.query.before },
        contextOf(request),
      );
      return { events: page.events.map(auditEventRecord), next: page.next ?? null };
    },
  );
};
