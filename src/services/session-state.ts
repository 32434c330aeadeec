import type { Scope } from '../domain/scope.ts';
import type { ListedSession, Session } from '../domain/session.ts';

export type SessionState = 'live' | 'revoked' | 'expired' | 'idle';

export interface SessionPolicy {
  /** A session not used for this long has ended, though its absolute expiry is still ahead. */
  idleTtlSeconds: number;
}

/** What an access token claims: the session it was issued for, that session's user, and what it may be used for. */
export interface SessionClaim {
  // Read-only: one claim serves every request that presents the same token (SessionsService.verifyAccessToken).
  readonly sessionId: string;
  readonly userId: number;
  readonly scopes: ReadonlySet<Scope>;
}

/**
 * Returns whether the session is live at `now`, or why not: the one rule every path that honours a session applies.
 * Revocation wins over the clocks, and the absolute expiry over the idle window; each limit is exclusive, so a session
 * is already over at the exact instant it expires or goes idle.
 */
export function sessionState(
  session: Pick<Session, 'revokedAt' | 'expiresAt' | 'lastUsedAt'>,
  now: Date,
  policy: SessionPolicy,
): SessionState {
  if (session.revokedAt !== undefined) return 'revoked';
  const nowMs = now.getTime();
  if (nowMs >= session.expiresAt.getTime()) return 'expired';
  if (nowMs >= session.lastUsedAt.getTime() + policy.idleTtlSeconds * 1000) return 'idle';
  return 'live';
}

/** A live session as it is listed, with when it ends if it is not used again (the earlier of the two limits). */
export function listedSession(session: Session, policy: SessionPolicy): ListedSession {
  const idleEndMs = session.lastUsedAt.getTime() + policy.idleTtlSeconds * 1000;
  return { ...session, endsAt: new Date(Math.min(session.expiresAt.getTime(), idleEndMs)) };
}

/** Returns true when the session a token claims exists, is the claimed user's and is live at `now`. */
export function isClaimedSessionLive(
  claim: Pick<SessionClaim, 'sessionId' | 'userId'>,
  session: Session | undefined,
  now: Date,
  policy: SessionPolicy,
): session is Session {
  return (
    session !== undefined &&
    session.id === claim.sessionId &&
    session.userId === claim.userId &&
    sessionState(session, now, policy) === 'live'
  );
}

/** The one answer a disabled account gets once its credentials proved genuine (a password, a refresh token). */
export const ACCOUNT_DISABLED = 'Account disabled';

/** Returns true while the account may log in, refresh and use its tokens: an operator has not disabled it. */
export function isAccountUsable(account: { disabledAt: Date | null }): boolean {
  return account.disabledAt === null;
}

/**
 * Returns true when a token's claim may be honoured: its session is live (isClaimedSessionLive) and its user's account
 * is not disabled. Every path that serves a Bearer request applies it, with the account read in the same round trip.
 */
export function isClaimHonoured(
  claim: SessionClaim,
  found: { session: Session; accountDisabledAt: Date | null } | undefined,
  now: Date,
  policy: SessionPolicy,
): boolean {
  return (
    found !== undefined &&
    isAccountUsable({ disabledAt: found.accountDisabledAt }) &&
    isClaimedSessionLive(claim, found.session, now, policy)
  );
}
