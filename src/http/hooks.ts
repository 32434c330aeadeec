import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';
import { sendError, toAppError } from './error-handler.ts';

// Bodies up to this size are read to their end after an early answer, so that the client receives it.
const DRAIN_LIMIT_BYTES = 8 * 1024 * 1024;

/** Sets the headers every response carries. */
export function setStandardHeaders(request: FastifyRequest, reply: FastifyReply): void {
  reply.headers({ 'x-request-id': request.id, ...STANDARD_HEADERS });
}

const STANDARD_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request header fields too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request timeout'],
  ERR_HTTP_REQUEST_TIMEOUT_HEADERS: [408, 'Request timeout'],
};

/**
 * Answers what Node's HTTP parser refuses before any route runs (malformed request line or chunking, headers too
 * large, a request that did not arrive in time) in the error table's shape, with the standard headers, and closes.
 */
export function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable || error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const [status, detail] = CLIENT_ERRORS[error.code ?? ''] ?? [400, 'Bad request'];
  const body = JSON.stringify({ detail });
  const headers = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'x-request-id': randomUUID(),
    ...STANDARD_HEADERS,
    connection: 'close',
  };
  const head = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}`)
    .join('\r\n');
  // As Node and Fastify do: write, then destroy, so that a client still sending cannot hold the connection open.
  socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${head}\r\n\r\n${body}`);
  socket.destroy();
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
