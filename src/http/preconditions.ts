import type { FastifyInstance, preHandlerHookHandler } from 'fastify';
import { AppError } from '../errors.ts';

const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * RFC 9110 §13.1.1: a method whose If-Match is false MUST NOT be performed, and a PATCH with a stale tag changed the
 * account anyway. No API resource has an entity tag, so a list of tags never matches and only `*` (the resource
 * exists: the route was found) holds. A preHandler: after authentication and validation, whose refusals come first
 * (§13.2.1), before the handler changes anything. If-Unmodified-Since is ignored, as §13.1.4 wants of a resource
 * without a modification date.
 */
const checkIfMatch: preHandlerHookHandler = (request, _reply, done) => {
  const condition = request.headers['if-match'];
  if (condition === undefined || condition.trim() === '*') {
    done();
    return;
  }
  done(new AppError('precondition_failed', 'Precondition Failed: this resource has no entity tag to match'));
};

/** Adds the If-Match rule to the routes of unsafe methods registered after it. */
export function registerPreconditions(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    if (![route.method].flat().some((method) => UNSAFE_METHODS.has(method))) return;
    route.preHandler = [...[route.preHandler ?? []].flat(), checkIfMatch];
  });
}
