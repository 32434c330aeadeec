import { randomUUID } from 'node:crypto';
import { CompactSign, jwtVerify } from 'jose';
import { AppError } from '../errors.ts';
import type { Clock } from './clock.ts';
import type { SigningKey } from './signing-keys.ts';

export interface KeyRing {
  /** The one algorithm every key of the ring uses, pinned at verification. */
  algorithm: SigningKey['algorithm'];
  /** The key to sign with now (after a rotation, the new one). */
  signingKey(): Promise<SigningKey>;
  /** May look the key up afresh (rotation on another instance); undefined for an unknown or retired kid. */
  find(kid: string): SigningKey | undefined | Promise<SigningKey | undefined>;
  /** Whether the kid is among the keys loaded now, without any lookup. */
  has(kid: string): boolean;
}

export interface AccessTokenSubject {
  userId: number;
  username: string;
  sessionId: string;
  scope: string;
  /** Whether the user proved their email address; a claim for resource servers, judged again at each refresh. */
  emailVerified: boolean;
  /** RFC 8176 methods of the login (`["pwd"]`, `["pwd","otp","mfa"]`), carried through its refreshes. */
  amr?: readonly string[] | undefined;
  /** When the login happened (OIDC `auth_time`): a refresh is no new authentication. */
  authTime?: Date | undefined;
}

export interface IssuedAccessToken {
  token: string;
  expiresInSeconds: number;
  jti: string;
}

export interface VerifiedAccessToken {
  userId: number;
  sessionId: string;
  jti: string;
  scope: string;
  expiresAt: Date;
}

export interface AccessTokenOptions {
  keys: KeyRing;
  issuer: string;
  audience: string;
  ttlSeconds: number;
  clock: Clock;
}

// RFC 9068 §2.2 requires client_id. Clients are not registered, so a client_id a request sends is no identity (anyone
// can write one): tokens name the one client the password grant serves. Not required on verification, so tokens
// issued before it stay valid.
const CLIENT_ID = 'gatehouse';
// RFC 9068 §2.1: access tokens are explicitly typed so that no other JWT can stand in for one.
const ACCESS_TOKEN_TYPE = 'at+jwt';
// Instances of one deployment share NTP time; a second absorbs their skew without stretching short lifetimes.
const CLOCK_TOLERANCE_SECONDS = 1;
const MAX_TOKEN_LENGTH = 4096;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const USER_ID = /^[1-9][0-9]{0,14}$/;
// Verified tokens kept by their exact string, so a client's repeated requests skip the signature check.
const VERIFIED_CACHE_ENTRIES = 10_000;
const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const utf8 = new TextEncoder();

export interface AccessTokens {
  /** Returns a signed RFC 9068 access token for the subject. */
  issue(subject: AccessTokenSubject): Promise<IssuedAccessToken>;
  /** Returns the verified claims, or throws AppError('invalid_token') whatever the reason. */
  verify(token: string): Promise<VerifiedAccessToken>;
}

/** Builds the issuer and verifier of access tokens, pinned to one algorithm, issuer, audience and type. */
export function createAccessTokens(options: AccessTokenOptions): AccessTokens {
  const { keys, issuer, audience, ttlSeconds, clock } = options;
  const verifiedCache = new Map<string, { verified: VerifiedAccessToken; kid: string }>();

  const fromCache = (token: string): VerifiedAccessToken | undefined => {
    const hit = verifiedCache.get(token);
    if (!hit) return undefined;
    // Never past exp, never after its key left the ring (retired, or a rotation's grace ran out).
    const expired =
      hit.verified.expiresAt.getTime() + CLOCK_TOLERANCE_SECONDS * 1000 <= clock.now().getTime();
    if (expired || !keys.has(hit.kid)) {
      verifiedCache.delete(token);
      return undefined;
    }
    return hit.verified;
  };

  const remember = (token: string, verified: VerifiedAccessToken, kid: string) => {
    if (verifiedCache.size >= VERIFIED_CACHE_ENTRIES) {
      const oldest = verifiedCache.keys().next().value;
      if (oldest !== undefined) verifiedCache.delete(oldest);
    }
    verifiedCache.set(token, { verified, kid });
  };

  return {
    async issue(subject) {
      const key = await keys.signingKey();
      const issuedAt = Math.floor(clock.now().getTime() / 1000);
      const jti = randomUUID();
      // The claims as jose's SignJWT writes them, in its order, signed by its CompactSign (the test compares the two):
      // SignJWT deep-copies its input (structuredClone) and checks each setter on every token, a sixth of a signature.
      const claims: Record<string, unknown> = {
        preferred_username: subject.username,
        sid: subject.sessionId,
        scope: subject.scope,
        email_verified: subject.emailVerified,
        client_id: CLIENT_ID,
      };
      if (subject.amr) claims.amr = [...subject.amr];
      if (subject.authTime) claims.auth_time = Math.floor(subject.authTime.getTime() / 1000);
      claims.iss = issuer;
      claims.aud = audience;
      claims.sub = String(subject.userId);
      claims.iat = issuedAt;
      claims.exp = issuedAt + ttlSeconds;
      claims.jti = jti;
      const token = await new CompactSign(utf8.encode(JSON.stringify(claims)))
        .setProtectedHeader({ alg: key.algorithm, typ: ACCESS_TOKEN_TYPE, kid: key.kid })
        .sign(key.signingKey);
      return { token, expiresInSeconds: ttlSeconds, jti };
    },

    async verify(token) {
      const cached = fromCache(token);
      if (cached) return cached;
      if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token) || !hasCanonicalSignature(token)) {
        throw invalidToken();
      }
      const algorithm = keys.algorithm;
      try {
        const { payload, protectedHeader } = await jwtVerify(
          token,
          async (header) => {
            const key =
              typeof header.kid === 'string' && header.kid.length <= 64
                ? await keys.find(header.kid)
                : undefined;
            if (!key || key.algorithm !== header.alg) throw invalidToken();
            return key.verificationKey;
          },
          {
            algorithms: [algorithm],
            issuer,
            audience,
            typ: ACCESS_TOKEN_TYPE,
            currentDate: clock.now(),
            clockTolerance: CLOCK_TOLERANCE_SECONDS,
            maxTokenAge: ttlSeconds,
            requiredClaims: ['sub', 'exp', 'iat', 'jti', 'sid'],
          },
        );
        const lifetimeSeconds = (payload.exp as number) - (payload.iat as number);
        if (
          typeof payload.sub !== 'string' ||
          !USER_ID.test(payload.sub) ||
          typeof payload.jti !== 'string' ||
          typeof payload.sid !== 'string' ||
          !SESSION_ID.test(payload.sid) ||
          !(lifetimeSeconds > 0 && lifetimeSeconds <= ttlSeconds)
        ) {
          throw invalidToken();
        }
        const verified = {
          userId: Number(payload.sub),
          sessionId: payload.sid as string,
          jti: payload.jti,
          scope: typeof payload.scope === 'string' ? payload.scope : '',
          expiresAt: new Date((payload.exp as number) * 1000),
        };
        remember(token, verified, protectedHeader.kid as string);
        return verified;
      } catch (error) {
        // Whatever jose or WebCrypto objects to, the client learns only that the token is invalid.
        throw error instanceof AppError ? error : invalidToken(error);
      }
    },
  };
}

function invalidToken(cause?: unknown): AppError {
  return new AppError('invalid_token', 'Could not validate credentials', { cause });
}

// base64url leaves spare low bits in a signature's last character, so several strings decode to one signature: each
// would verify, and each would be a distinct, valid token (and cache key) minted without the key.
function hasCanonicalSignature(token: string): boolean {
  const signature = token.slice(token.lastIndexOf('.') + 1);
  return Buffer.from(signature, 'base64url').toString('base64url') === signature;
}
