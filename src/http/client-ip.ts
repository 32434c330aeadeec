import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance } from 'fastify';

/** Names a request's client from its socket peer and headers (security/client-ip.ts). */
export type ResolveClientIp = (peer: string | undefined, headers: IncomingHttpHeaders) => string | undefined;

/**
 * Makes `request.ip` the resolved client address for every reader (request log, audit lines, sessions, rate limits):
 * before anything else runs, X-Forwarded-For is replaced by that one address, or removed when it is the peer's own.
 * Fastify, told to trust the same proxies, then answers it. Its own walk alone would never read CLIENT_IP_HEADER, and
 * would answer an X-Forwarded-For entry that is no address as it stands.
 */
export function registerClientIp(app: FastifyInstance, resolve: ResolveClientIp): void {
  app.addHook('onRequest', (request, _reply, done) => {
    const { headers, socket } = request.raw;
    const peer = socket?.remoteAddress;
    const client = resolve(peer, headers);
    if (client === undefined || client === peer) delete headers['x-forwarded-for'];
    else headers['x-forwarded-for'] = client;
    done();
  });
}
