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

/**
 * Closes a connection that has more than `maxPending` requests waiting for their answers. Node stops reading a
 * connection whose answers are not being read only once an answer is waiting to be written, but a handler that
 * answers later (any of ours) lets every request of a pipelined burst in: 2,000 requests in one 100 KB write, never
 * read, were all served into memory (+90 to +170 MB), and 2,000 for a static file held a descriptor each until the
 * process had none left (found from outside). Browsers do not pipeline; a client that does waits for few answers.
 */
export function limitPipelining(app: FastifyInstance, maxPending: number): void {
  const pending = new WeakMap<object, number>();
  app.server.prependListener('request', (request: IncomingMessage, response: ServerResponse) => {
    const { socket } = request;
    const count = (pending.get(socket) ?? 0) + 1;
    pending.set(socket, count);
    response.once('close', () => pending.set(socket, (pending.get(socket) ?? 1) - 1));
    if (count > maxPending) socket.destroy();
  });
  // The requests of the burst that Node had already parsed are dropped before any work: no reply, no log line. So is
  // one that follows the body of an early answer that closes the connection.
  app.addHook('onRequest', (request, reply, done) => {
    const { socket } = request.raw;
    if (socket && !socket.destroyed && !isClosingAfterAnswer(socket)) {
      done();
      return;
    }
    reply.hijack();
    socket?.destroy();
  });
}
