import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';
import { sendError, toAppError } from './error-handler.ts';

// Bodies up to this size are read to their end after an early answer, so that the client receives it.
const DRAIN_LIMIT_BYTES = 8 * 1024 * 1024;

/** Sets the headers every response carries. */
export function setStandardHeaders(request: FastifyRequest, reply: FastifyReply): void {
  reply.headers({
    'x-request-id': request.id,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  });
}

/** Headers every response carries, and a log line per request (no query string: it may hold a token). */
export function registerResponseHooks(app: FastifyInstance): void {
  app.addHook('onRequest', async (request, reply) => setStandardHeaders(request, reply));
  app.addHook('onSend', async (request, reply) => {
    // An answer sent before the body was read (413, or a 401 from a hook): closing while the client is still
    // sending makes the client's kernel see a reset, and the client an error (EPIPE) instead of the answer. Up to a
    // bound, keep the connection: Node then reads and discards the rest of the body once the answer is sent (within
    // the server's request timeout). A larger or unannounced remainder closes the connection.
    if (request.raw.complete) return;
    const declared = Number(request.headers['content-length']);
    if (declared > 0 && declared <= DRAIN_LIMIT_BYTES) reply.removeHeader('connection');
    else reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    // Successful requests are logged at debug: on the hot path a log line per request costs more than the work.
    const level = reply.statusCode >= 400 ? 'info' : 'debug';
    if (!(request.log as unknown as { isLevelEnabled(level: string): boolean }).isLevelEnabled(level)) return;
    request.log[level](
      {
        method: request.method,
        path: request.url.split('?')[0],
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        ip: request.ip,
      },
      'request',
    );
  });
}

/** Answers 405 with Allow for a path that exists under other methods, 404 otherwise. */
export function registerMethodNotAllowed(app: FastifyInstance): void {
  const routes: { pattern: RegExp; method: string }[] = [];
  app.addHook('onRoute', (route) => {
    const source = route.url
      .split('/')
      .map((part) =>
        part.startsWith(':') ? '[^/]+' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
      )
      .join('/');
    for (const method of [route.method].flat()) routes.push({ pattern: new RegExp(`^${source}$`), method });
  });
  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = [
      ...new Set(routes.filter((route) => route.pattern.test(path)).map((route) => route.method)),
    ];
    // A wildcard route (the documentation assets) that declines a path under its own method: a missing file.
    if (allowed.length > 0 && !allowed.includes(request.method)) {
      reply.header('allow', allowed.join(', '));
      return sendError(new AppError('method_not_allowed', 'Method Not Allowed'), request, reply);
    }
    return sendError(new AppError('not_found', 'Not Found'), request, reply);
  });
}

/** Fastify's `frameworkErrors`: errors raised before routing (an undecodable path) go through the one error table. */
export function answerFrameworkError(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  // No onRequest hook has run for these requests.
  setStandardHeaders(request, reply);
  sendError(toAppError(error), request, reply);
}
