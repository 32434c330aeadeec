/** What a use case needs of the request that asked for it, without knowing HTTP. */
export interface RequestContext {
  userAgent: string | undefined;
  ipAddress: string | undefined;
  /** Aborted once the client has gone: a password hash still waiting for its slot is dropped. */
  signal?: AbortSignal;
  /** Writes a security event to the audit log, with the request's id. */
  audit(event: string, fields: Record<string, unknown>): void;
}
