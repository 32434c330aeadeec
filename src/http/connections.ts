import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';

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
