import type { FastifyRequest } from 'fastify';
import type { RequestContext } from '../services/request-context.ts';

/** The parts of a request that sessions record, and an audit log bound to its request id. */
export function requestContext(request: FastifyRequest): RequestContext {
  const userAgent = request.headers['user-agent'];
  return {
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 256) : undefined,
    ipAddress: request.ip,
    audit: (event, fields) => request.log.info({ event, ip: request.ip, ...fields }, event),
  };
}
