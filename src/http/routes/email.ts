import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { EmailFlowsService } from '../../services/email-flows.ts';
import { requestContext } from '../request-context.ts';
import {
  AcceptedResponse,
  CodedErrorResponse,
  ConflictResponse,
  DetailResponse,
  EmailAddressBody,
  EmailVerificationBody,
  EmailVerifiedResponse,
  InvalidOneTimeTokenResponse,
  PasswordResetBody,
  ValidationErrorResponse,
} from '../schemas.ts';

const secured = { security: [{ OAuth2PasswordBearer: [] }] };

/** The public routes of email verification and password reset: each answers without saying who has an account. */
export const emailRoutes: FastifyPluginAsyncTypebox<{ emailFlows: EmailFlowsService }> = async (
  app,
  { emailFlows },
) => {
  app.post(
    '/email/verify',
    {
      schema: {
        summary:
          'Verify an email address with the token of a mailed link; ends every session, signs nobody in',
        tags: ['email'],
        body: EmailVerificationBody,
        response: {
          200: EmailVerifiedResponse,
          400: InvalidOneTimeTokenResponse,
          409: ConflictResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request) => {
      const user = await emailFlows.verifyEmail(request.body.token, requestContext(request));
      return { email: user.email, email_verified: true as const };
    },
  );

  app.post(
    '/email/verification/resend',
    {
      schema: {
        summary:
          'Mail a new verification link to an unverified account with this address (202 for any address)',
        tags: ['email'],
        body: EmailAddressBody,
        response: { 202: AcceptedResponse, 422: ValidationErrorResponse, 429: DetailResponse },
      },
    },
    async (request, reply) => {
      await emailFlows.resendVerification(request.body.email, requestContext(request));
      return reply.code(202).send({});
    },
  );

  app.post(
    '/password/forgot',
    {
      schema: {
        summary: 'Mail a password reset link to the account with this address (202 for any address)',
        tags: ['password reset'],
        body: EmailAddressBody,
        response: { 202: AcceptedResponse, 422: ValidationErrorResponse, 429: DetailResponse },
      },
    },
    async (request, reply) => {
      await emailFlows.forgotPassword(request.body.email, requestContext(request));
      return reply.code(202).send({});
    },
  );

  app.post(
    '/password/reset',
    {
      schema: {
        summary: 'Set a new password with the token of a mailed link; ends every session, signs nobody in',
        description:
          'An account with an authenticator app also needs otp or recovery_code: without one, 400 ' +
          'second_factor_required; a wrong one, 400 invalid_second_factor. Either way the link stays usable.',
        tags: ['password reset'],
        body: PasswordResetBody,
        response: {
          204: Type.Null(),
          400: Type.Union([InvalidOneTimeTokenResponse, CodedErrorResponse]),
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request, reply) => {
      const { token, new_password: newPassword, otp, recovery_code: recoveryCode } = request.body;
      await emailFlows.resetPassword(token, newPassword, requestContext(request), {
        otp: otp || undefined,
        recoveryCode: recoveryCode || undefined,
      });
      return reply.code(204).send(null);
    },
  );
};

/** The routes of email verification that act for the signed-in user; registered behind requireLiveSession. */
export const accountEmailRoutes: FastifyPluginAsyncTypebox<{ emailFlows: EmailFlowsService }> = async (
  app,
  { emailFlows },
) => {
  app.post(
    '/users/me/email/verification',
    {
      schema: {
        summary: 'Mail a verification link to your address (nothing is mailed when it is verified already)',
        tags: ['email'],
        ...secured,
        response: { 202: AcceptedResponse, 429: DetailResponse },
      },
    },
    async (request, reply) => {
      await emailFlows.requestVerification(request.auth!.user, requestContext(request));
      return reply.code(202).send({});
    },
  );
};
