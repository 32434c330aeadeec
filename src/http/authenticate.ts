import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Scope } from '../domain/scope.ts';
import { AppError } from '../errors.ts';
import type { SessionClaim } from '../services/session-state.ts';
import type { Authenticated, SessionsService } from '../services/sessions.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by requireLiveSession in its scopes: the caller and the live session their token belongs to. */
    auth: Authenticated | undefined;
    /** Set by requireVerifiedAccessToken in its scopes: the session a valid token claims, not yet read. */
    claim: SessionClaim | undefined;
    /** In requireVerifiedAccessToken's scopes: reads the claimed session and its account; throws invalid_token. */
    confirmClaim: (() => Promise<Authenticated>) | undefined;
  }
}

/**
 * Adds the Bearer check to every route of the scope it is called in (and only that scope), reading the session and
 * its user from the database.
 */
export function requireLiveSession(scope: FastifyInstance, sessions: SessionsService): void {
  scope.decorateRequest('auth', undefined);
  scope.addHook('onRequest', async (request) => {
    request.auth = await sessions.authenticateBearerToken(bearerTokenOf(request));
  });
}

/**
 * Adds the Bearer check without reading the database: for routes whose service reads the claimed session together
 * with its own data and judges it there, so that the request costs one round trip instead of two.
 */
export function requireVerifiedAccessToken(scope: FastifyInstance, sessions: SessionsService): void {
  scope.decorateRequest('claim', undefined);
  // A method of the request, not a closure per request: only a refusal for scope calls it.
  scope.decorateRequest('confirmClaim', async function (this: FastifyRequest) {
    return sessions.authenticateBearerToken(bearerTokenOf(this));
  });
  scope.addHook('onRequest', async (request) => {
    request.claim = await sessions.verifyAccessToken(bearerTokenOf(request));
  });
}

/**
 * A hook that lets through only requests whose token grants `scope`, answering 403 insufficient_scope otherwise
 * (RFC 6750 §3.1). Use it after requireLiveSession or requireVerifiedAccessToken: as a route's `onRequest` (checked
 * before the body is read), or with addHook in a child scope for all its routes. Where neither ran it refuses (500).
 * Under requireLiveSession the scopes are the token's less what the user may no longer hold; under
 * requireVerifiedAccessToken they are the token's as signed, so routes that need `admin` belong under the former.
 */
export function requireScope(
  scope: Scope,
): (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void) => void {
  // A callback hook, not an async one: it runs on every request of its routes, and an async hook costs each a promise.
  return (request, _reply, done) => {
    const granted = request.auth?.scopes ?? request.claim?.scopes;
    if (granted === undefined) {
      done(new AppError('internal', `requireScope('${scope}') without a Bearer hook`));
    } else if (!granted.has(scope)) {
      const refusal = new AppError('insufficient_scope', 'Not enough permissions', { requiredScope: scope });
      // RFC 6750 §3.1: 403 is for a valid token only. Signed scopes say nothing of whether the session still lives,
      // so a token of an ended session or a disabled account is 401 invalid_token here as on any other route.
      if (request.auth === undefined && request.confirmClaim !== undefined) {
        request.confirmClaim().then(() => done(refusal), done);
      } else {
        done(refusal);
      }
    } else {
      done();
    }
  };
}

/** The request's Bearer token; throws missing_token when there is none, malformed_authorization for two headers. */
export function bearerTokenOf(request: FastifyRequest): string {
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
  // RFC 6750 §2: one method per request. A query token alone is no token here (that method is not offered); beside
  // the header, which of the two counts is ambiguous.
  const query = request.url.indexOf('?');
  if (query !== -1 && new URLSearchParams(request.url.slice(query + 1)).has('access_token')) {
    throw new AppError('malformed_authorization', 'Malformed Authorization header');
  }
  return token;
}

function countAuthorizationHeaders(rawHeaders: string[]): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() === 'authorization') count += 1;
  }
  return count;
}
