import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { refusalLogged } from './error-handler.ts';
import { loggedPath } from './request-logger.ts';

// Bodies up to this size are read to their end after an early answer, so that the client receives it.
const DRAIN_LIMIT_BYTES = 8 * 1024 * 1024;

// Beside the security headers of http/security-headers.ts: nothing here is for a cache to keep.
export const STANDARD_HEADERS = { 'cache-control': 'no-store' };

// Requests whose answer closes the connection on purpose (a missing or invalid Host, a draining server): unlike the
// close Fastify sets on a 413, it stands when the answer comes before the body, which is then read first.
const closingOnPurpose = new WeakSet<object>();

/** Answers with `Connection: close`, which stands even when the answer comes before the body (read and dropped first). */
export function closeAfterAnswer(reply: FastifyReply): void {
  closingOnPurpose.add(reply.request.raw);
  const { socket } = reply.request.raw;
  if (socket) closingSockets.add(socket);
  reply.header('connection', 'close');
}

// Connections whose answer being sent closes them: a request pipelined after it is not processed (RFC 9112 §9.6).
const closingSockets = new WeakSet<object>();

// Sockets whose request was answered before its body arrived, while Node reads and discards the rest or closes.
const answeredBeforeTheirBody = new WeakSet<object>();

/**
 * Whether this connection's request has had its answer while its body is still being drained or refused: a client
 * that stalls then runs into the request timeout, and a body the parser cannot read fails it, either of which must
 * close the connection without a second answer (RFC 9112 §9.3).
 */
export function wasAnsweredBeforeItsBody(socket: object): boolean {
  return answeredBeforeTheirBody.has(socket);
}

// Requests that expected 100-continue and were not told to continue: their client may send no body at all.
const bodiesHeldBack = new WeakSet<object>();

/**
 * Marks a request that expected 100-continue and got no 100 (its announced body is past the limit): its early answer
 * closes the connection, since the client may then send no body, and a request it sent next would be read as the body
 * announced (RFC 9110 §10.1.1; found from outside).
 */
export function markBodyHeldBack(request: IncomingMessage): void {
  bodiesHeldBack.add(request);
}

// Sockets that close once the rest of an early-answered body is read: nothing after that body is a request to serve.
const lingering = new WeakSet<object>();

/**
 * Whether this connection is closing after an answer given before its body: a request pipelined after that body is
 * not processed (RFC 9112 §9.6: no further request after a close was sent).
 */
export function isClosingAfterAnswer(socket: object): boolean {
  return lingering.has(socket) || closingSockets.has(socket);
}

// How long a connection closing after an early answer keeps reading the rest of the body at most.
const LINGER_MS = 5000;

/**
 * A lingering close (RFC 9112 §9.6): once the answer is sent, Node ends a `Connection: close` socket and destroys it,
 * and the body still arriving then meets a reset that makes the client's write fail (EPIPE), often before it has read
 * the answer. This one half-closes, reads and drops the rest of the body, then closes.
 */
function lingerBeforeClosing(socket: Socket, request: IncomingMessage): void {
  lingering.add(socket);
  socket.destroySoon = function lingeringClose(this: Socket) {
    if (this.writable) this.end();
    let waiting = 2;
    const close = () => {
      clearTimeout(timer);
      this.destroy();
    };
    const timer = setTimeout(close, LINGER_MS).unref();
    const settle = () => {
      waiting -= 1;
      if (waiting === 0) close();
    };
    if (this.writableFinished) settle();
    else this.once('finish', settle);
    if (request.complete) settle();
    else request.once('end', settle);
    this.once('close', () => clearTimeout(timer));
  };
}

/** Sets the request id and the cache rule every response carries. */
export function setStandardHeaders(request: FastifyRequest, reply: FastifyReply): void {
  reply.headers({ 'x-request-id': request.id, ...STANDARD_HEADERS });
}

/** Headers every response carries, and a log line per request (no query string: it may hold a token). */
export function registerResponseHooks(app: FastifyInstance): void {
  // Callback hooks, not async ones: they run on every request, and an async hook costs each a promise.
  app.addHook('onRequest', (request, reply, done) => {
    setStandardHeaders(request, reply);
    done();
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    // An answer sent before the body was read (413, or a 401 from a hook): closing while the client is still
    // sending makes the client's kernel see a reset, and the client an error (EPIPE) instead of the answer. Up to a
    // bound, keep the connection: Node then reads and discards the rest of the body once the answer is sent (within
    // the server's request timeout). A larger or unannounced remainder closes the connection.
    // A request without a body is read in full with its headers, though Node marks it complete only after the handler
    // that answered at once has run.
    if (!request.raw.complete && hasBody(request)) {
      const { socket } = request.raw;
      answeredBeforeTheirBody.add(socket);
      const declared = Number(request.headers['content-length']);
      if (declared > 0 && declared <= DRAIN_LIMIT_BYTES) {
        // A close already decided (a missing or invalid Host, a draining server) stands, after the rest is read.
        // So does the client's own (Connection: close, HTTP/1.0); otherwise the answer says the connection stays, as
        // Node would have said had Fastify not set a close (removing the header also stops Node from saying it).
        if (
          closingOnPurpose.has(request.raw) ||
          bodiesHeldBack.has(request.raw) ||
          !reply.raw.shouldKeepAlive
        ) {
          lingerBeforeClosing(socket, request.raw);
          reply.header('connection', 'close');
        } else reply.header('connection', 'keep-alive');
        request.raw.once('end', () => answeredBeforeTheirBody.delete(socket));
      } else reply.header('connection', 'close');
    }
    // An answer that closes the connection (Fastify's 413, a refusal of the request rules, the last answer after the
    // client's FIN or a pipelined burst past its limit): a request pipelined after it is not processed (RFC 9112
    // §9.6), where it ran and was never answered (found from outside).
    const { socket } = request.raw;
    if (socket && (!reply.raw.shouldKeepAlive || reply.getHeader('connection') === 'close'))
      closingSockets.add(socket);
    done(null, payload);
  });
  app.addHook('onResponse', (request, reply, done) => {
    // A refusal under overload has had its line: a flood must not cost two each.
    if (refusalLogged(request)) {
      done();
      return;
    }
    // Successful requests are logged at debug: on the hot path a log line per request costs more than the work.
    const level = reply.statusCode >= 400 ? 'info' : 'debug';
    if (!(request.log as unknown as { isLevelEnabled(level: string): boolean }).isLevelEnabled(level)) {
      done();
      return;
    }
    request.log[level](
      {
        method: request.method,
        path: loggedPath(request.url),
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 10) / 10,
        ip: request.ip,
      },
      'request',
    );
    done();
  });
}

function hasBody(request: FastifyRequest): boolean {
  return request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length']) > 0;
}
