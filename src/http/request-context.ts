import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../services/audit.ts';
import type { RequestContext } from '../services/request-context.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** Where requestContext() records security events; set once by provideAuditTrail. */
    auditTrail: AuditTrail;
  }
}

/** Makes the audit trail the one every request context of this app (and its scopes) records to. */
export function provideAuditTrail(app: FastifyInstance, auditTrail: AuditTrail): void {
  app.decorate('auditTrail', auditTrail);
}

/** The parts of a request that sessions record, and an audit log bound to its request id. */
export function requestContext(request: FastifyRequest): RequestContext {
  const userAgent = request.headers['user-agent'];
  const context: RequestContext = {
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 256) : undefined,
    ipAddress: request.ip,
    audit: (event, fields) => {
      request.log.info({ event, ip: context.ipAddress, ...fields }, event);
      request.server.auditTrail.record({
        event,
        fields,
        ipAddress: context.ipAddress,
        userAgent: context.userAgent,
        requestId: request.id,
      });
    },
  };
  return context;
}
