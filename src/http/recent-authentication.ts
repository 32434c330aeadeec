import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';
import type { FactorChangeCredentials } from '../services/mfa.ts';

/** The fields of a body that asks for recent authentication: the password (alias `current_password`) and a code. */
export interface RecentAuthenticationFields {
  password?: string | undefined;
  current_password?: string | undefined;
  otp?: string | undefined;
  recovery_code?: string | undefined;
}

/** A FastAPI-shaped 422 for a body field that is missing. */
export const missingField = (field: string) =>
  new AppError('validation_failed', 'Field required', {
    details: [{ loc: ['body', field], msg: 'Field required', type: 'missing' }],
  });

/** `password`, or its alias `current_password`; a 422 when neither is given (an empty one is none). */
export function passwordOf(body: RecentAuthenticationFields | undefined): string {
  const password = body?.password || body?.current_password;
  if (!password) throw missingField('password');
  return password;
}

/**
 * What a request changing second factors presents: its password (422 when missing), the code in its body (a TOTP code
 * wins over a recovery code; empty strings are no code) and the login of the session its bearer token belongs to.
 */
export function factorChangeOf(
  request: FastifyRequest,
  body: RecentAuthenticationFields | undefined,
): FactorChangeCredentials {
  const otp = body?.otp || undefined;
  const recoveryCode = otp === undefined ? body?.recovery_code || undefined : undefined;
  return { password: passwordOf(body), proof: { otp, recoveryCode }, session: request.auth?.login };
}
