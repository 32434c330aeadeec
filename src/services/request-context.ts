/** What a use case needs of the request that asked for it, without knowing HTTP. */
export interface RequestContext {
  userAgent: string | undefined;
  ipAddress: string | undefined;
  /** The session whose access token authenticated the request, if one did. */
  sessionId?: string | undefined;
  /** Aborted once the client has gone: a password hash still waiting for its slot is dropped. */
  signal?: AbortSignal;
  /** Records a security event in the log and hands it to every audit sink (the audit trail, metrics); never throws. */
  audit(event: string, fields: Record<string, unknown>): void;
}

/** The request a security event came from, as an audit sink receives it. */
export interface AuditOrigin {
  requestId: string;
  userAgent: string | undefined;
  ipAddress: string | undefined;
}

/**
 * A consumer of the security events use cases report (metrics, a stored audit trail). Called synchronously inside
 * the request: it must not throw, and one that stores must do so without making the request wait.
 */
export type AuditSink = (event: string, fields: Record<string, unknown>, origin: AuditOrigin) => void;
