/** A login: its refresh tokens form one family, and every access token it issues names it. */
export interface Session {
  id: string;
  userId: number;
  createdAt: Date;
  lastUsedAt: Date;
  /** The absolute end, fixed at login; the idle limit is counted from lastUsedAt. */
  expiresAt: Date;
  revokedAt: Date | undefined;
  userAgent: string | undefined;
  ipAddress: string | undefined;
  /** The scope the login granted (space-separated): the most any of its refreshes may grant. */
  scope: string;
  /** How the login authenticated (RFC 8176 values, space-separated): every refresh of it says the same. */
  amr: string;
}

/** A live session as its user or an operator is shown it. */
export interface ListedSession extends Session {
  /** When it ends if it is not used again: its idle limit from its last use, or its absolute end if that is sooner. */
  endsAt: Date;
}
