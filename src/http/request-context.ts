import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
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

/**
 * The parts of a request that sessions record, and an audit log bound to its request id; with the reply, also a
 * signal of the client leaving.
 */
export function requestContext(request: FastifyRequest, reply?: FastifyReply): RequestContext {
  const userAgent = request.headers['user-agent'];
  const origin = {
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, 256) : undefined,
    ipAddress: request.ip,
  };
  return {
    ...origin,
    ...(request.auth ? { sessionId: request.auth.sessionId } : {}),
    ...(reply ? { signal: clientGone(reply) } : {}),
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

/**
 * Aborts when the client may have gone: the connection closed before the response was sent, or the client ended its
 * side (a FIN). A FIN is also how a client that gave up closes, and the server cannot tell the two apart until it
 * writes; it answers either (app.ts keeps half-open connections), so work that would wait (a queued hash) is what
 * heeds this. Not `request.signal`: Node closes the request stream as soon as its body has been read, so that signal
 * says nothing about the client once the handler runs.
 */
export function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const response = reply.raw;
  const socket = response.socket;
  const abort = () => {
    socket?.off('end', abort);
    if (!response.writableFinished) controller.abort();
  };
  response.once('close', abort);
  if (socket?.readableEnded) abort();
  else if (socket) {
    socket.once('end', abort);
    response.once('finish', () => socket.off('end', abort));
  }
  return controller.signal;
}
