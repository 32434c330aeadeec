import type { FastifyRequest, preValidationHookHandler } from 'fastify';
import { AppError } from '../errors.ts';
import { type FactorChangeCredentials, insufficientAuthentication } from '../services/mfa.ts';

/** The fields of a body that asks for recent authentication: the password (alias `current_password`) and a code. */
export interface RecentAuthenticationFields {
  password?: string | undefined;
  current_password?: string | undefined;
  otp?: string | undefined;
  recovery_code?: string | undefined;
}

/**
 * A change of factors sent with no body at all lacks its recent authentication as one with an empty body does: the
 * same 401 (RFC 9470), not the 422 of a body that is not an object.
 */
export const noBodyIsEmpty: preValidationHookHandler = (request, _reply, done) => {
  if (request.body === undefined) request.body = {};
  done();
};

/** A FastAPI-shaped 422 for a body field that is missing. */
export const missingField = (field: string) =>
  new AppError('validation_failed', 'Field required', {
    details: [{ loc: ['body', field], msg: 'Field required', type: 'missing' }],
  });

/**
 * `password`, or its alias `current_password`; an empty one is none. Without it, RFC 9470's 401: the request lacks the
 * recent authentication a change of second factors asks for (AUTH-FLOWS.md §0.4), which is no malformed body.
 */
export function passwordOf(body: RecentAuthenticationFields | undefined): string {
  const password = body?.password || body?.current_password;
  if (!password) throw insufficientAuthentication('password');
  return password;
}

/**
 * What a request changing second factors presents: its password (401 when missing), the code in its body (a TOTP code
 * wins over a recovery code; empty strings are no code), and the session its bearer token belongs to and its login.
 */
export function factorChangeOf(
  request: FastifyRequest,
  body: RecentAuthenticationFields | undefined,
): FactorChangeCredentials {
  const otp = body?.otp || undefined;
  const recoveryCode = otp === undefined ? body?.recovery_code || undefined : undefined;
  return {
    password: passwordOf(body),
    proof: { otp, recoveryCode },
    session: request.auth?.login,
    sessionId: request.auth?.sessionId,
  };
}
