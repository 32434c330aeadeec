import type { Scope } from '../domain/scope.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { PasswordHasher } from '../security/passwords.ts';
import type { AccountsService, CredentialCheck } from './accounts.ts';
import { normaliseUsername } from './accounts.ts';
import type { ClientIdentity, KnownClients } from './known-clients.ts';
import type { LoginSecondFactorProof, MfaService, SecondFactorMethod, SecondFactors } from './mfa.ts';
import type { PasskeyLogin } from './passkeys.ts';
import type { RequestContext } from './request-context.ts';
import {
  effectiveScopes,
  formatScope,
  grantScopes,
  parseRequestedScope,
  scopesOfToken,
  scopesPermittedTo,
} from './scopes.ts';
import { ACCOUNT_DISABLED, isAccountUsable } from './session-state.ts';
import type { SessionsService, TokenGrant } from './sessions.ts';
import type { LoginAttempt, Throttle } from './throttle.ts';

export interface PasswordCredentials {
  username: string;
  password: string;
  /** The device token an earlier login of this client received, if it kept it. */
  deviceToken?: string | undefined;
  /** The `scope` parameter as sent (RFC 6749 §3.3); the default scope when omitted or empty. */
  scope?: string | undefined;
}

/**
 * What a password login comes to. Refusals are values, not errors: throttling (`locked`) and second factors
 * (`second_factor_required`) decide inside the use case, and each outcome is answered in one place.
 */
export type PasswordGrantResult =
  /** `deviceToken` marks this client as known to the account at its next logins (when throttling is on). */
  | { outcome: 'granted'; tokens: TokenGrant; deviceToken: string | undefined }
  /** Wrong username or password, told apart from nothing else: the answer must not say which. */
  | { outcome: 'refused' }
  /** The password matched a disabled account: said only now, and counted by throttling as a failure. */
  | { outcome: 'disabled' }
  /** The password matched an account whose email is unverified while REQUIRE_VERIFIED_EMAIL is on: said only now. */
  | { outcome: 'email_not_verified' }
  /** Too many failures: nothing was verified, and the answer is the same for known and unknown usernames. */
  | { outcome: 'locked'; retryAfterSeconds: number }
  /** The password matched an account with a second factor: the login continues with that factor. */
  | { outcome: 'second_factor_required'; mfaToken: string; methods: SecondFactorMethod[] };

/** The second leg of a login (the MFA grant): the mfa_token of the first leg and one second factor. */
export interface MfaGrantRequest {
  mfaToken: string;
  proof: LoginSecondFactorProof;
  /** The device token an earlier login of this client received, if it kept it. */
  deviceToken?: string | undefined;
}

/** A sign-in with a passkey and no password: the passwordless ceremony's challenge and the assertion answering it. */
export interface PasswordlessGrantRequest {
  challengeId: string;
  /** The AuthenticationResponseJSON, as sent: a JSON string or the object. */
  response: unknown;
  /** The `scope` parameter as sent; the default scope when omitted or empty. */
  scope?: string | undefined;
  /** The device token an earlier login of this client received, if it kept it. */
  deviceToken?: string | undefined;
}

/** Passkeys without a password (services/passkeys.ts): checks an assertion; undefined for every refusal (audited). */
export interface PasswordlessLogins {
  passwordlessLogin(
    challengeId: string,
    response: unknown,
    context: RequestContext,
  ): Promise<PasskeyLogin | undefined>;
}

export interface LoginService {
  /**
   * The resource owner password grant (RFC 6749 §4.3): checks the credentials and opens a session; throws
   * invalid_scope for a scope that is unknown (before any check) or beyond the account's (once the password matched).
   */
  passwordGrant(credentials: PasswordCredentials, context: RequestContext): Promise<PasswordGrantResult>;
  /**
   * The refresh token grant (RFC 6749 §6): rotates the token, narrowing the scope to `scope` when given; throws
   * invalid_grant, invalid_scope or temporarily_unavailable.
   */
  refreshTokenGrant(refreshToken: string, context: RequestContext, scope?: string): Promise<TokenGrant>;
  /**
   * The second leg of a login whose password matched: spends the mfa_token with a second factor and opens the session;
   * throws invalid_grant for any refusal (wrong or replayed code, spent, expired or exhausted token, lock) and
   * temporarily_unavailable past the per-address cap.
   */
  mfaGrant(
    request: MfaGrantRequest,
    context: RequestContext,
  ): Promise<{ tokens: TokenGrant; deviceToken: string | undefined }>;
  /**
   * The passwordless grant: a passkey assertion with user verification opens the session; throws invalid_grant for any
   * refusal (without the passkeys port too) and temporarily_unavailable past the per-address cap.
   */
  passwordlessGrant(
    request: PasswordlessGrantRequest,
    context: RequestContext,
  ): Promise<{ tokens: TokenGrant; deviceToken: string | undefined }>;
}

export interface LoginThrottling {
  throttle: Throttle;
  knownClients: KnownClients;
}

/** Builds the login use cases, one per grant of the token endpoint; without `throttling` nothing is limited. */
export function createLoginService(deps: {
  accounts: AccountsService;
  sessions: SessionsService;
  throttling?: LoginThrottling | undefined;
  /** The hash queue, asked before anything else whether a password grant's hash could still be admitted. */
  hashQueue?: Pick<PasswordHasher, 'refuseWhenFull'>;
  /** REQUIRE_VERIFIED_EMAIL: an account whose email is unverified gets no session. */
  requireVerifiedEmail?: boolean;
  /** Which second factors an account has; without it (and `mfa`) logins take the password alone. */
  secondFactors?: SecondFactors | undefined;
  mfa?: Pick<MfaService, 'startChallenge' | 'redeemChallenge'> | undefined;
  /** Passkey sign-ins without a password; without it the passwordless grant is refused. */
  passkeys?: PasswordlessLogins | undefined;
}): LoginService {
  const { accounts, sessions, throttling, hashQueue, secondFactors, mfa, passkeys } = deps;
  const invalidMfaGrant = () =>
    new AppError('invalid_grant', 'The mfa_token or the code is invalid, expired or used');
  const invalidPasskeyGrant = () => new AppError('invalid_grant', 'The passkey could not be verified');

  /** R5, the password grant's per-address cap, for the grants that continue or replace it; throws when refused. */
  const admitGrant = async (context: RequestContext) => {
    if (!throttling) return;
    const refusal = await throttling.throttle.admitPasswordGrant(
      throttling.throttle.clientKey(context.ipAddress),
    );
    if (!refusal) return;
    context.audit('login_throttled', { rule: refusal.rule, retryAfterSeconds: refusal.retryAfterSeconds });
    throw new AppError('temporarily_unavailable', 'Login throttled', {
      retryAfterSeconds: refusal.retryAfterSeconds,
    });
  };

  /** After a login without the password grant's counters: the client becomes known to the account; its device token. */
  const knownClientToken = async (user: User, presented: string | undefined, context: RequestContext) => {
    if (!throttling) return undefined;
    const ip = throttling.throttle.clientKey(context.ipAddress);
    const canonical = normaliseUsername(user.username)?.canonical;
    const identity = await throttling.knownClients.identify(canonical, ip, presented);
    return throttling.knownClients.remember(user.id, ip, identity);
  };

  /** THROTTLING.md §8's order: the request cap (R5), then the failure counters reserved before any hash. */
  const throttleLogin = async (
    { throttle, knownClients }: LoginThrottling,
    credentials: PasswordCredentials,
    context: RequestContext,
  ) => {
    const ip = throttle.clientKey(context.ipAddress);
    const rateRefusal = await throttle.admitPasswordGrant(ip);
    if (rateRefusal) return { refusal: rateRefusal, identity: undefined, attempt: undefined };
    const canonical = normaliseUsername(credentials.username)?.canonical;
    const identity = await knownClients.identify(canonical, ip, credentials.deviceToken);
    const attempt: LoginAttempt = {
      username: credentials.username,
      ip,
      deviceId: identity.deviceId,
      trusted: identity.trusted,
    };
    return { refusal: await throttle.reserveLoginAttempt(attempt), identity, attempt };
  };

  const rememberClient = async (
    { throttle, knownClients }: LoginThrottling,
    attempt: LoginAttempt,
    identity: ClientIdentity,
    userId: number,
  ) => {
    await throttle.recordLoginSuccess(attempt);
    return knownClients.remember(userId, attempt.ip, identity);
  };

  /** The scopes a login whose password matched may have; throws invalid_scope when it asked for more. */
  const grantScopesOfLogin = async (
    user: User,
    requested: ReadonlySet<Scope> | undefined,
    context: RequestContext,
    attempt: LoginAttempt | undefined,
  ) => {
    try {
      return grantScopes(requested, scopesPermittedTo(user));
    } catch (error) {
      // The password was right: the account's own user asked for too much, which is no guess to count.
      if (throttling && attempt) await throttling.throttle.recordLoginSuccess(attempt);
      context.audit('login_failed', { userId: user.id, username: user.username, reason: 'invalid_scope' });
      throw error;
    }
  };

  return {
    async passwordGrant(credentials, context) {
      // An unknown scope is refused before anything else: the answer says nothing about the account.
      const requestedScopes = parseRequestedScope(credentials.scope);
      // Under a flood, a grant whose hash would be shed anyway is refused before the counter store and the database
      // see it: as a shed hash, it is no attempt, so no rule counts it. Not earlier than here: the grant type is in
      // the body, and a refresh grant, which never hashes, must be served throughout.
      hashQueue?.refuseWhenFull();
      // People type their password into the username field; only a name that could be one is logged.
      const attempted = normaliseUsername(credentials.username);
      const logged = attempted ? { username: attempted.display } : {};
      const throttled = throttling && (await throttleLogin(throttling, credentials, context));
      if (throttled?.refusal) {
        const { rule, retryAfterSeconds } = throttled.refusal;
        const userId = throttled.identity?.userId;
        // With the account when the name is one, so that the lockout shows in its activity (the name alone is kept
        // only for an account: one that matches none may be a password typed into the wrong field).
        context.audit('login_throttled', {
          rule,
          ...logged,
          retryAfterSeconds,
          ...(userId ? { userId } : {}),
        });
        context.audit('login_failed', { ...logged, reason: 'locked', ...(userId ? { userId } : {}) });
        return { outcome: 'locked', retryAfterSeconds };
      }

      const check = await accounts
        .verifyCredentials(
          credentials.username,
          credentials.password,
          context.signal ? { signal: context.signal } : {},
        )
        .catch(async (error: unknown) => {
          // Shed (or the client left) before its hash ran: nothing was verified, so nothing may count as a failure.
          if (throttling && throttled?.attempt)
            await throttling.throttle.releaseLoginAttempt(throttled.attempt);
          throw error;
        });
      // ASVS 6.3.8: the account's state is told only once its password matched, and the attempt stays counted.
      if (check.outcome === 'verified' && !isAccountUsable(check.user)) {
        context.audit('login_failed', { ...logged, reason: 'account_disabled', userId: check.user.id });
        return { outcome: 'disabled' };
      }
      if (check.outcome === 'verified' && deps.requireVerifiedEmail && check.user.emailVerifiedAt === null) {
        // The password was right: its owner is no guesser, so the failures it reserved are forgotten.
        if (throttling && throttled?.attempt) await throttling.throttle.recordLoginSuccess(throttled.attempt);
        context.audit('login_failed', { ...logged, reason: 'email_not_verified', userId: check.user.id });
        return { outcome: 'email_not_verified' };
      }
      const scopes =
        check.outcome === 'verified'
          ? await grantScopesOfLogin(check.user, requestedScopes, context, throttled?.attempt)
          : undefined;
      const methods =
        check.outcome === 'verified' && scopes !== undefined && secondFactors && mfa
          ? await secondFactors.methodsOf(check.user.id)
          : [];
      if (check.outcome === 'verified' && scopes !== undefined && mfa && methods.length > 0) {
        // The password was right: its failures are forgotten as for a success, but the client earns its device token
        // only with the second leg.
        if (throttling && throttled?.attempt) await throttling.throttle.recordLoginSuccess(throttled.attempt);
        const mfaToken = await mfa.startChallenge(check.user, check.verifiedHash, formatScope(scopes));
        // Disabled since the password was checked: as if it had been before.
        if (mfaToken === undefined) {
          context.audit('login_failed', { ...logged, reason: 'account_disabled', userId: check.user.id });
          return { outcome: 'disabled' };
        }
        context.audit('login_second_factor_required', { userId: check.user.id });
        return { outcome: 'second_factor_required', mfaToken, methods };
      }
      // A password changed between the check and the session: the login proved a password that is no longer theirs.
      const tokens =
        check.outcome === 'verified' &&
        scopes !== undefined &&
        (await sessions.startSession(check.user, check.verifiedHash, context, scopes));
      if (check.outcome !== 'verified' || !tokens) {
        context.audit('login_failed', { ...logged, ...failureOf(check) });
        return { outcome: 'refused' };
      }
      const deviceToken =
        throttling && throttled?.attempt && throttled.identity
          ? await rememberClient(throttling, throttled.attempt, throttled.identity, check.user.id)
          : undefined;
      context.audit('login_succeeded', { userId: check.user.id });
      return { outcome: 'granted', tokens, deviceToken };
    },

    async mfaGrant(request, context) {
      if (!mfa) throw invalidMfaGrant();
      await admitGrant(context);
      const passed = await mfa.redeemChallenge(request.mfaToken, request.proof, context).catch((error) => {
        if (error instanceof AppError && error.code === 'invalid_grant')
          context.audit('login_failed', { reason: 'second_factor' });
        throw error;
      });
      const { user } = passed;
      // Judged again: an account disabled (or whose roles shrank) during the five minutes gets nothing more.
      if (!isAccountUsable(user)) {
        context.audit('login_failed', { reason: 'account_disabled', userId: user.id });
        throw invalidMfaGrant();
      }
      const scopes = effectiveScopes(scopesOfToken(passed.scope), user);
      if (scopes.size === 0) throw invalidMfaGrant();
      const tokens = await sessions.startSession(user, passed.verifiedHash, context, scopes, {
        amr: passed.amr,
      });
      if (!tokens) {
        context.audit('login_failed', { reason: 'account_changed', userId: user.id });
        throw invalidMfaGrant();
      }
      const deviceToken = await knownClientToken(user, request.deviceToken, context);
      context.audit('login_succeeded', { userId: user.id, method: passed.method });
      return { tokens, deviceToken };
    },

    async passwordlessGrant(request, context) {
      if (!passkeys) throw invalidPasskeyGrant();
      const requestedScopes = parseRequestedScope(request.scope);
      await admitGrant(context);
      const login = await passkeys.passwordlessLogin(request.challengeId, request.response, context);
      if (!login) throw invalidPasskeyGrant();
      const { user } = login;
      if (!isAccountUsable(user)) {
        context.audit('login_failed', { userId: user.id, reason: 'account_disabled' });
        throw new AppError('invalid_grant', ACCOUNT_DISABLED);
      }
      if (deps.requireVerifiedEmail && user.emailVerifiedAt === null) {
        context.audit('login_failed', { userId: user.id, reason: 'email_not_verified' });
        throw new AppError('invalid_grant', 'Email not verified');
      }
      const scopes = grantScopes(requestedScopes, scopesPermittedTo(user));
      const tokens = await sessions.startSession(user, null, context, scopes, {
        amr: login.amr,
      });
      if (!tokens) throw invalidPasskeyGrant();
      const deviceToken = await knownClientToken(user, request.deviceToken, context);
      context.audit('login_succeeded', { userId: user.id, reason: 'passkey' });
      return { tokens, deviceToken };
    },

    async refreshTokenGrant(refreshToken, context, scope) {
      const requestedScopes = parseRequestedScope(scope);
      if (!throttling) return sessions.rotateRefreshToken(refreshToken, context, { requestedScopes });
      const { throttle } = throttling;
      // Before the token is read: past it, a flood from one address costs no database work.
      await throttle.admitRefresh(context);
      // The family is known only once the token is looked up; the session names it.
      return sessions.rotateRefreshToken(refreshToken, context, {
        requestedScopes,
        admitRotation: async (sessionId, userId) => {
          const ofSession = await throttle.admitRefreshOfSession(sessionId);
          return ofSession && (() => throttle.refuse(ofSession, context, userId));
        },
      });
    },
  };
}

function failureOf(check: CredentialCheck) {
  switch (check.outcome) {
    case 'unknown_user':
      return { reason: 'unknown_user' };
    case 'wrong_password':
      return { reason: 'wrong_password', userId: check.userId };
    // The password was right, but the account changed before the session opened: its password, or it was disabled or
    // deleted meanwhile.
    case 'verified':
      return { reason: 'account_changed', userId: check.user.id };
  }
}
