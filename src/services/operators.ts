import type { MfaRepository } from '../db/mfa.ts';
import type { PasskeysRepository } from '../db/passkeys.ts';
import type { SessionsRepository } from '../db/sessions.ts';
import type { SigningKeysRepository } from '../db/signing-keys.ts';
import { MAX_USER_ID, type UsersRepository } from '../db/users.ts';
import { emailSearchForms } from '../domain/email.ts';
import type { ListedSession } from '../domain/session.ts';
import type { Role, User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import type { SecretBox } from '../security/secret-box.ts';
import { foldCase } from '../security/usernames.ts';
import { type AccountChange, createAccountControls } from './account-controls.ts';
import { normaliseUsername } from './accounts.ts';
import { type ActivityPage, type AuditTrail, decodeActivityCursor, encodeActivityCursor } from './audit.ts';
import { listSigningKeys, rotateSigningKey, type SigningKeyState } from './keys.ts';
import type { MailComposer } from './mail.ts';
import type { RequestContext } from './request-context.ts';
import { listedSession, type SessionPolicy, sessionState } from './session-state.ts';
import type { Throttle } from './throttle.ts';

/** Who acts: an operator at the command line (with their OS account's name), or an admin over the API. */
export type Actor = { kind: 'cli'; osUser: string } | { kind: 'admin'; userId: number };

/** An operator's request: who acts, and where its audit events go. */
export interface OperatorContext {
  actor: Actor;
  audit: RequestContext['audit'];
}

/** How an operator names an account: the API by id, the command line by username. */
export type UserReference = { id: number } | { username: string };

export interface UserPage {
  users: User[];
  /** The cursor of the next page; undefined on the last page. */
  next: string | undefined;
}

export interface UserDetails {
  user: User;
  liveSessions: number;
  /** When the newest stored session began; sessions are deleted a day after they end, so older logins are not known. */
  lastLoginAt: Date | undefined;
}

/** What a change did; one that changed nothing (`changed: false`) is not audited. */
export type Change = AccountChange;

/**
 * Where the throttling counters are, as this process sees them: not kept (throttling off), here (this process counts
 * them, or reaches the shared store), or in another process's memory (a command run beside a server without Redis).
 */
export type AccountFailures =
  | { kind: 'off' }
  | { kind: 'reachable'; throttle: Throttle }
  | { kind: 'unreachable' };

export type UnlockOutcome = 'cleared' | 'throttling_off' | 'counters_unreachable';

export type KeyRetirement = 'retired' | 'not_found' | 'signing' | 'already_retired';

export interface OperatorService {
  /** Returns a page of users in id order, matching `search` (a substring of username or email) when given. */
  listUsers(query: { search?: string; limit: number; cursor?: string }): Promise<UserPage>;
  /** Returns the account with its live session count; throws not_found. */
  showUser(ref: UserReference, context: OperatorContext): Promise<UserDetails>;
  /** Disables the account and ends its sessions; throws not_found. */
  disableUser(ref: UserReference, context: OperatorContext): Promise<Change & { endedSessions: number }>;
  /** Lets a disabled account log in again; throws not_found. */
  enableUser(ref: UserReference, context: OperatorContext): Promise<Change>;
  /** Forgets the failed logins counted against the account (R2, R3) and its second-factor failures (R13); throws not_found. */
  unlockUser(ref: UserReference, context: OperatorContext): Promise<{ user: User; outcome: UnlockOutcome }>;
  /**
   * Removes every second factor of the account (authenticator app, recovery codes, passkeys) for a user who lost
   * them, audits mfa_reset and mails the user; returns what went. Throws not_found.
   */
  resetSecondFactors(ref: UserReference, context: OperatorContext): Promise<SecondFactorsReset>;
  /** Deletes the account with its conversation and sessions; throws not_found. */
  deleteUser(ref: UserReference, context: OperatorContext): Promise<User>;
  /** Throws not_found. */
  grantRole(ref: UserReference, role: Role, context: OperatorContext): Promise<Change>;
  /** Throws not_found. */
  revokeRole(ref: UserReference, role: Role, context: OperatorContext): Promise<Change>;
  /** Returns the account's live sessions, newest first; throws not_found. */
  listSessions(
    ref: UserReference,
    context: OperatorContext,
  ): Promise<{ user: User; sessions: ListedSession[] }>;
  /** Ends one live session of the account, or all of them; throws not_found (for the session too). */
  revokeSessions(
    ref: UserReference,
    sessionId: string | undefined,
    context: OperatorContext,
  ): Promise<{ user: User; ended: number }>;
  /** Returns a page of the account's audit events, newest first; throws not_found, validation_failed (cursor). */
  listAuditEvents(
    ref: UserReference,
    page: { limit: number; before: string | undefined },
    context: OperatorContext,
  ): Promise<ActivityPage & { user: User }>;
  /** Returns every signing key, newest first. */
  listSigningKeys(): Promise<SigningKeyState[]>;
  /** Adds a signing key that every instance signs with from its next login; returns its kid. */
  rotateSigningKey(context: OperatorContext): Promise<string>;
  /** Refuses tokens of a key from each instance's next key reload; the signing key cannot be retired. */
  retireSigningKey(kid: string, context: OperatorContext): Promise<KeyRetirement>;
}

/** What an operator's reset of second factors removed. */
export interface SecondFactorsReset {
  user: User;
  /** The authenticator app's state before: none, pending or active. */
  totp: 'none' | 'pending' | 'active';
  recoveryCodes: number;
  passkeys: number;
  /** Whether the second-factor lock and cap (R13) were forgotten too; out of a command's reach without Redis. */
  lock: UnlockOutcome;
}

/** What removing second factors needs: their storage and the one notice mail that tells of all of it. */
export interface OperatorSecondFactors {
  mfa: Pick<MfaRepository, 'findTotpFactor' | 'countRecoveryCodesLeft' | 'deleteSecondFactors'>;
  passkeys: Pick<PasskeysRepository, 'deleteAllPasskeys'>;
  mail: MailComposer;
}

export interface OperatorDependencies {
  /** Required: an operator service that could not reset second factors would fail the one way out of a lost factor. */
  secondFactors: OperatorSecondFactors;
  users: UsersRepository;
  sessions: SessionsRepository;
  signingKeys: SigningKeysRepository;
  box: SecretBox;
  auditTrail: AuditTrail;
  accountFailures: AccountFailures;
  clock: Clock;
  policy: SessionPolicy;
}

// Beyond this a page is no longer something to read on a screen or in one response.
export const MAX_USER_PAGE_SIZE = 100;

const actorOf = (actor: Actor) =>
  actor.kind === 'cli'
    ? { actor: `cli:${actor.osUser}` }
    : { actor: `admin:${actor.userId}`, actorUserId: actor.userId };

const notFound = () => new AppError('not_found', 'No such user');

/** Builds the rules operators act by, shared by the gatehouse command and the admin API. */
export function createOperatorService(deps: OperatorDependencies): OperatorService {
  const { users, sessions, clock, policy } = deps;
  // Disabling, enabling and roles are the account controls' rules; this names the account and audits.
  const controls = createAccountControls({ users, sessions, clock });

  const findUser = async (ref: UserReference): Promise<User> => {
    let user: User | undefined;
    if ('id' in ref) user = await users.findUserById(ref.id);
    else {
      const name = normaliseUsername(ref.username);
      user = name ? await users.findUserByUsername(name.canonical) : undefined;
    }
    if (!user) throw notFound();
    return user;
  };

  const audit = (context: OperatorContext, event: string, user: User | undefined, fields = {}) =>
    context.audit(event, {
      ...(user ? { userId: user.id, username: user.username } : {}),
      ...fields,
      ...actorOf(context.actor),
    });

  const liveSessionsOf = async (userId: number) => {
    const now = clock.now();
    const stored = await sessions.findSessionsOfUser(userId);
    return { stored, live: stored.filter((session) => sessionState(session, now, policy) === 'live') };
  };

  const changeRoles = async (
    ref: UserReference,
    role: Role,
    grant: boolean,
    context: OperatorContext,
  ): Promise<Change> => {
    const user = await findUser(ref);
    const change = grant ? await controls.grantRole(user.id, role) : await controls.revokeRole(user.id, role);
    if (change.changed) audit(context, grant ? 'role_granted' : 'role_revoked', user, { role });
    return change;
  };

  return {
    async listUsers({ search, limit, cursor }) {
      const afterId = cursor === undefined ? undefined : decodeActivityCursor(cursor);
      if (cursor !== undefined && (afterId === undefined || afterId > MAX_USER_ID)) {
        throw new AppError('validation_failed', 'Invalid cursor', {
          details: [{ loc: ['query', 'cursor'], msg: 'Invalid cursor', type: 'value_error' }],
        });
      }
      // Canonical columns are folded; so is the search, as each column's values are.
      const folded = search === undefined ? undefined : foldCase(search.trim().normalize('NFKC'));
      const size = Math.min(Math.max(1, limit), MAX_USER_PAGE_SIZE);
      const found = await users.searchUsers({
        search: folded || undefined,
        emailSearches: folded ? emailSearchForms((search ?? '').normalize('NFKC')) : [],
        limit: size + 1,
        afterId,
      });
      const page = found.slice(0, size);
      const last = page.at(-1);
      return { users: page, next: found.length > size && last ? encodeActivityCursor(last.id) : undefined };
    },

    async showUser(ref, context) {
      const user = await findUser(ref);
      const { stored, live } = await liveSessionsOf(user.id);
      audit(context, 'user_viewed', user, { view: 'account' });
      return {
        user,
        liveSessions: live.length,
        lastLoginAt: stored.reduce<Date | undefined>(
          (newest, session) => (newest && newest >= session.createdAt ? newest : session.createdAt),
          undefined,
        ),
      };
    },

    async disableUser(ref, context) {
      const user = await findUser(ref);
      const change = await controls.disableUser(user.id);
      if (change.changed) audit(context, 'user_disabled', user, { ended: change.endedSessions });
      return change;
    },

    async enableUser(ref, context) {
      const user = await findUser(ref);
      const change = await controls.enableUser(user.id);
      if (change.changed) audit(context, 'user_enabled', user);
      return change;
    },

    async unlockUser(ref, context) {
      const user = await findUser(ref);
      const failures = deps.accountFailures;
      if (failures.kind === 'off') return { user, outcome: 'throttling_off' };
      if (failures.kind === 'unreachable') return { user, outcome: 'counters_unreachable' };
      await failures.throttle.forgetAccountFailures(user.username);
      await failures.throttle.forgetSecondFactorFailures(user.id);
      audit(context, 'user_unlocked', user);
      return { user, outcome: 'cleared' };
    },

    async resetSecondFactors(ref, context) {
      const user = await findUser(ref);
      const factors = deps.secondFactors;
      const factor = await factors.mfa.findTotpFactor(user.id);
      const recoveryCodes = await factors.mfa.countRecoveryCodesLeft(user.id);
      const passkeys = await factors.passkeys.deleteAllPasskeys(user.id, [], clock.now());
      const notice = factors.mail.compose({
        userId: user.id,
        to: user.email,
        template: 'mfa_changed',
        values: { username: user.username, what: 'an operator removed every second factor of your account' },
      });
      const totp = factor?.status ?? 'none';
      const anything = totp !== 'none' || recoveryCodes > 0 || passkeys > 0;
      await factors.mfa.deleteSecondFactors(user.id, anything ? [notice] : [], clock.now(), {
        mailAnyway: anything,
      });
      audit(context, 'mfa_reset', user, { totp, recoveryCodes, passkeys });
      // A factor enrolled afresh must not meet the lock, or the cap of 100, that the old one's guessers left.
      const failures = deps.accountFailures;
      if (failures.kind === 'reachable') await failures.throttle.forgetSecondFactorFailures(user.id);
      const lock =
        failures.kind === 'reachable'
          ? 'cleared'
          : failures.kind === 'off'
            ? 'throttling_off'
            : 'counters_unreachable';
      return { user, totp, recoveryCodes, passkeys, lock };
    },

    async deleteUser(ref, context) {
      const user = await findUser(ref);
      // The repository deletes only over a known hash: read it, and read again if a password change came between.
      for (let attempt = 0; attempt < 3; attempt += 1) {
        const credentials = await users.findCredentialsById(user.id);
        if (!credentials) throw notFound();
        if (await users.deleteUser(user.id, credentials.passwordHash)) {
          audit(context, 'user_deleted', user);
          return user;
        }
      }
      throw new AppError('service_unavailable', 'The account kept changing; try again');
    },

    grantRole: (ref, role, context) => changeRoles(ref, role, true, context),

    revokeRole: (ref, role, context) => changeRoles(ref, role, false, context),

    async listSessions(ref, context) {
      const user = await findUser(ref);
      const { live } = await liveSessionsOf(user.id);
      audit(context, 'user_viewed', user, { view: 'sessions' });
      return { user, sessions: live.map((session) => listedSession(session, policy)) };
    },

    async revokeSessions(ref, sessionId, context) {
      const user = await findUser(ref);
      const now = clock.now();
      if (sessionId === undefined) {
        const ended = await sessions.revokeEverySessionOfUser(user.id, 'ended_by_operator', now);
        // As when the user signs out everywhere: the trust earlier logins earned their clients ends too.
        await users.forgetTrustedClients(user.id);
        audit(context, 'sessions_revoked', user, { ended });
        return { user, ended };
      }
      const { live } = await liveSessionsOf(user.id);
      const ended =
        live.some((session) => session.id === sessionId) &&
        (await sessions.revokeSession(sessionId, 'ended_by_operator', now));
      if (!ended) throw new AppError('not_found', 'No such live session');
      audit(context, 'session_revoked', user, { sessionId });
      return { user, ended: 1 };
    },

    async listAuditEvents(ref, page, context) {
      const user = await findUser(ref);
      const found = await deps.auditTrail.listActivity(user.id, page);
      // Recorded after the read, so that the page does not show its own viewing.
      audit(context, 'user_viewed', user, { view: 'audit_events' });
      return { ...found, user };
    },

    listSigningKeys: () => listSigningKeys(deps.signingKeys),

    async rotateSigningKey(context) {
      const kid = await rotateSigningKey(deps.signingKeys, clock, deps.box);
      audit(context, 'signing_key_rotated', undefined, { kid });
      return kid;
    },

    async retireSigningKey(kid, context) {
      const target = (await listSigningKeys(deps.signingKeys)).find((key) => key.kid === kid);
      if (!target) return 'not_found';
      if (target.state === 'signing') return 'signing';
      if (!(await deps.signingKeys.retireSigningKey(kid, clock.now()))) return 'already_retired';
      audit(context, 'signing_key_retired', undefined, { kid });
      return 'retired';
    },
  };
}
