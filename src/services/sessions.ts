import type { User } from '../db/users.ts';
import { AppError } from '../errors.ts';
import type { AccessTokens } from '../security/access-tokens.ts';
import type { AccountsService } from './accounts.ts';

export interface TokenGrant {
  accessToken: string;
  tokenType: 'bearer';
  expiresInSeconds: number;
  scope: string;
}

export interface SessionsService {
  /** Returns a new access token for a user who has just proved who they are. */
  issueTokens(user: User): Promise<TokenGrant>;
  /** Returns the user a bearer token speaks for; throws invalid_token when it speaks for no one. */
  authenticate(token: string): Promise<User>;
}

export const DEFAULT_SCOPE = 'conversation';

export function createSessionsService(deps: {
  accessTokens: AccessTokens;
  accounts: AccountsService;
}): SessionsService {
  const { accessTokens, accounts } = deps;
  return {
    async issueTokens(user) {
      const issued = await accessTokens.issue({
        userId: user.id,
        username: user.username,
        scope: DEFAULT_SCOPE,
      });
      return {
        accessToken: issued.token,
        tokenType: 'bearer',
        expiresInSeconds: issued.expiresInSeconds,
        scope: DEFAULT_SCOPE,
      };
    },

    async authenticate(token) {
      const verified = await accessTokens.verify(token);
      const user = await accounts.findUser(verified.userId);
      if (!user) throw new AppError('invalid_token', 'Could not validate credentials');
      return user;
    },
  };
}
