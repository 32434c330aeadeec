import { randomBytes } from 'node:crypto';
import type { Session, SessionsRepository } from '../db/sessions.ts';

export type { Session };

import type { User, UsersRepository } from '../db/users.ts';
import { AppError } from '../errors.ts';
import type { AccessTokens } from '../security/access-tokens.ts';
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
import type { VerifiedLogin } from './accounts.ts';

export interface TokenGrant {
  accessToken: string;
  tokenType: 'bearer';
  expiresInSeconds: number;
  refreshToken: string;
  scope: string;
}

export interface RequestContext {
  userAgent: string | undefined;
  ipAddress: string | undefined;
  /** Writes a security event to the audit log, with the request's id. */
  audit(event: string, fields: Record<string, unknown>): void;
}

export interface Authenticated {
  user: User;
  sessionId: string;
}

/** What a verified access token claims: the session to check, and the instant and idle cut-off to check it at. */
export interface SessionClaim {
  sessionId: string;
  userId: number;
  now: Date;
  idleSince: Date;
}

export interface SessionsService {
  /** Opens a session for a user who has just proved who they are; throws invalid_grant if the password changed. */
  startSession(login: VerifiedLogin, context: RequestContext): Promise<TokenGrant>;
  /** Spends a refresh token for new tokens; throws invalid_grant, revoking the family on reuse. */
  rotateRefreshToken(presented: string, context: RequestContext): Promise<TokenGrant>;
  /** Returns who a bearer token speaks for; throws invalid_token for a bad token or an ended session. */
  authenticateBearerToken(accessToken: string): Promise<Authenticated>;
  /**
   * Verifies a bearer token without reading the database; throws invalid_token. The caller must then check the
   * claimed session in its own query (isLiveSession) and answer invalid_token when it is not live.
   */
  verifyBearerToken(accessToken: string): Promise<SessionClaim>;
  /** Ends one session; its refresh and access tokens stop working at once. */
  revokeSession(sessionId: string, reason: string): Promise<void>;
  /** Ends the session of a refresh or access token (RFC 7009); does nothing for a token it does not know. */
  revokeToken(presented: string, context: RequestContext): Promise<void>;
  /** Ends every session of the user, except one if named; returns how many ended. */
  revokeUserSessions(userId: number, reason: string, exceptSessionId?: string): Promise<number>;
  /** Returns the user's live sessions, newest first. */
  listSessions(userId: number): Promise<Session[]>;
  /** Ends one of the user's own live sessions; throws not_found for any other id. */
  endUserSession(userId: number, sessionId: string): Promise<void>;
  /** Deletes sessions (and their refresh tokens) that ended more than a day ago; returns how many. */
  pruneEndedSessions(): Promise<number>;
}

export interface SessionsDependencies {
  accessTokens: AccessTokens;
  sessions: SessionsRepository;
  users: UsersRepository;
  clock: Clock;
  refreshDerivationKey: Buffer;
  idleTtlSeconds: number;
  maxLifetimeSeconds: number;
  reuseGraceSeconds: number;
}

export const DEFAULT_SCOPE = 'conversation';
// A retry inside the grace window follows the chain to the live head; a longer chain is not a retry.
const MAX_CHAIN_STEPS = 20;

/** Builds the session rules: login sessions, refresh rotation with reuse detection, revocation. */
export function createSessionsService(deps: SessionsDependencies): SessionsService {
  const { accessTokens, sessions, users, clock } = deps;
  const invalidGrant = () =>
    new AppError('invalid_grant', 'The refresh token is invalid, expired or revoked');
  const idleSince = (now: Date) => new Date(now.getTime() - deps.idleTtlSeconds * 1000);

  const verifyBearerToken = async (accessToken: string): Promise<SessionClaim> => {
    const verified = await accessTokens.verify(accessToken);
    const now = clock.now();
    return { sessionId: verified.sessionId, userId: verified.userId, now, idleSince: idleSince(now) };
  };

  const grantFor = async (user: User, sessionId: string, refreshToken: RefreshToken): Promise<TokenGrant> => {
    const issued = await accessTokens.issue({
      userId: user.id,
      username: user.username,
      sessionId,
      scope: DEFAULT_SCOPE,
    });
    return {
      accessToken: issued.token,
      tokenType: 'bearer',
      expiresInSeconds: issued.expiresInSeconds,
      refreshToken: formatRefreshToken(refreshToken),
      scope: DEFAULT_SCOPE,
    };
  };

  const isLive = (session: Session, now: Date) =>
    session.revokedAt === undefined &&
    session.expiresAt.getTime() > now.getTime() &&
    session.lastUsedAt.getTime() > idleSince(now).getTime();

  return {
    async startSession({ user, verifiedHash }, context) {
      const now = clock.now();
      const sessionId = randomBytes(16).toString('base64url');
      const refreshToken = generateRefreshToken();
      const opened = await sessions.insertSession(
        {
          id: sessionId,
          userId: user.id,
          expiresAt: new Date(now.getTime() + deps.maxLifetimeSeconds * 1000),
          userAgent: context.userAgent,
          ipAddress: context.ipAddress,
        },
        { id: refreshToken.id, secretHash: hashRefreshSecret(refreshToken.secret) },
        verifiedHash,
        now,
      );
      if (!opened) throw new AppError('invalid_grant', 'Incorrect username or password');
      context.audit('session_started', { userId: user.id, sessionId });
      return grantFor(user, sessionId, refreshToken);
    },

    async rotateRefreshToken(presented, context) {
      const token = parseRefreshToken(presented);
      if (!token) throw invalidGrant();
      let stored = await sessions.findRefreshToken(token.id);
      if (!stored || !refreshSecretMatches(token.secret, stored.secretHash)) throw invalidGrant();
      const now = clock.now();
      const session = stored.session;
      if (!isLive(session, now)) throw invalidGrant();
      const user = await users.findUserById(session.userId);
      if (!user) throw invalidGrant();

      if (stored.usedAt === undefined) {
        const successor = deriveSuccessor(token, deps.refreshDerivationKey);
        const outcome = await sessions.markRefreshTokenUsed(
          token.id,
          { id: successor.id, secretHash: hashRefreshSecret(successor.secret) },
          session.id,
          now,
          idleSince(now),
        );
        if (outcome === 'rotated') return grantFor(user, session.id, successor);
        if (outcome === 'session_ended') throw invalidGrant();
        stored = await sessions.findRefreshToken(token.id);
        if (!stored?.usedAt) throw invalidGrant();
      }

      const spentForMs = now.getTime() - stored.usedAt.getTime();
      if (spentForMs > deps.reuseGraceSeconds * 1000) {
        // RFC 9700 §4.14.2: a spent refresh token presented again means it leaked; end the whole family.
        await sessions.revokeSession(session.id, 'refresh_token_reuse', now);
        context.audit('refresh_token_reuse_detected', { userId: user.id, sessionId: session.id, spentForMs });
        throw invalidGrant();
      }
      // A retry (lost response, two tabs): answer with the family's live head, never a second branch.
      let current = token;
      for (let step = 0; step < MAX_CHAIN_STEPS; step += 1) {
        const next = deriveSuccessor(current, deps.refreshDerivationKey);
        const nextStored = await sessions.findRefreshToken(next.id);
        if (!nextStored) break;
        if (nextStored.usedAt === undefined) {
          context.audit('refresh_token_retry', { userId: user.id, sessionId: session.id });
          return grantFor(user, session.id, next);
        }
        current = next;
      }
      throw invalidGrant();
    },

    verifyBearerToken,

    async authenticateBearerToken(accessToken) {
      const claim = await verifyBearerToken(accessToken);
      const user = await sessions.findUserOfLiveSession(
        claim.sessionId,
        claim.userId,
        claim.now,
        claim.idleSince,
      );
      if (!user) throw new AppError('invalid_token', 'Could not validate credentials');
      return { user, sessionId: claim.sessionId };
    },

    async revokeSession(sessionId, reason) {
      await sessions.revokeSession(sessionId, reason, clock.now());
    },

    async revokeToken(presented, context) {
      const refresh = parseRefreshToken(presented);
      if (refresh) {
        const stored = await sessions.findRefreshToken(refresh.id);
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

    revokeUserSessions: (userId, reason, exceptSessionId) =>
      sessions.revokeSessionsOfUser(userId, reason, clock.now(), exceptSessionId),

    async listSessions(userId) {
      const now = clock.now();
      return sessions.findLiveSessions(userId, now, idleSince(now));
    },

    pruneEndedSessions() {
      const now = clock.now();
      // A day of keeping: a reuse of a token from a just-ended family is still recognised and logged.
      return sessions.deleteSessionsEndedBefore(new Date(now.getTime() - 86400_000), idleSince(now));
    },

    async endUserSession(userId, sessionId) {
      const now = clock.now();
      const ended = await sessions.revokeSessionOfUser(
        userId,
        sessionId,
        'ended_by_user',
        now,
        idleSince(now),
      );
      if (!ended) throw new AppError('not_found', 'Session not found');
    },
  };
}
