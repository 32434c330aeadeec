import type { SessionsRepository } from '../db/sessions.ts';
import type { UsersRepository } from '../db/users.ts';
import type { Role, User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';

/** What an account control did: the user as now stored, and whether they were not already so. */
export interface AccountChange {
  user: User;
  /** False when the account already was as asked: nothing was written (and operators audit nothing). */
  changed: boolean;
}

/**
 * What an operator may do to an account besides what its user can: the one home of these rules, behind the operator
 * service (services/operators.ts), which names the account and audits each call with the acting operator.
 */
export interface AccountControls {
  /**
   * Disables the account (kept, with its data): it can no longer log in or refresh, and its sessions end, so its live
   * access tokens stop at once and enabling it later revives none; throws not_found.
   */
  disableUser(userId: number): Promise<AccountChange & { endedSessions: number }>;
  /** Lets the account log in again; throws not_found. */
  enableUser(userId: number): Promise<AccountChange>;
  /** Adds the role; the user's next login may ask for its scope. Throws not_found. */
  grantRole(userId: number, role: Role): Promise<AccountChange>;
  /** Removes the role; its scope stops working in live tokens at once. Throws not_found. */
  revokeRole(userId: number, role: Role): Promise<AccountChange>;
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
  // A user deleted between the read and the write is not found either.
  const found = (user: User | undefined) => {
    if (!user) throw new AppError('not_found', 'User not found');
    return user;
  };
  const unchanged = (user: User) => ({ user, changed: false });
  const changedTo = (user: User | undefined) => ({ user: found(user), changed: true });

  const setRoles = async (userId: number, role: Role, held: boolean) => {
    const user = await existing(userId);
    if (user.roles.includes(role) === held) return unchanged(user);
    const roles = held ? [...user.roles, role] : user.roles.filter((name) => name !== role);
    return changedTo(await users.setUserRoles(userId, roles));
  };

  return {
    async disableUser(userId) {
      const user = await existing(userId);
      const now = clock.now();
      // Disabled again: the first time stays, since it says since when.
      const change =
        user.disabledAt === null ? changedTo(await users.setUserDisabled(userId, now)) : unchanged(user);
      // Also when it already was disabled: a session opened by a login racing the first disabling ends here. Every
      // request checks the account too, so tokens stop even before this ends the sessions.
      const endedSessions = await sessions.revokeEverySessionOfUser(userId, 'account_disabled', now);
      await users.forgetTrustedClients(userId);
      return { ...change, endedSessions };
    },

    async enableUser(userId) {
      const user = await existing(userId);
      if (user.disabledAt === null) return unchanged(user);
      return changedTo(await users.setUserDisabled(userId, null));
    },

    grantRole: (userId, role) => setRoles(userId, role, true),

    revokeRole: (userId, role) => setRoles(userId, role, false),
  };
}
