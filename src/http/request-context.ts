import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RequestContext } from '../services/request-context.ts';

/**
 * The parts of a request that sessions record, and an audit log bound to its request id; with the reply, also a
 * signal of the client leaving.
 */
export function requestContext(request: FastifyRequest, reply?: FastifyReply): RequestContext {
  const userAgent = request.headers['user-agent'];
  return {
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 256) : undefined,
    ipAddress: request.ip,
    ...(reply ? { signal: clientGone(reply) } : {}),
    audit: (event, fields) => request.log.info({ event, ip: request.ip, ...fields }, event),
  };
}

/**
 * Aborts when the connection closes before the response was sent. Not `request.signal`: Node closes the request
 * stream as soon as its body has been read, so that signal says nothing about the client once the handler runs.
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}
