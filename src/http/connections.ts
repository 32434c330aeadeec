import type { Server } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';

export interface ConnectionLimits {
  /** Connections held at once; one more is closed as it arrives (Node's `maxConnections`). */
  maxConnections: number;
  /** How long a new connection may stay silent before its first request arrives. */
  firstRequestTimeoutMs: number;
}

// One warning per interval at most while connections are being dropped: a flood of them must not flood the log.
const DROP_LOG_INTERVAL_MS = 10_000;

/**
 * Bounds what connections can hold. Node's request and header limits start at a request's first byte, so a connection
 * that never sends one stayed open for good: enough of them took every file descriptor, and the next memory sample
 * failed with EMFILE and stopped the server. A silent new connection is now closed after the first-request limit, and
 * past `maxConnections` Node closes new ones at once. Once a request arrives, Node's own limits (request, keep-alive)
 * take over.
 */
export function limitConnections(server: Server, limits: ConnectionLimits, log: FastifyBaseLogger): void {
  const { maxConnections, firstRequestTimeoutMs } = limits;
  server.maxConnections = maxConnections;
  server.on('connection', (socket) => socket.setTimeout(firstRequestTimeoutMs));
  server.on('request', (request) => {
    // Only the limit set above: a later one is Node's keep-alive limit, which it manages itself.
    if (request.socket.timeout === firstRequestTimeoutMs) request.socket.setTimeout(0);
  });
  let dropped = 0;
  let lastLoggedAt = Number.NEGATIVE_INFINITY;
  server.on('drop', () => {
    dropped += 1;
    const now = performance.now();
    if (now - lastLoggedAt < DROP_LOG_INTERVAL_MS) return;
    log.warn({ dropped, maxConnections }, 'connections refused: MAX_CONNECTIONS reached');
    lastLoggedAt = now;
    dropped = 0;
  });
}
