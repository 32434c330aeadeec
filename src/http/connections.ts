import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { isClosingAfterAnswer } from './response-hooks.ts';

// One warning per interval at most while connections are being refused: a flood of them must not flood the log.
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * Holds at most `maxConnections` connections: one more is closed as it arrives. Node closes a connection that sends
 * no request within its header limit, but within that limit a burst of connections took every file descriptor, and
 * the next memory sample failed with EMFILE and stopped the server. Counted here rather than with Node's
 * `server.maxConnections`, which in a cluster's worker hands a refused connection back to the primary, which hands it
 * out again without end.
 */
export function limitConnections(server: Server, maxConnections: number, log: FastifyBaseLogger): void {
  let open = 0;
  let refused = 0;
  let lastLoggedAt = Number.NEGATIVE_INFINITY;
  server.on('connection', (socket: Socket) => {
    if (open < maxConnections) {
      open += 1;
      socket.once('close', () => {
        open -= 1;
      });
      return;
    }
    socket.destroy();
    refused += 1;
    const now = performance.now();
    if (now - lastLoggedAt < REFUSAL_LOG_INTERVAL_MS) return;
    log.warn({ refused, maxConnections }, 'connections refused: MAX_CONNECTIONS reached');
    lastLoggedAt = now;
    refused = 0;
  });
}

// RFC 9110 §9.2.1: requests that change nothing, which RFC 9112 §9.3.2 lets a server process in parallel.
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

interface PipelinedConnection {
  /** The answers of the requests being served, in the order they came. */
  serving: Set<ServerResponse>;
  /** How many of those change something. */
  changing: number;
  /** A request came past the limit, or one asked to close: the ones being served are answered, then it ends. */
  full: boolean;
  /** Settles once every request so far is answered; kept only while requests overlap (one listener per answer). */
  tail: Promise<unknown> | undefined;
}

// A connection option, whole, in a list (RFC 9110 §7.6.1): matched without splitting the header on the hot path.
const CLOSE_OPTION = /(?:^|,)[ \t]*close[ \t]*(?:,|$)/i;
const UPGRADE_OPTION = /(?:^|,)[ \t]*upgrade[ \t]*(?:,|$)/i;

/**
 * Whether the request's answer must close the connection, which Node's parser misses in a few cases: an HTTP/1.0
 * `Connection: keep-alive, close` (RFC 9112 §9.6: close wins), Transfer-Encoding in HTTP/1.0 (§6.1: faulty framing,
 * close after answering), and an Upgrade, after which Node reads nothing more of the connection as requests.
 */
function asksToClose(request: IncomingMessage): boolean {
  const { headers } = request;
  if (request.httpVersionMinor === 0 && headers['transfer-encoding'] !== undefined) return true;
  const options = headers.connection;
  if (options === undefined || options === 'keep-alive') return false;
  return CLOSE_OPTION.test(options) || (headers.upgrade !== undefined && UPGRADE_OPTION.test(options));
}

const answered = (response: ServerResponse) =>
  new Promise<void>((resolve) => {
    response.once('close', resolve);
  });

// Connections whose further bytes are read and dropped unparsed.
const discarding = new WeakSet<object>();

/**
 * Parses no more of a connection whose next requests are dropped: they would be parsed and dropped without end, each
 * costing a request object and a queued answer, while a client kept writing (+629 MB in 3.5 s, found in review).
 * What the requests being served still need of their bodies was parsed before the one dropped came. The bytes that
 * follow are still read, and dropped, so that the close that follows the answers does not reset the connection.
 */
function stopParsing(socket: Socket): void {
  discarding.add(socket);
  socket.removeAllListeners('data');
  socket.on('data', () => {});
}

const DROPPED = Symbol('dropped');

/** Makes the answer of the connection's latest request being served say that the connection closes after it. */
function closeAfterLast(connection: PipelinedConnection): void {
  let last: ServerResponse | undefined;
  for (const response of connection.serving) last = response;
  if (last && !last.headersSent) last.shouldKeepAlive = false;
}

/**
 * Serves a connection's pipelined requests as RFC 9112 §9.3.2 allows, and at most `maxPending` of them at a time.
 *
 * - A request that changes something, or that comes while one that does is being served, waits until every request
 *   before it on the connection is answered: a read pipelined after a post did not see it, and requests pipelined
 *   after a sign-out were served with its token (found from outside). Requests of safe methods alone run in parallel.
 * - Node stops reading a connection whose answers are not read only once an answer is waiting to be written, but a
 *   handler that answers later (any of ours) let every request of a burst in: 2,000 requests in one 100 KB write,
 *   never read, were all served into memory (+90 to +170 MB), and 2,000 for a static file held a descriptor each
 *   until the process had none left. A request past the limit is dropped before any work, with every one after it,
 *   and the connection is read no more; the ones being served are answered, and then the connection ends (closing at
 *   once had left them served and unanswered: a refresh grant rotated out of the client's sight). Browsers do not
 *   pipeline; a client that does waits for few answers, and retries the unanswered ones on a new connection.
 */
export function limitPipelining(app: FastifyInstance, maxPending: number): void {
  const connections = new WeakMap<object, PipelinedConnection>();
  // A request's turn to be served (the answers before it), or DROPPED; none for most requests.
  const holds = new WeakMap<object, Promise<unknown> | typeof DROPPED>();
  app.server.prependListener('request', (request: IncomingMessage, response: ServerResponse) => {
    const { socket } = request;
    let connection = connections.get(socket);
    if (connection === undefined) {
      const opened: PipelinedConnection = { serving: new Set(), changing: 0, full: false, tail: undefined };
      connection = opened;
      connections.set(socket, connection);
      // The client ended its side (a FIN): no request follows, and every one it sent is answered, the last saying
      // that the connection closes after it (RFC 9112 §9.6), as Node then closes it.
      socket.once('end', () => {
        opened.full = true;
        closeAfterLast(opened);
      });
    }
    if (connection.full || connection.serving.size >= maxPending || isClosingAfterAnswer(socket)) {
      if (!connection.full) closeAfterLast(connection);
      connection.full = true;
      holds.set(request, DROPPED);
      if (connection.serving.size === 0) socket.destroy();
      else if (!discarding.has(socket)) stopParsing(socket);
      return;
    }
    // §9.6: nothing after a request that closes is processed.
    if (asksToClose(request)) {
      response.shouldKeepAlive = false;
      connection.full = true;
    }
    const changes = !SAFE_METHODS.has(request.method ?? '');
    if (connection.serving.size > 0) {
      connection.tail ??= Promise.all(Array.from(connection.serving, answered));
      if (changes || connection.changing > 0) holds.set(request, connection.tail);
      connection.tail = Promise.all([connection.tail, answered(response)]);
    }
    connection.serving.add(response);
    if (changes) connection.changing += 1;
    const served = connection;
    response.once('close', () => {
      served.serving.delete(response);
      if (changes) served.changing -= 1;
      if (served.serving.size === 0) served.tail = undefined;
      if (served.full && served.serving.size === 0 && !socket.destroyed) socket.destroySoon();
    });
  });
  // The requests past the limit are dropped before any work: no reply, no log line. So is one that follows the body
  // of an early answer that closes the connection, and one whose client left, or whose connection the server decided
  // to close, while it waited for its turn.
  app.addHook('onRequest', (request, reply, done) => {
    const { raw } = request;
    const hold = holds.get(raw);
    if (hold === undefined) {
      const { socket } = raw;
      if (socket && !socket.destroyed) done();
      else reply.hijack();
      return;
    }
    if (hold === DROPPED) {
      reply.hijack();
      return;
    }
    const proceed = () => {
      const { socket } = raw;
      if (socket && !socket.destroyed && !isClosingAfterAnswer(socket)) done();
      else reply.hijack();
    };
    hold.then(proceed, proceed);
  });
}
