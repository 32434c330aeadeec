import { type KeyObject, randomBytes } from 'node:crypto';
import type { RefreshTokensRepository } from '../db/refresh-tokens.ts';
import type { SessionsRepository } from '../db/sessions.ts';
import type { UsersRepository } from '../db/users.ts';
import type { Scope } from '../domain/scope.ts';
import type { ListedSession, Session } from '../domain/session.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { AccessTokens, VerifiedAccessToken } from '../security/access-tokens.ts';
import type { Clock } from '../security/clock.ts';
import {
  deriveSuccessor,
  formatRefreshToken,
  generateRefreshToken,
  hashRefreshSecret,
  parseRefreshToken,
  type RefreshToken,
  refreshSecretMatches,
} from '../security/refresh-tokens.ts';
import type { RequestContext } from './request-context.ts';
import { effectiveScopes, formatScope, grantScopes, scopesOfToken } from './scopes.ts';
import {
  ACCOUNT_DISABLED,
  isAccountUsable,
  isClaimedSessionLive,
  isClaimHonoured,
  listedSession,
  type SessionClaim,
  type SessionPolicy,
  sessionState,
} from './session-state.ts';

export interface TokenGrant {
  accessToken: string;
  tokenType: 'bearer';
  expiresInSeconds: number;
  refreshToken: string;
  scope: string;
}

export interface Authenticated {
  user: User;
  sessionId: string;
  /** What the token may be used for: its scope, less what the user may no longer hold (a revoked role). */
  scopes: ReadonlySet<Scope>;
  /** How the session's login authenticated (its amr and time): recent second-factor logins may change factors. */
  login: SessionLogin;
}

/** RFC 8176 methods of a session's login and when it happened; refreshes keep both. */
export interface SessionLogin {
  amr: readonly string[];
  authTime: Date;
}

export interface RefreshOptions {
  /** The scope the client asked for; the session's own grant when omitted. */
  requestedScopes?: ReadonlySet<Scope> | undefined;
  /**
   * Asked of the one request that spends the token, with its session's id, while the session is locked: returns what
   * refuses the rotation (throttling), and the token then stays unspent. Never asked for a retry inside the reuse
   * grace window, which mints nothing new: told to wait longer than the window, its client would come back with a
   * token spent past it, and the family would be revoked as stolen.
   */
  admitRotation?: (sessionId: string, userId: number) => Promise<(() => AppError) | undefined>;
}

export interface StartSessionOptions {
  /** RFC 8176 methods the login used; `["pwd"]` when omitted. Stored with the session, so its refreshes say the same. */
  amr?: readonly string[] | undefined;
}

const PASSWORD_ONLY = ['pwd'];

export interface SessionsService {
  /**
   * Opens a session granting `scopes` for a user whose password just matched `verifiedHash`; undefined when that hash
   * is no longer theirs (changed or deleted meanwhile), so that no session outlives the credentials it used. null for
   * a login that proved no password: a login upgrading the stored hash of the same password must not refuse it.
   */
  startSession(
    user: User,
    verifiedHash: string | null,
    context: RequestContext,
    scopes: ReadonlySet<Scope>,
    options?: StartSessionOptions,
  ): Promise<TokenGrant | undefined>;
  /**
   * Spends a refresh token for new tokens, granting at most what the login granted (RFC 6749 §6); throws
   * invalid_grant (revoking the family on reuse, or for a disabled account) or invalid_scope.
   */
  rotateRefreshToken(
    presented: string,
    context: RequestContext,
    options?: RefreshOptions,
  ): Promise<TokenGrant>;
  /** Returns the session an access token claims, verified but not yet checked against the database; throws invalid_token. */
  verifyAccessToken(accessToken: string): Promise<SessionClaim>;
  /**
   * Returns who a bearer token speaks for and what it may do, its session and account checked; throws invalid_token
   * for a bad token, an ended session or a disabled account.
   */
  authenticateBearerToken(accessToken: string): Promise<Authenticated>;
  /** Ends one session; its refresh and access tokens stop working at once. */
  revokeSession(sessionId: string, reason: string): Promise<void>;
  /** Ends the session of a refresh or access token (RFC 7009); does nothing for a token it does not know. */
  revokeToken(presented: string, context: RequestContext): Promise<void>;
  /** Whether the refresh token, its secret checked, is one of a session still live. */
  isRefreshTokenLive(presented: string): Promise<boolean>;
  /** Ends every session of the user, except one if named, and forgets their trusted clients; returns how many ended. */
  revokeEverySession(userId: number, reason: string, exceptSessionId?: string): Promise<number>;
  /** Ends every session of the user whose login used no second factor, except one if named; returns how many. */
  endPasswordOnlySessions(userId: number, exceptSessionId: string | undefined): Promise<number>;
  /** Returns the user's live sessions, newest first. */
  listSessions(userId: number): Promise<ListedSession[]>;
  /** Ends one of the user's own live sessions; throws not_found for any other id. */
  endUserSession(userId: number, sessionId: string): Promise<void>;
  /** Deletes sessions (and their refresh tokens) that ended more than a day ago; returns how many. */
  pruneEndedSessions(): Promise<number>;
}

export interface SessionsDependencies {
  accessTokens: AccessTokens;
  sessions: SessionsRepository;
  refreshTokens: RefreshTokensRepository;
  users: UsersRepository;
  clock: Clock;
  refreshDerivationKey: KeyObject;
  policy: SessionPolicy;
  maxLifetimeSeconds: number;
  reuseGraceSeconds: number;
}

// A retry inside the grace window follows the chain to the live head; a longer chain is not a retry.
const MAX_CHAIN_STEPS = 20;
// A day of keeping: a reuse of a token from a just-ended family is still recognised and logged.
const ENDED_SESSION_RETENTION_MS = 86400_000;

/** How the session's login authenticated, as its refreshes repeat it. */
const loginOf = (session: Session): SessionLogin => ({
  amr: session.amr.split(' ').filter(Boolean),
  authTime: session.createdAt,
});

/** Builds the session rules: login sessions, refresh rotation with reuse detection, revocation. */
export function createSessionsService(deps: SessionsDependencies): SessionsService {
  const { accessTokens, sessions, refreshTokens, users, clock, policy } = deps;
  const invalidGrant = () =>
    new AppError('invalid_grant', 'The refresh token is invalid, expired or revoked');
  const isLive = (session: Session, now: Date) => sessionState(session, now, policy) === 'live';

  const grantFor = async (
    user: User,
    sessionId: string,
    refreshToken: RefreshToken,
    scopes: ReadonlySet<Scope>,
    login: SessionLogin,
  ): Promise<TokenGrant> => {
    const scope = formatScope(scopes);
    const issued = await accessTokens.issue({
      userId: user.id,
      username: user.username,
      sessionId,
      scope,
      emailVerified: user.emailVerifiedAt !== null,
      amr: login.amr,
      authTime: login.authTime,
    });
    return {
      accessToken: issued.token,
      tokenType: 'bearer',
      expiresInSeconds: issued.expiresInSeconds,
      refreshToken: formatRefreshToken(refreshToken),
      scope,
    };
  };

  /** Follows a spent token's chain of successors to the first one not yet spent, if the chain is short enough. */
  const findUnspentSuccessor = async (spent: RefreshToken): Promise<RefreshToken | undefined> => {
    let current = spent;
    for (let step = 0; step < MAX_CHAIN_STEPS; step += 1) {
      const next = deriveSuccessor(current, deps.refreshDerivationKey);
      const stored = await refreshTokens.findRefreshToken(next.id);
      if (!stored) return undefined;
      if (stored.usedAt === undefined) return next;
      current = next;
    }
    return undefined;
  };

  // A client sends its token with every request and accessTokens.verify answers a known token with the object it
  // verified first: the claim, its scope parsed, is made once per token instead of once per request.
  const claims = new WeakMap<VerifiedAccessToken, SessionClaim>();
  const verifyAccessToken = async (accessToken: string): Promise<SessionClaim> => {
    const verified = await accessTokens.verify(accessToken);
    let claim = claims.get(verified);
    if (!claim) {
      claim = {
        sessionId: verified.sessionId,
        userId: verified.userId,
        scopes: scopesOfToken(verified.scope),
      };
      claims.set(verified, claim);
    }
    return claim;
  };

  return {
    async startSession(user, verifiedHash, context, scopes, options = {}) {
      const now = clock.now();
      const amr = options.amr && options.amr.length > 0 ? options.amr : PASSWORD_ONLY;
      const sessionId = randomBytes(16).toString('base64url');
      const refreshToken = generateRefreshToken();
      const opened = await sessions.insertSession(
        {
          id: sessionId,
          userId: user.id,
          expiresAt: new Date(now.getTime() + deps.maxLifetimeSeconds * 1000),
          userAgent: context.userAgent,
          ipAddress: context.ipAddress,
          scope: formatScope(scopes),
          amr: amr.join(' '),
        },
        { id: refreshToken.id, secretHash: hashRefreshSecret(refreshToken.secret) },
        verifiedHash,
        now,
      );
      if (!opened) return undefined;
      try {
        return await grantFor(user, sessionId, refreshToken, scopes, { amr, authTime: now });
      } finally {
        // Once the token is signed (on the threadpool, a turn of the event loop later), so that the login's own event,
        // recorded in that turn too, shares its INSERT.
        context.audit('session_started', { userId: user.id, sessionId });
      }
    },

    async rotateRefreshToken(presented, context, { requestedScopes, admitRotation } = {}) {
      const token = parseRefreshToken(presented);
      if (!token) throw invalidGrant();
      let stored = await refreshTokens.findRefreshToken(token.id);
      if (!stored || !refreshSecretMatches(token.secret, stored.secretHash)) throw invalidGrant();
      const now = clock.now();
      const session = stored.session;
      if (!isLive(session, now)) throw invalidGrant();
      const user = await users.findUserById(session.userId);
      if (!user) throw invalidGrant();
      if (!isAccountUsable(user)) throw new AppError('invalid_grant', ACCOUNT_DISABLED);
      const allowed = effectiveScopes(scopesOfToken(session.scope), user);
      const judgeScopes = () => grantScopes(requestedScopes, allowed, allowed);

      if (stored.usedAt === undefined) {
        // Judged before the token is spent: a refused scope leaves the refresh token usable.
        const scopes = judgeScopes();
        const successor = deriveSuccessor(token, deps.refreshDerivationKey);
        let refusal: (() => AppError) | undefined;
        const outcome = await refreshTokens.markRefreshTokenUsed(
          token.id,
          { id: successor.id, secretHash: hashRefreshSecret(successor.secret) },
          session.id,
          (locked) => {
            const judgedAt = clock.now();
            return isLive(locked, judgedAt) ? judgedAt : undefined;
          },
          admitRotation &&
            (async () => {
              refusal = await admitRotation(session.id, session.userId);
              return refusal === undefined;
            }),
        );
        if (outcome === 'not_confirmed' && refusal) throw refusal();
        if (outcome === 'rotated') {
          const grant = await grantFor(user, session.id, successor, scopes, loginOf(session));
          context.audit('refreshed', { userId: user.id, sessionId: session.id });
          return grant;
        }
        if (outcome === 'session_ended') throw invalidGrant();
        stored = await refreshTokens.findRefreshToken(token.id);
        if (!stored?.usedAt) throw invalidGrant();
      }

      const spentForMs = now.getTime() - stored.usedAt.getTime();
      if (spentForMs > deps.reuseGraceSeconds * 1000) {
        // RFC 9700 §4.14.2: a spent refresh token presented again means it leaked; end the whole family.
        await sessions.revokeSession(session.id, 'refresh_token_reuse', now);
        context.audit('refresh_token_reuse_detected', { userId: user.id, sessionId: session.id, spentForMs });
        throw invalidGrant();
      }
      // Only now, after the reuse check: a replay must end the family whatever scope it asks for.
      const scopes = judgeScopes();
      // A retry (lost response, two tabs): answer with the family's live head, never a second branch.
      const head = await findUnspentSuccessor(token);
      if (!head) throw invalidGrant();
      context.audit('refresh_token_retry', { userId: user.id, sessionId: session.id });
      return grantFor(user, session.id, head, scopes, loginOf(session));
    },

    verifyAccessToken,

    async authenticateBearerToken(accessToken) {
      const claim = await verifyAccessToken(accessToken);
      const found = await sessions.findSessionWithUser(claim.sessionId);
      const account = found && { session: found.session, accountDisabledAt: found.user.disabledAt };
      if (!found || !isClaimHonoured(claim, account, clock.now(), policy)) {
        throw new AppError('invalid_token', 'Could not validate credentials');
      }
      return {
        user: found.user,
        sessionId: claim.sessionId,
        scopes: effectiveScopes(claim.scopes, found.user),
        login: loginOf(found.session),
      };
    },

    async revokeSession(sessionId, reason) {
      await sessions.revokeSession(sessionId, reason, clock.now());
    },

    async revokeToken(presented, context) {
      const refresh = parseRefreshToken(presented);
      if (refresh) {
        const stored = await refreshTokens.findRefreshToken(refresh.id);
        if (stored && refreshSecretMatches(refresh.secret, stored.secretHash)) {
          await sessions.revokeSession(stored.session.id, 'revoked', clock.now());
          context.audit('session_revoked', { userId: stored.session.userId, sessionId: stored.session.id });
        }
        return;
      }
      const verified = await accessTokens.verify(presented).catch(() => undefined);
      if (verified) {
        await sessions.revokeSession(verified.sessionId, 'revoked', clock.now());
        context.audit('session_revoked', { userId: verified.userId, sessionId: verified.sessionId });
      }
    },

    async isRefreshTokenLive(presented) {
      const refresh = parseRefreshToken(presented);
      if (!refresh) return false;
      const stored = await refreshTokens.findRefreshToken(refresh.id);
      return (
        stored !== undefined &&
        refreshSecretMatches(refresh.secret, stored.secretHash) &&
        isLive(stored.session, clock.now())
      );
    },

    async revokeEverySession(userId, reason, exceptSessionId) {
      const ended = await sessions.revokeEverySessionOfUser(userId, reason, clock.now(), exceptSessionId);
      // Signing out everywhere also ends the trust that earlier logins earned their devices and addresses.
      await users.forgetTrustedClients(userId);
      return ended;
    },

    endPasswordOnlySessions: (userId, exceptSessionId) =>
      sessions.revokePasswordOnlySessionsOfUser(userId, 'second_factor_added', clock.now(), exceptSessionId),

    async listSessions(userId) {
      const now = clock.now();
      return (await sessions.findSessionsOfUser(userId))
        .filter((session) => isLive(session, now))
        .map((session) => listedSession(session, policy));
    },

    async endUserSession(userId, sessionId) {
      const now = clock.now();
      const session = await sessions.findSession(sessionId);
      const ended =
        isClaimedSessionLive({ sessionId, userId }, session, now, policy) &&
        (await sessions.revokeSession(sessionId, 'ended_by_user', now));
      if (!ended) throw new AppError('not_found', 'Session not found');
    },

    pruneEndedSessions() {
      const endedBefore = clock.now().getTime() - ENDED_SESSION_RETENTION_MS;
      return sessions.deleteEndedSessions({
        revokedBefore: new Date(endedBefore),
        expiredBefore: new Date(endedBefore),
        lastUsedBefore: new Date(endedBefore - policy.idleTtlSeconds * 1000),
      });
    },
  };
}
