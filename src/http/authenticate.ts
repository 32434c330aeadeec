import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';
import type { Authenticated, SessionClaim, SessionsService } from '../services/sessions.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by requireBearerToken in its scopes: the caller and the session their token belongs to. */
    auth: Authenticated | undefined;
    /** Set by requireBearerClaim in its scopes: the verified token's session, not yet checked against the database. */
    claim: SessionClaim | undefined;
  }
}

/** Adds the Bearer check, session included, to every route of the scope it is called in (and only that scope). */
export function requireBearerToken(scope: FastifyInstance, sessions: SessionsService): void {
  scope.decorateRequest('auth', undefined);
  scope.addHook('onRequest', async (request) => {
    request.auth = await sessions.authenticateBearerToken(bearerTokenOf(request));
  });
}

/**
 * Adds the Bearer check without the session lookup: for routes whose own read checks the session in the same query
 * (isLiveSession), so that the request costs one database round trip instead of two.
 */
export function requireBearerClaim(scope: FastifyInstance, sessions: SessionsService): void {
  scope.decorateRequest('claim', undefined);
  scope.addHook('onRequest', async (request) => {
    request.claim = await sessions.verifyBearerToken(bearerTokenOf(request));
  });
}

function bearerTokenOf(request: FastifyRequest): string {
  // Node keeps only the first of repeated Authorization headers; a request that sends two is ambiguous.
  if (countAuthorizationHeaders(request.raw.rawHeaders) > 1) {
    throw new AppError('malformed_authorization', 'Malformed Authorization header');
  }
  const header = request.headers.authorization?.trim() ?? '';
  const separator = header.indexOf(' ');
  const scheme = separator === -1 ? header : header.slice(0, separator);
  const token = separator === -1 ? '' : header.slice(separator + 1).trim();
  // RFC 9110 §11.1: the scheme is case-insensitive. No header, another scheme (Basic, Token) or an empty
  // Bearer: the request carries no bearer token at all (401, bare challenge). Anything else after Bearer,
  // spaces included, is a token that fails verification (401 invalid_token); only a repeated header is a
  // malformed request (400 invalid_request).
  if (scheme.toLowerCase() !== 'bearer' || token === '')
    throw new AppError('missing_token', 'Not authenticated');
  return token;
}

function countAuthorizationHeaders(rawHeaders: string[]): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() === 'authorization') count += 1;
  }
  return count;
}
