/** What a use case needs of the request that asked for it, without knowing HTTP. */
export interface RequestContext {
  userAgent: string | undefined;
  ipAddress: string | undefined;
  /** Records a security event in the log and the audit trail, with the request's id; never waits, never throws. */
  audit(event: string, fields: Record<string, unknown>): void;
}
