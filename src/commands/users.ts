import type { Config } from '../config.ts';
import { ROLES, type Role, type User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import { MAX_USER_PAGE_SIZE, type UserReference } from '../services/operators.ts';
import { accountRecord, auditEventRecord, sessionRecord } from '../services/records.ts';
import { type OperatorSession, withOperatorService } from './operator-session.ts';
import { type CommandIo, printFields, printJson, printTable } from './output.ts';

/** What a parsed command line gives a command: its options, its positional arguments, and the terminal. */
export interface CommandInput {
  config: Config;
  options: Readonly<Record<string, string | boolean | undefined>>;
  positionals: readonly string[];
  io: CommandIo;
}

export const EXIT_OK = 0;
/** Not found, or refused. */
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;

const DEFAULT_PAGE_SIZE = 50;

const status = (user: User) => (user.disabledAt ? 'disabled' : 'active');
const rolesText = (user: User) => (user.roles.length > 0 ? user.roles.join(',') : '-');

const byName = (input: CommandInput): UserReference => ({ username: input.positionals[0] ?? '' });

/**
 * Runs an operator action; a missing user (or session) is exit 1 with `missing` on stderr, a malformed value exit 2.
 */
async function operate(
  input: CommandInput,
  options: { counters?: boolean; missing: string },
  action: (session: OperatorSession) => Promise<number>,
): Promise<number> {
  try {
    return await withOperatorService(input.config, input.io, { counters: options.counters ?? false }, action);
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    if (error.code === 'not_found') {
      input.io.warn(`gatehouse: ${options.missing}`);
      return EXIT_REFUSED;
    }
    if (error.code === 'validation_failed') {
      input.io.warn(`gatehouse: ${error.message}`);
      return EXIT_USAGE;
    }
    throw error;
  }
}

const noUser = (input: CommandInput) => `no user named "${input.positionals[0] ?? ''}"`;

/** Reads --limit as a whole number of 1 to `max`; undefined (after saying why) when it is not one. */
export function readLimit(input: CommandInput, fallback: number, max: number): number | undefined {
  const raw = input.options.limit;
  if (raw === undefined) return fallback;
  const limit = Number(raw);
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || limit < 1 || limit > max) {
    input.io.warn(`gatehouse: --limit must be a whole number from 1 to ${max}`);
    return undefined;
  }
  return limit;
}

export async function listUsersCommand(input: CommandInput): Promise<number> {
  const limit = readLimit(input, DEFAULT_PAGE_SIZE, MAX_USER_PAGE_SIZE);
  if (limit === undefined) return EXIT_USAGE;
  const search = input.options.search as string | undefined;
  const cursor = input.options.cursor as string | undefined;
  return operate(input, { missing: 'nothing found' }, async ({ operators }) => {
    const page = await operators.listUsers({
      limit,
      ...(search !== undefined ? { search } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
    });
    if (input.options.json) {
      printJson(input.io, { users: page.users.map(accountRecord), next: page.next ?? null });
      return EXIT_OK;
    }
    printTable(
      input.io,
      ['id', 'username', 'email', 'roles', 'status', 'created'],
      page.users.map((user) => [
        user.id,
        user.username,
        user.email,
        rolesText(user),
        status(user),
        user.createdAt,
      ]),
      search ? `no users match "${search}"` : 'no users',
    );
    if (page.next) input.io.warn(`more: add --cursor ${page.next}`);
    return EXIT_OK;
  });
}

export function showUserCommand(input: CommandInput): Promise<number> {
  return operate(input, { missing: noUser(input) }, async ({ operators, context }) => {
    const { user, liveSessions, lastLoginAt } = await operators.showUser(byName(input), context);
    if (input.options.json) {
      printJson(input.io, {
        ...accountRecord(user),
        live_sessions: liveSessions,
        last_login_at: lastLoginAt?.toISOString() ?? null,
      });
      return EXIT_OK;
    }
    printFields(input.io, [
      ['id', user.id],
      ['username', user.username],
      ['email', user.email],
      ['age', user.age],
      ['level', user.level],
      ['roles', rolesText(user)],
      ['status', user.disabledAt ? `disabled since ${user.disabledAt.toISOString()}` : 'active'],
      ['created', user.createdAt],
      ['live sessions', liveSessions],
      ['last login', lastLoginAt],
    ]);
    return EXIT_OK;
  });
}

/** Prints the outcome of a change: the user as JSON, or a sentence. */
function report(input: CommandInput, user: User, extra: Record<string, unknown>, sentence: string): number {
  if (input.options.json) printJson(input.io, { ...accountRecord(user), ...extra });
  else input.io.print(sentence);
  return EXIT_OK;
}

export function disableUserCommand(input: CommandInput): Promise<number> {
  return operate(input, { missing: noUser(input) }, async ({ operators, context }) => {
    const { user, changed, endedSessions } = await operators.disableUser(byName(input), context);
    const ended = `${endedSessions} session(s) ended`;
    return report(
      input,
      user,
      { changed, ended_sessions: endedSessions },
      changed ? `disabled ${user.username}; ${ended}` : `${user.username} was already disabled; ${ended}`,
    );
  });
}

export function enableUserCommand(input: CommandInput): Promise<number> {
  return operate(input, { missing: noUser(input) }, async ({ operators, context }) => {
    const { user, changed } = await operators.enableUser(byName(input), context);
    return report(
      input,
      user,
      { changed },
      changed ? `enabled ${user.username}: they can log in again` : `${user.username} was not disabled`,
    );
  });
}

export function unlockUserCommand(input: CommandInput): Promise<number> {
  return operate(
    input,
    { counters: true, missing: noUser(input) },
    async ({ operators, context, countersFailed }) => {
      const { user, outcome } = await operators.unlockUser(byName(input), context);
      if (countersFailed()) {
        input.io.warn('gatehouse: Redis did not answer: nothing was cleared; try again');
        return EXIT_REFUSED;
      }
      if (outcome === 'counters_unreachable') {
        input.io.warn(
          'gatehouse: the throttling counters live in each server process (no REDIS_URL), out of reach of this ' +
            `command: use the admin API (POST /admin/users/${user.id}/unlock), or restart the server`,
        );
        return EXIT_REFUSED;
      }
      return report(
        input,
        user,
        { unlocked: outcome === 'cleared' },
        outcome === 'cleared'
          ? `unlocked ${user.username}: the failed logins and second-factor failures counted against the account are forgotten`
          : `login throttling is off (RATE_LIMITS=off): ${user.username} has nothing to unlock`,
      );
    },
  );
}

export function resetMfaCommand(input: CommandInput): Promise<number> {
  return operate(
    input,
    { counters: true, missing: noUser(input) },
    async ({ operators, context, countersFailed }) => {
      const { user, totp, recoveryCodes, passkeys, lock } = await operators.resetSecondFactors(
        byName(input),
        context,
      );
      const removed = [
        ...(totp === 'none' ? [] : [`the ${totp} authenticator app`]),
        ...(recoveryCodes > 0 ? [`${recoveryCodes} unused recovery code(s)`] : []),
        ...(passkeys > 0 ? [`${passkeys} passkey(s)`] : []),
      ];
      // The factors are gone either way; only a lock their guessers left (R13: 15 minutes, or 30 days past 100
      // failures) may outlive them, where this command cannot reach the counters.
      const lockCleared = lock === 'cleared' && !countersFailed();
      const lockNote =
        lock === 'throttling_off' || lockCleared
          ? ''
          : input.config.redis
            ? '; Redis did not answer, so a second-factor lock they may have stands: `gatehouse users unlock` clears it'
            : `; a second-factor lock they may have lives in the server process (no REDIS_URL): POST /admin/users/${user.id}/unlock clears it`;
      return report(
        input,
        user,
        {
          removed: { totp: totp !== 'none', totp_status: totp, recovery_codes: recoveryCodes, passkeys },
          second_factor_lock_cleared: lockCleared,
        },
        (removed.length > 0
          ? `reset ${user.username}'s second factors: removed ${removed.join(', ')}; they were mailed; they log in with the password alone until they enrol again`
          : `${user.username} had no second factor; nothing removed`) + lockNote,
      );
    },
  );
}

export async function deleteUserCommand(input: CommandInput): Promise<number> {
  const name = input.positionals[0] ?? '';
  if (!input.options.yes) {
    const confirmed = await input.io.confirm(
      `Delete the account "${name}" with its conversation and sessions? This cannot be undone. [y/N] `,
    );
    if (!confirmed) {
      input.io.warn('gatehouse: not deleted (confirm on a terminal, or pass --yes)');
      return EXIT_REFUSED;
    }
  }
  return operate(input, { missing: noUser(input) }, async ({ operators, context }) => {
    const user = await operators.deleteUser(byName(input), context);
    return report(input, user, { deleted: true }, `deleted ${user.username} (id ${user.id})`);
  });
}

function readRole(input: CommandInput): Role | undefined {
  const role = input.positionals[1];
  if ((ROLES as readonly (string | undefined)[]).includes(role)) return role as Role;
  input.io.warn(`gatehouse: unknown role "${role ?? ''}" (roles: ${ROLES.join(', ')})`);
  return undefined;
}

const changeRole =
  (grant: boolean) =>
  async (input: CommandInput): Promise<number> => {
    const role = readRole(input);
    if (!role) return EXIT_USAGE;
    return operate(input, { missing: noUser(input) }, async ({ operators, context }) => {
      const change = grant
        ? await operators.grantRole(byName(input), role, context)
        : await operators.revokeRole(byName(input), role, context);
      const name = change.user.username;
      const sentence = grant
        ? change.changed
          ? `granted ${role} to ${name}`
          : `${name} already has ${role}`
        : change.changed
          ? `revoked ${role} from ${name}: their tokens lose it at their next request`
          : `${name} did not have ${role}`;
      return report(input, change.user, { changed: change.changed }, sentence);
    });
  };

export const grantRoleCommand = changeRole(true);
export const revokeRoleCommand = changeRole(false);

export async function userEventsCommand(input: CommandInput): Promise<number> {
  const limit = readLimit(input, 20, 100);
  if (limit === undefined) return EXIT_USAGE;
  return operate(input, { missing: noUser(input) }, async ({ operators, context }) => {
    const page = await operators.listAuditEvents(
      byName(input),
      { limit, before: input.options.before as string | undefined },
      context,
    );
    if (input.options.json) {
      printJson(input.io, { events: page.events.map(auditEventRecord), next: page.next ?? null });
      return EXIT_OK;
    }
    printTable(
      input.io,
      ['at', 'event', 'ip', 'detail'],
      page.events.map((event) => [
        event.createdAt,
        event.event,
        event.ipAddress,
        Object.entries(event.detail)
          .map(([name, value]) => `${name}=${value}`)
          .join(' '),
      ]),
      'no events',
    );
    if (page.next) input.io.warn(`more: add --before ${page.next}`);
    return EXIT_OK;
  });
}

const sessionUser = (input: CommandInput): UserReference => ({ username: input.options.user as string });

export function listSessionsCommand(input: CommandInput): Promise<number> {
  return operate(
    input,
    { missing: `no user named "${input.options.user}"` },
    async ({ operators, context }) => {
      const { sessions } = await operators.listSessions(sessionUser(input), context);
      if (input.options.json) {
        printJson(input.io, { sessions: sessions.map(sessionRecord) });
        return EXIT_OK;
      }
      printTable(
        input.io,
        ['id', 'created', 'last used', 'ip', 'user agent'],
        sessions.map((session) => [
          session.id,
          session.createdAt,
          session.lastUsedAt,
          session.ipAddress,
          session.userAgent,
        ]),
        'no live sessions',
      );
      return EXIT_OK;
    },
  );
}

export function revokeSessionsCommand(input: CommandInput): Promise<number> {
  const sessionId = input.options.session as string | undefined;
  const missing =
    sessionId === undefined
      ? `no user named "${input.options.user}"`
      : `no live session ${sessionId} of a user named "${input.options.user}"`;
  return operate(input, { missing }, async ({ operators, context }) => {
    const { user, ended } = await operators.revokeSessions(sessionUser(input), sessionId, context);
    return report(input, user, { ended_sessions: ended }, `ended ${ended} session(s) of ${user.username}`);
  });
}
