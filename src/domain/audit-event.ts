/** The small, allow-listed facts an audit event carries beyond its columns: never a password or a token. */
export type AuditDetail = Readonly<Record<string, string | number | boolean>>;

/** A security event as the audit trail keeps it. */
export interface AuditEvent {
  id: number;
  event: string;
  /** The account the event concerns; undefined when none is known (a login with an unknown username). */
  userId: number | undefined;
  ipAddress: string | undefined;
  userAgent: string | undefined;
  requestId: string | undefined;
  createdAt: Date;
  detail: AuditDetail;
}
