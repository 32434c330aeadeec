import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createSessionsRepository, type SessionsRepository } from '../../src/db/sessions.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { generateOneTimeToken } from '../../src/security/one-time-tokens.ts';
import { createAccountControls } from '../../src/services/account-controls.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

describe.each(dialects)('account controls on %s', (dialect) => {
  let database: TestDatabase;
  const clock = createTestClock();
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  /** Opens a session of the user as a login that verified `name`'s password would; false when refused. */
  const openSession = (sessions: SessionsRepository, userId: number, name: string, id: string) =>
    sessions.insertSession(
      {
        id,
        userId,
        expiresAt: new Date(clock.now().getTime() + 3600_000),
        userAgent: undefined,
        ipAddress: undefined,
        scope: 'conversation:read conversation:write',
      },
      { id: `${id}-rt`, secretHash: 'h' },
      newUser(name).passwordHash,
      clock.now(),
    );

  const setUp = async (name: string) => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser(name), 'welcome', clock.now());
    for (const id of [`${name}-1`, `${name}-2`]) await openSession(sessions, user.id, name, id);
    return { user, users, sessions, controls: createAccountControls({ users, sessions, clock }) };
  };

  it('disables an account since now and ends every session of it, so that enabling it revives none', async () => {
    const { user, users, sessions, controls } = await setUp('Greta');
    const disabled = await controls.disableUser(user.id);
    expect(disabled).toMatchObject({ changed: true, endedSessions: 2, user: { disabledAt: clock.now() } });
    expect((await users.findUserById(user.id))?.disabledAt).toEqual(clock.now());
    const stored = await sessions.findSessionsOfUser(user.id);
    expect(stored.map((session) => session.revokedAt)).toEqual([clock.now(), clock.now()]);
    const enabled = await controls.enableUser(user.id);
    expect(enabled).toMatchObject({ changed: true, user: { disabledAt: null } });
    expect((await sessions.findSessionsOfUser(user.id)).every((session) => session.revokedAt)).toBe(true);
    expect(await controls.enableUser(user.id)).toMatchObject({ changed: false, user: { disabledAt: null } });
  });

  // Found from outside: logins whose password was checked before an admin's disabling opened their sessions after it
  // had ended the others, and enabling the account again brought them back.
  it('refuses the session of a login checked before the disabling and opened after it, also once enabled again', async () => {
    const { user, sessions, controls } = await setUp('Gerda');
    await controls.disableUser(user.id);
    expect(await openSession(sessions, user.id, 'Gerda', 'Gerda-late')).toBe(false);
    await controls.enableUser(user.id);
    const stored = await sessions.findSessionsOfUser(user.id);
    expect(stored.map((session) => session.id).sort()).toEqual(['Gerda-1', 'Gerda-2']);
    expect(stored.every((session) => session.revokedAt !== null)).toBe(true);
  });

  it('voids the second leg of a login in progress: its mfa_token does not outlive a disabling', async () => {
    const { user, controls } = await setUp('Gisela');
    const mfa = createMfaRepository(database.db);
    const { tokenHash } = generateOneTimeToken();
    await mfa.insertMfaChallenge(
      {
        tokenHash,
        userId: user.id,
        scope: 's',
        passwordDigest: 'd',
        expiresAt: new Date(clock.now().getTime() + 300_000),
      },
      clock.now(),
    );
    await controls.disableUser(user.id);
    await controls.enableUser(user.id);
    expect(await mfa.countMfaChallengeAttempt(tokenHash, 5, clock.now())).toBeUndefined();
  });

  // Found in review: a login whose password was checked before the disabling stored its challenge after it.
  it('stores no second leg for a disabled account, so none is left once it is enabled again', async () => {
    const { user, controls } = await setUp('Gitta');
    const mfa = createMfaRepository(database.db);
    const { tokenHash } = generateOneTimeToken();
    await controls.disableUser(user.id);
    const stored = await mfa.insertMfaChallenge(
      {
        tokenHash,
        userId: user.id,
        scope: 's',
        passwordDigest: 'd',
        expiresAt: new Date(clock.now().getTime() + 300_000),
      },
      clock.now(),
    );
    expect(stored).toBe(false);
    await controls.enableUser(user.id);
    expect(await mfa.countMfaChallengeAttempt(tokenHash, 5, clock.now())).toBeUndefined();
  });

  it('keeps the time an account was first disabled when it is disabled again', async () => {
    const { user, controls } = await setUp('Hanna');
    const first = await controls.disableUser(user.id);
    clock.advanceSeconds(60);
    const again = await controls.disableUser(user.id);
    expect(again).toMatchObject({ changed: false, endedSessions: 0 });
    expect(again.user.disabledAt).toEqual(first.user.disabledAt);
  });

  it('grants and revokes the admin role, idempotently', async () => {
    const { user, users, controls } = await setUp('Ida');
    expect(await controls.grantRole(user.id, 'admin')).toMatchObject({
      changed: true,
      user: { roles: ['admin'] },
    });
    expect(await controls.grantRole(user.id, 'admin')).toMatchObject({
      changed: false,
      user: { roles: ['admin'] },
    });
    expect((await users.findUserById(user.id))?.roles).toEqual(['admin']);
    expect(await controls.revokeRole(user.id, 'admin')).toMatchObject({ changed: true, user: { roles: [] } });
    expect(await controls.revokeRole(user.id, 'admin')).toMatchObject({
      changed: false,
      user: { roles: [] },
    });
  });

  it('throws not_found for a user who does not exist', async () => {
    const { controls } = await setUp('Jon');
    for (const run of [
      () => controls.disableUser(999_999),
      () => controls.enableUser(999_999),
      () => controls.grantRole(999_999, 'admin'),
      () => controls.revokeRole(999_999, 'admin'),
    ]) {
      await expect(run()).rejects.toMatchObject({ code: 'not_found' });
    }
  });
});
