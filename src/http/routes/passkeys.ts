import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { PasskeysService } from '../../services/passkeys.ts';
import { factorChangeOf, noBodyIsEmpty } from '../recent-authentication.ts';
import { requestContext } from '../request-context.ts';
import {
  CeremonyOptionsResponse,
  CodedErrorResponse,
  MfaTokenBody,
  PasskeyIdParams,
  PasskeyListResponse,
  PasskeyPasswordBody,
  PasskeyRegistrationBody,
  PasskeyRegistrationOptionsBody,
  PasskeyRenameBody,
  PasskeyResponse,
  toPasskeyResponse,
} from '../schemas.ts';

const secured = { security: [{ OAuth2PasswordBearer: [] }] };

const toOptionsResponse = ({ challengeId, options }: { challengeId: string; options: unknown }) => ({
  challenge_id: challengeId,
  options,
});

/** The caller's passkeys: registration (after the password), list, rename, delete. Bearer-protected. */
export const passkeyAccountRoutes: FastifyPluginAsyncTypebox<{ passkeys: PasskeysService }> = async (
  app,
  { passkeys },
) => {
  app.post(
    '/users/me/passkeys/registration/options',
    {
      preValidation: noBodyIsEmpty,
      schema: {
        summary:
          'Start registering a passkey (needs the password, and a second factor when the account has one)',
        description:
          'When the account already has a second factor: otp or recovery_code in the body, or a session that signed in ' +
          'with a second factor within 10 minutes; else 401 insufficient_user_authentication (RFC 9470), as without the password. Answers the options for navigator.credentials.create() (startRegistration of @simplewebauthn/browser): a ' +
          'discoverable credential with user verification, no attestation. 409 passkey_limit at 10 passkeys.',
        tags: ['passkeys'],
        ...secured,
        body: PasskeyRegistrationOptionsBody,
        response: { 200: CeremonyOptionsResponse, 401: CodedErrorResponse },
      },
    },
    async (request) => {
      const { user } = request.auth!;
      const credentials = factorChangeOf(request, request.body);
      return toOptionsResponse(
        await passkeys.registrationOptions(user.id, credentials, requestContext(request)),
      );
    },
  );

  app.post(
    '/users/me/passkeys/registration/verify',
    {
      schema: {
        summary: 'Finish registering a passkey',
        tags: ['passkeys'],
        ...secured,
        body: PasskeyRegistrationBody,
        response: { 201: PasskeyResponse },
      },
    },
    async (request, reply) => {
      const { user, sessionId } = request.auth!;
      const { challenge_id: challengeId, response, name } = request.body;
      const passkey = await passkeys.verifyRegistration(
        user.id,
        challengeId,
        response,
        name,
        requestContext(request),
        sessionId,
      );
      return reply.code(201).send(toPasskeyResponse(passkey));
    },
  );

  app.get(
    '/users/me/passkeys',
    {
      schema: {
        summary: 'List your passkeys',
        tags: ['passkeys'],
        ...secured,
        response: { 200: PasskeyListResponse },
      },
    },
    async (request) => {
      const { user } = request.auth!;
      return { passkeys: (await passkeys.list(user.id)).map(toPasskeyResponse) };
    },
  );

  app.patch(
    '/users/me/passkeys/:id',
    {
      schema: {
        summary: 'Rename one of your passkeys',
        tags: ['passkeys'],
        ...secured,
        params: PasskeyIdParams,
        body: PasskeyRenameBody,
        response: { 200: PasskeyResponse },
      },
    },
    async (request) => {
      const { user } = request.auth!;
      return toPasskeyResponse(
        await passkeys.rename(user.id, request.params.id, request.body.name, requestContext(request)),
      );
    },
  );

  app.delete(
    '/users/me/passkeys/:id',
    {
      preValidation: noBodyIsEmpty,
      schema: {
        summary: 'Delete one of your passkeys (needs the password and a second factor, as registration)',
        tags: ['passkeys'],
        ...secured,
        params: PasskeyIdParams,
        body: PasskeyPasswordBody,
        response: { 204: Type.Null(), 401: CodedErrorResponse },
      },
    },
    async (request, reply) => {
      const { user } = request.auth!;
      const credentials = factorChangeOf(request, request.body);
      await passkeys.remove(user.id, request.params.id, credentials, requestContext(request));
      return reply.code(204).send(null);
    },
  );
};

/** The options of the public ceremonies: a passwordless login, and the passkey leg of an MFA login. */
export const passkeyLoginRoutes: FastifyPluginAsyncTypebox<{ passkeys: PasskeysService }> = async (
  app,
  { passkeys },
) => {
  app.post(
    '/passkeys/authentication/options',
    {
      schema: {
        summary: 'Start a passwordless login with a passkey',
        description:
          'Answers the options for navigator.credentials.get() with an empty allowCredentials (the browser offers ' +
          'the passkeys it has for this site) and user verification required. Then POST /token with ' +
          'grant_type=urn:gatehouse:params:oauth:grant-type:webauthn, challenge_id and webauthn_response. ' +
          'Throttled per client address (PASSKEY_OPTIONS_PER_IP).',
        tags: ['passkeys'],
        response: { 200: CeremonyOptionsResponse },
      },
    },
    async (request) => toOptionsResponse(await passkeys.passwordlessOptions(requestContext(request))),
  );

  app.post(
    '/mfa/webauthn/options',
    {
      config: { errorStyle: 'oauth' },
      schema: {
        summary: 'Start the passkey leg of a login that answered mfa_required',
        description:
          "Answers options listing the account's passkeys; the mfa_token keeps all its attempts. Then POST /token " +
          'with grant_type=urn:gatehouse:params:oauth:grant-type:mfa, mfa_token, challenge_id and webauthn_response.',
        tags: ['passkeys'],
        body: MfaTokenBody,
        response: { 200: CeremonyOptionsResponse },
      },
    },
    async (request, reply) =>
      toOptionsResponse(
        await passkeys.secondFactorOptionsForMfaToken(request.body.mfa_token, requestContext(request, reply)),
      ),
  );
};
