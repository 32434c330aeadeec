import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import { AppError } from '../errors.ts';

const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * RFC 9110 §8.4: a body in a content coding (gzip, br) was read as it came, a gzipped form failing as a form and a
 * plain one labelled gzip accepted. No route decodes one, so a body with any coding but identity is refused.
 */
function hasEncodedBody(headers: IncomingHttpHeaders): boolean {
  const codings = headers['content-encoding'];
  // §5.6.1.2: empty list elements are no coding.
  if (
    codings === undefined ||
    codings.split(',').every((coding) => ['', 'identity'].includes(coding.trim().toLowerCase()))
  )
    return false;
  return headers['transfer-encoding'] !== undefined || Number(headers['content-length'] ?? 0) > 0;
}

/**
 * The rules of a request that changes something, checked once it is routed and authenticated and before its body is
 * read, so that a 404, 401 or 403 it would get anyway comes first (RFC 9110 §13.2.1):
 * - a body in a content coding gets 415 with Accept-Encoding: identity (§15.5.16);
 * - a method whose If-Match is false MUST NOT be performed (§13.1.1), and a PATCH with a stale tag changed the account
 *   anyway. No API resource has an entity tag, so a list of tags never matches and only `*` (the resource exists: the
 *   route was found) holds. If-Unmodified-Since is ignored, as §13.1.4 wants of a resource without a modification
 *   date.
 */
const checkChangeRequest: onRequestHookHandler = (request, reply, done) => {
  const { headers } = request;
  if (hasEncodedBody(headers)) {
    reply.header('accept-encoding', 'identity');
    done(
      new AppError(
        'unsupported_media_type',
        'Unsupported Media Type: request bodies are read without a content coding (Content-Encoding: identity)',
      ),
    );
    return;
  }
  done(refusalOfIfMatch(headers));
};

/**
 * The refusal of an If-Match that a resource with no strong entity tag fails: any but `*` (the resource exists, since
 * its route was found).
 */
export function refusalOfIfMatch(headers: IncomingHttpHeaders): AppError | undefined {
  const condition = headers['if-match'];
  if (condition === undefined || condition.trim() === '*') return undefined;
  return new AppError('precondition_failed', 'Precondition Failed: this resource has no entity tag to match');
}

const JSON_SUBTYPE = /^\s*application\/[^\s;/]+\+json(?=\s*(?:;|$))/i;

/**
 * A body of an application/…+json type is JSON (RFC 6839 §3.1), and FastAPI reads it so: so do the routes that read
 * JSON, through the JSON parser and its rules, by the type they are given here. A body that names no type is not
 * guessed at (RFC 9110 §8.3 allows either): it stays refused with 415, where FastAPI reads it as JSON (README).
 */
const readAsJson: onRequestHookHandler = (request, _reply, done) => {
  const headers = request.raw.headers;
  const type = headers['content-type'];
  if (type !== undefined && JSON_SUBTYPE.test(type))
    headers['content-type'] = type.replace(JSON_SUBTYPE, 'application/json');
  done();
};

/** Whether a route's body schema takes JSON: a plain schema (JSON is Fastify's default), or one per type naming it. */
function readsJson(body: unknown): boolean {
  if (body === undefined || body === null) return false;
  const content = (body as { content?: Record<string, unknown> }).content;
  return content === undefined || 'application/json' in content;
}

/** Adds the rules to the routes of unsafe methods registered after it, after their scopes' own onRequest hooks. */
export function registerChangeRequestRules(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    if (![route.method].flat().some((method) => UNSAFE_METHODS.has(method))) return;
    const rules = readsJson(route.schema?.body) ? [checkChangeRequest, readAsJson] : [checkChangeRequest];
    route.onRequest = [...[route.onRequest ?? []].flat(), ...rules];
  });
}
