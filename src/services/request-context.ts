/** What a use case needs of the request that asked for it, without knowing HTTP. */
export interface RequestContext {
  userAgent: string | undefined;
  ipAddress: string | undefined;
  /** Writes a security event to the audit log, with the request's id. */
  audit(event: string, fields: Record<string, unknown>): void;
}
