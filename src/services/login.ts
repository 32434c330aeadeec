import type { AccountsService } from './accounts.ts';
import { normaliseUsername } from './accounts.ts';
import type { RequestContext } from './request-context.ts';
import type { SessionsService, TokenGrant } from './sessions.ts';

export interface PasswordCredentials {
  username: string;
  password: string;
}

/**
 * What a password login comes to. Refusals are values, not errors: throttling (`locked`) and second factors
 * (`second_factor_required`) decide inside the use case, and each outcome is answered in one place.
 */
export type PasswordGrantResult =
  | { outcome: 'granted'; tokens: TokenGrant }
  /** Wrong username or password, told apart from nothing else: the answer must not say which. */
  | { outcome: 'refused' }
  /** Too many failures: nothing was verified, and the answer is the same for known and unknown usernames. */
  | { outcome: 'locked'; retryAfterSeconds: number }
  /** The password matched an account with a second factor: the login continues with that factor. */
  | { outcome: 'second_factor_required'; mfaToken: string };

export interface LoginService {
  /** The resource owner password grant (RFC 6749 §4.3): checks the credentials and opens a session. */
  passwordGrant(credentials: PasswordCredentials, context: RequestContext): Promise<PasswordGrantResult>;
  /** The refresh token grant (RFC 6749 §6): rotates the token; throws invalid_grant. */
  refreshTokenGrant(refreshToken: string, context: RequestContext): Promise<TokenGrant>;
}

/** Builds the login use cases, one per grant of the token endpoint. */
export function createLoginService(deps: {
  accounts: AccountsService;
  sessions: SessionsService;
}): LoginService {
  const { accounts, sessions } = deps;
  return {
    async passwordGrant({ username, password }, context) {
      const login = await accounts.verifyCredentials(
        username,
        password,
        context.signal ? { signal: context.signal } : {},
      );
      // A password changed between the check and the session: the login proved a password that is no longer theirs.
      const tokens =
        'refused' in login ? undefined : await sessions.startSession(login.user, login.verifiedHash, context);
      if ('refused' in login || !tokens) {
        // People type their password into the username field; only a name that could be one is logged.
        const attempted = normaliseUsername(username);
        context.audit('login_failed', {
          ...(attempted ? { username: attempted.display } : {}),
          reason: 'refused' in login ? login.refused : 'wrong_password',
          userId: 'refused' in login ? login.userId : login.user.id,
        });
        return { outcome: 'refused' };
      }
      context.audit('login_succeeded', { userId: login.user.id });
      return { outcome: 'granted', tokens };
    },

    refreshTokenGrant: (refreshToken, context) => sessions.rotateRefreshToken(refreshToken, context),
  };
}
