import type { FastifyRequest } from 'fastify';
import type { FactorChangeCredentials } from '../services/mfa.ts';

/** The second-factor fields a body changing factors may carry. */
export interface SecondFactorFields {
  otp?: string | undefined;
  recovery_code?: string | undefined;
}

/**
 * What a request changing second factors presents: its password, the code in its body (a TOTP code wins over a
 * recovery code; empty strings are no code) and the login of the session its bearer token belongs to.
 */
export function factorChangeOf(
  request: FastifyRequest,
  password: string,
  body: SecondFactorFields | undefined,
): FactorChangeCredentials {
  const otp = body?.otp || undefined;
  const recoveryCode = otp === undefined ? body?.recovery_code || undefined : undefined;
  return { password, proof: { otp, recoveryCode }, session: request.auth?.login };
}
