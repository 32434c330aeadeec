import type { FastifyInstance } from 'fastify';
import type { User } from '../db/users.ts';
import { AppError } from '../errors.ts';
import type { SessionsService } from '../services/sessions.ts';

declare module 'fastify' {
  interface FastifyRequest {
    user: User | undefined;
  }
}

// RFC 6750 §2.1: the scheme is case-insensitive; the credentials are one b64token.
const BEARER = /^bearer(?: +(\S*))?\s*$/i;

/** Adds the Bearer check to every route of the scope it is called in (and only that scope). */
export function requireBearerToken(scope: FastifyInstance, sessions: SessionsService): void {
  scope.decorateRequest('user', undefined);
  scope.addHook('onRequest', async (request) => {
    const header = request.headers.authorization;
    const match = header === undefined ? null : BEARER.exec(header);
    // No header, another scheme (Basic, Token) or an empty Bearer: the request carries no bearer token.
    if (!match?.[1]) throw new AppError('missing_token', 'Not authenticated');
    request.user = await sessions.authenticate(match[1]);
  });
}
