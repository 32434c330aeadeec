import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { MfaService } from '../../services/mfa.ts';
import { factorChangeOf, missingField, noBodyIsEmpty, passwordOf } from '../recent-authentication.ts';
import { requestContext } from '../request-context.ts';
import {
  CodedErrorResponse,
  ConflictResponse,
  DetailResponse,
  MfaConfirmBody,
  MfaPasswordBody,
  MfaRegenerateBody,
  MfaRemoveBody,
  MfaStatusResponse,
  RecoveryCodesResponse,
  TotpEnrolmentResponse,
  ValidationErrorResponse,
} from '../schemas.ts';

const secured = { security: [{ OAuth2PasswordBearer: [] }] };

/** The signed-in user's authenticator app and recovery codes; registered behind requireLiveSession. */
export const mfaRoutes: FastifyPluginAsyncTypebox<{
  mfa: MfaService;
  /** How many passkeys the user has; 0 while passkeys are not wired. */
  countPasskeys?: ((userId: number) => Promise<number>) | undefined;
}> = async (app, { mfa, countPasskeys }) => {
  app.get(
    '/users/me/mfa',
    {
      schema: {
        summary: 'Your second factors: the authenticator app, recovery codes left, passkeys',
        tags: ['second factors'],
        ...secured,
        response: { 200: MfaStatusResponse },
      },
    },
    async (request) => {
      const userId = request.auth!.user.id;
      const [status, passkeys] = await Promise.all([mfa.status(userId), countPasskeys?.(userId) ?? 0]);
      return {
        totp: status.totp && {
          status: status.totp.status,
          created_at: status.totp.createdAt.toISOString(),
        },
        recovery_codes_left: status.recoveryCodesLeft,
        passkeys,
      };
    },
  );

  app.post(
    '/users/me/mfa/totp',
    {
      preValidation: noBodyIsEmpty,
      schema: {
        summary: 'Start setting up an authenticator app (pending until confirmed with a code)',
        description:
          'Needs your password and, when the account already has a second factor (a passkey), otp or recovery_code, ' +
          'unless this session signed in with a second factor within 10 minutes (else 401 insufficient_user_authentication, RFC 9470, as without the password). ' +
          'Answers the secret and its otpauth:// URI once; starting again replaces a pending set-up. ' +
          '409 mfa_already_enrolled when an app is active.',
        tags: ['second factors'],
        ...secured,
        body: MfaPasswordBody,
        response: {
          200: TotpEnrolmentResponse,
          400: CodedErrorResponse,
          401: CodedErrorResponse,
          409: ConflictResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request) => {
      const enrolment = await mfa.enrolTotp(
        request.auth!.user.id,
        factorChangeOf(request, request.body),
        requestContext(request),
      );
      return {
        factor_id: enrolment.factorId,
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauthUri,
      };
    },
  );

  app.post(
    '/users/me/mfa/totp/confirm',
    {
      schema: {
        summary:
          'Activate the pending authenticator app with a current code; answers 10 recovery codes, once',
        tags: ['second factors'],
        ...secured,
        body: MfaConfirmBody,
        response: {
          200: RecoveryCodesResponse,
          400: CodedErrorResponse,
          401: CodedErrorResponse,
          404: DetailResponse,
          422: ValidationErrorResponse,
        },
      },
    },
    async (request) => {
      const code = request.body?.code ?? request.body?.otp;
      if (!code) throw missingField('code');
      const { user, sessionId } = request.auth!;
      const codes = await mfa.confirmTotp(user.id, code, requestContext(request), sessionId);
      return { recovery_codes: codes };
    },
  );

  app.delete(
    '/users/me/mfa/totp',
    {
      preValidation: noBodyIsEmpty,
      schema: {
        summary: 'Remove the authenticator app and its recovery codes',
        description:
          'Needs your password and a second factor: otp or recovery_code (else 401 insufficient_user_authentication).',
        tags: ['second factors'],
        ...secured,
        body: MfaRemoveBody,
        response: {
          204: Type.Null(),
          400: CodedErrorResponse,
          401: CodedErrorResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request, reply) => {
      // Without a code, the password is still checked first (invalid_password), then the code asked for.
      await mfa.removeTotp(
        request.auth!.user.id,
        factorChangeOf(request, request.body),
        requestContext(request),
      );
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/users/me/mfa/recovery-codes',
    {
      preValidation: noBodyIsEmpty,
      schema: {
        summary: 'Replace your recovery codes (the old ones stop working)',
        description:
          'Needs your password and a current code of the authenticator app (else 401 insufficient_user_authentication).',
        tags: ['second factors'],
        ...secured,
        body: MfaRegenerateBody,
        response: {
          200: RecoveryCodesResponse,
          400: CodedErrorResponse,
          401: CodedErrorResponse,
          422: ValidationErrorResponse,
          429: DetailResponse,
        },
      },
    },
    async (request) => {
      const body = request.body ?? {};
      const codes = await mfa.regenerateRecoveryCodes(
        request.auth!.user.id,
        passwordOf(body),
        body.otp || undefined,
        requestContext(request),
        request.auth!.sessionId,
      );
      return { recovery_codes: codes };
    },
  );
};
