import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { AuditTrail } from '../../services/audit.ts';
import { ownActivityRecord } from '../../services/records.ts';
import {
  ActivityQuery,
  ActivityResponse,
  acceptDigitStringLimit,
  ValidationErrorResponse,
} from '../schemas.ts';

const DEFAULT_PAGE_SIZE = 20;

export const activityRoutes: FastifyPluginAsyncTypebox<{ auditTrail: AuditTrail }> = async (
  app,
  { auditTrail },
) => {
  app.get(
    '/users/me/activity',
    {
      schema: {
        summary: 'Your security events (logins, failed logins, sessions, changes), newest first',
        description:
          'Pages with `limit` (1 to 100, default 20) and `before` (the `next` of the previous page). Failed logins ' +
          'against your account are listed with the address they came from.',
        tags: ['account'],
        security: [{ OAuth2PasswordBearer: [] }],
        querystring: ActivityQuery,
        response: { 200: ActivityResponse, 422: ValidationErrorResponse },
      },
      preValidation: acceptDigitStringLimit,
    },
    async (request) => {
      const page = await auditTrail.listActivity(request.auth!.user.id, {
        limit: request.query.limit ?? DEFAULT_PAGE_SIZE,
        before: request.query.before,
      });
      return { events: page.events.map(ownActivityRecord), next: page.next ?? null };
    },
  );
};
