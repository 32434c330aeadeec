import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditTrail } from '../services/audit.ts';
import type { AuditSink, RequestContext } from '../services/request-context.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** Where security events go besides the log; set once, on the root instance, by registerAuditSinks. */
    auditSinks: readonly AuditSink[];
    /** The stored audit trail, for what must wait on it (closing, a test reading what was just recorded). */
    auditTrail: AuditTrail;
  }
}

/** Makes the app's stored audit trail reachable from the instance. */
export function provideAuditTrail(app: FastifyInstance, auditTrail: AuditTrail): void {
  app.decorate('auditTrail', auditTrail);
}

/** Sends every security event reported in this app's requests to the given sinks, in order, after the log. */
export function registerAuditSinks(app: FastifyInstance, sinks: readonly AuditSink[]): void {
  app.decorate('auditSinks', sinks);
}

/** The parts of a request that sessions record, and an audit log bound to its request id. */
export function requestContext(request: FastifyRequest): RequestContext {
  const userAgent = request.headers['user-agent'];
  const origin = {
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 256) : undefined,
    ipAddress: request.ip,
  };
  return {
    ...origin,
    audit: (event, fields) => {
      request.log.info({ event, ip: request.ip, ...fields }, event);
      for (const sink of request.server.auditSinks ?? []) {
        try {
          sink(event, fields, { requestId: request.id, ...origin });
        } catch (error) {
          // A sink that fails must not fail the login or registration it observed.
          request.log.warn({ err: error, event }, 'audit sink failed');
        }
      }
    },
  };
}
