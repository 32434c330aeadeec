import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { EmailFlowsService } from '../../services/email-flows.ts';
import { requestContext } from '../request-context.ts';
import {
  AcceptedResponse,
  CeremonyOptionsResponse,
  CodedErrorResponse,
  ConflictResponse,
  DetailResponse,
  EmailAddressBody,
  EmailVerificationBody,
  EmailVerifiedResponse,
  InvalidOneTimeTokenResponse,
  PasswordResetBody,
  PasswordResetOptionsBody,
  ResetRefusalResponse,
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
          'An account with second factors (an authenticator app, a passkey that is not suspect) also needs exactly ' +
          'one of them: otp, recovery_code, or challenge_id (from POST /password/reset/webauthn/options) with ' +
          'webauthn_response. Without one, 400 second_factor_required with mfa_methods, the methods the account has; ' +
          'a wrong, replayed or locked-out one (R13), or several, 400 invalid_second_factor. Either way the link ' +
          'stays usable.',
        tags: ['password reset'],
        body: PasswordResetBody,
        response: {
          204: Type.Null(),
          400: Type.Union([InvalidOneTimeTokenResponse, ResetRefusalResponse]),
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request, reply) => {
      const { token, new_password: newPassword, otp, recovery_code: recoveryCode } = request.body;
      const challengeId = request.body.challenge_id || undefined;
      const response = request.body.webauthn_response || undefined;
      await emailFlows.resetPassword(token, newPassword, requestContext(request, reply), {
        otp: otp || undefined,
        recoveryCode: recoveryCode || undefined,
        // Half an assertion is still a proof given, and refused as a wrong one.
        webauthn:
          challengeId === undefined && response === undefined
            ? undefined
            : { challengeId: challengeId ?? '', response },
      });
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/password/reset/webauthn/options',
    {
      schema: {
        summary:
          "Start the passkey proof of a password reset with the mailed link's token (which stays unspent)",
        description:
          "Answers options listing the account's passkeys (user verification required; 5 minutes, once) for " +
          'navigator.credentials.get() (startAuthentication of @simplewebauthn/browser); then POST /password/reset ' +
          'with the token, challenge_id and webauthn_response. A bad, spent or expired token, 400 invalid_token as ' +
          'the reset; an account without a usable passkey, 400 no_passkey. Counted as a token submission (R11) and ' +
          'throttled as the public passkey options (R14).',
        tags: ['password reset'],
        body: PasswordResetOptionsBody,
        response: {
          200: CeremonyOptionsResponse,
          400: Type.Union([InvalidOneTimeTokenResponse, CodedErrorResponse]),
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request, reply) => {
      const { challengeId, options } = await emailFlows.resetPasskeyOptions(
        request.body.token,
        requestContext(request, reply),
      );
      return { challenge_id: challengeId, options };
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
