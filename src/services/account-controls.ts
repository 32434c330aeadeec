import type { SessionsRepository } from '../db/sessions.ts';
import type { UsersRepository } from '../db/users.ts';
import type { Role, User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';

/**
 * What an operator may do to an account besides what its user can: the rules behind the CLI and the admin API, which
 * audit each call with the acting operator themselves.
 */
export interface AccountControls {
  /**
   * Disables the account (kept, with its data): it can no longer log in or refresh, and its sessions end, so its live
   * access tokens stop at once and enabling it later revives none; returns the user, throws not_found.
   */
  disableUser(userId: number): Promise<User>;
  /** Lets the account log in again; returns the user, throws not_found. */
  enableUser(userId: number): Promise<User>;
  /** Adds the role; the user's next login may ask for its scope. Returns the user, throws not_found. */
  grantRole(userId: number, role: Role): Promise<User>;
  /** Removes the role; its scope stops working in live tokens at once. Returns the user, throws not_found. */
  revokeRole(userId: number, role: Role): Promise<User>;
}

/** Builds the operator's account controls over the repositories alone (no keys needed, as the CLI has none loaded). */
export function createAccountControls(deps: {
  users: UsersRepository;
  sessions: SessionsRepository;
  clock: Clock;
}): AccountControls {
  const { users, sessions, clock } = deps;
  const existing = async (userId: number) => {
    const user = await users.findUserById(userId);
    if (!user) throw new AppError('not_found', 'User not found');
    return user;
  };
  const found = (user: User | undefined) => {
    if (!user) throw new AppError('not_found', 'User not found');
    return user;
  };

  return {
    async disableUser(userId) {
      const user = await existing(userId);
      const now = clock.now();
      // Disabled again: the first time stays, since it says since when.
      const disabled = user.disabledAt === null ? found(await users.setUserDisabled(userId, now)) : user;
      // Every request checks the account too, so tokens stop even before this ends the sessions.
      await sessions.revokeEverySessionOfUser(userId, 'account_disabled', now);
      await users.forgetTrustedClients(userId);
      return disabled;
    },

    async enableUser(userId) {
      return found(await users.setUserDisabled(userId, null));
    },

    async grantRole(userId, role) {
      const user = await existing(userId);
      if (user.roles.includes(role)) return user;
      return found(await users.setUserRoles(userId, [...user.roles, role]));
    },

    async revokeRole(userId, role) {
      const user = await existing(userId);
      if (!user.roles.includes(role)) return user;
      return found(
        await users.setUserRoles(
          userId,
          user.roles.filter((held) => held !== role),
        ),
      );
    },
  };
}
