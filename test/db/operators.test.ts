import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createAuditEventsRepository } from '../../src/db/audit-events.ts';
import { createCounterStore } from '../../src/db/counters.ts';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createPasskeysRepository } from '../../src/db/passkeys.ts';
import { createSessionsRepository } from '../../src/db/sessions.ts';
import { createSigningKeysRepository } from '../../src/db/signing-keys.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { canonicalEmail } from '../../src/domain/email.ts';
import type { User } from '../../src/domain/user.ts';
import { AppError } from '../../src/errors.ts';
import { createSecretBox, deriveMailAddressKey, generateSecret } from '../../src/security/secret-box.ts';
import { type AuditTrail, createAuditTrail } from '../../src/services/audit.ts';
import { createMailComposer } from '../../src/services/mail.ts';
import {
  type AccountFailures,
  createOperatorService,
  type OperatorContext,
  type OperatorService,
} from '../../src/services/operators.ts';
import { createThrottle, type LoginAttempt, type Throttle } from '../../src/services/throttle.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const IDLE_TTL_SECONDS = 3600;

describe.each(dialects)('the operator service on %s', (dialect) => {
  let database: TestDatabase;
  let auditTrail: AuditTrail;
  let throttle: Throttle;
  const clock = createTestClock(new Date('2026-12-04T12:00:00Z'));
  const counters = createCounterStore();
  const cli: OperatorContext = {
    actor: { kind: 'cli', osUser: 'root' },
    audit: (event, fields) =>
      auditTrail.record({ event, fields, ipAddress: undefined, userAgent: 'cli', requestId: undefined }),
  };
  const admin = (userId: number): OperatorContext => ({ ...cli, actor: { kind: 'admin', userId } });
  let userCount = 0;

  const service = (accountFailures?: AccountFailures): OperatorService =>
    createOperatorService({
      users: createUsersRepository(database.db),
      sessions: createSessionsRepository(database.db, database.dialect),
      signingKeys: createSigningKeysRepository(database.db),
      box: createSecretBox([randomBytes(32).toString('base64url')]),
      secondFactors: {
        mfa: createMfaRepository(database.db),
        passkeys: createPasskeysRepository(database.db),
        mail: createMailComposer(createSecretBox([randomBytes(32).toString('base64url')])),
      },
      auditTrail,
      accountFailures: accountFailures ?? { kind: 'reachable', throttle },
      clock,
      policy: { idleTtlSeconds: IDLE_TTL_SECONDS },
    });

  const freshUser = async (prefix = 'user'): Promise<User> => {
    userCount += 1;
    return createUsersRepository(database.db).insertUserWithConversation(
      newUser(`${prefix}${userCount}`),
      'hello',
      clock.now(),
    );
  };
  const openSession = async (user: User) => {
    const id = randomBytes(12).toString('base64url');
    const opened = await createSessionsRepository(database.db, database.dialect).insertSession(
      {
        id,
        userId: user.id,
        expiresAt: new Date(clock.now().getTime() + 86_400_000),
        userAgent: 'test',
        ipAddress: '192.0.2.1',
        scope: 'conversation:read conversation:write',
      },
      { id: randomBytes(12).toString('base64url'), secretHash: 'x' },
      newUser('x').passwordHash,
      clock.now(),
    );
    expect(opened).toBe(true);
    return id;
  };
  const events = async (userId: number) => {
    await auditTrail.flush();
    const rows = await database.db
      .selectFrom('audit_events')
      .select(['event', 'detail'])
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows.map((row) => ({ event: row.event, detail: JSON.parse(row.detail ?? '{}') }));
  };
  const code = (promise: Promise<unknown>) =>
    promise.then(
      () => 'resolved',
      (error) => (error instanceof AppError ? error.code : String(error)),
    );

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    auditTrail = createAuditTrail({
      auditEvents: createAuditEventsRepository(database.db),
      clock,
      retentionDays: 90,
      onEventsNotStored: (_count, error) => {
        throw error;
      },
    });
    throttle = createThrottle(
      counters,
      {
        ...loadConfig({ DATABASE_URL: 'sqlite::memory:' }).throttling,
        accountUntrustedFailures: 2,
      },
      { mailAddressKey: deriveMailAddressKey(generateSecret()) },
    );
  });
  afterAll(async () => {
    await auditTrail.flush();
    await counters.close();
    await database.destroy();
  });

  it('pages through users with an opaque cursor and searches them', async () => {
    const operators = service();
    const made = [await freshUser('pager'), await freshUser('pager'), await freshUser('pager')];
    const first = await operators.listUsers({ search: 'PAGER', limit: 2 });
    expect(first.users.map((user) => user.id)).toEqual([made[0]?.id, made[1]?.id]);
    expect(first.next).toEqual(expect.any(String));
    const second = await operators.listUsers({ search: 'pager', limit: 2, cursor: first.next });
    expect(second.users.map((user) => user.id)).toEqual([made[2]?.id]);
    expect(second.next).toBeUndefined();
    expect(await code(operators.listUsers({ limit: 2, cursor: 'not a cursor' }))).toBe('validation_failed');
  });

  it('finds an international address by any spelling of a whole part of it, as the list shows it', async () => {
    const operators = service();
    userCount += 1;
    const email = `Straße${userCount}@Bücher.de`;
    const user = await createUsersRepository(database.db).insertUserWithConversation(
      newUser(`intl${userCount}`, { email, emailCanonical: canonicalEmail(email) }),
      'hello',
      clock.now(),
    );
    for (const search of [
      email,
      `STRAße${userCount}@bücher.DE`,
      `STRAße${userCount}@`,
      'bücher.de',
      'BÜCHER',
      `@xn--bcher-kva.de`,
      `STRAße${userCount}`,
    ]) {
      const found = await operators.listUsers({ search, limit: 10 });
      expect(
        found.users.map((row) => row.id),
        search,
      ).toContain(user.id);
    }
  });

  it('finds a user by id or by username in any letter case, and says not_found otherwise', async () => {
    const user = await freshUser('Mixed');
    const operators = service();
    expect((await operators.showUser({ id: user.id }, cli)).user.id).toBe(user.id);
    expect((await operators.showUser({ username: user.username.toUpperCase() }, cli)).user.id).toBe(user.id);
    expect(await code(operators.showUser({ username: 'nobody-at-all' }, cli))).toBe('not_found');
    expect(await code(operators.showUser({ username: '' }, cli))).toBe('not_found');
    expect(await code(operators.showUser({ id: 999_999 }, cli))).toBe('not_found');
  });

  it('shows live sessions and the last login', async () => {
    const user = await freshUser();
    await openSession(user);
    clock.advanceSeconds(60);
    const second = await openSession(user);
    await createSessionsRepository(database.db, database.dialect).revokeSession(
      second,
      'logout',
      clock.now(),
    );
    const details = await service().showUser({ id: user.id }, cli);
    expect(details.liveSessions).toBe(1);
    expect(details.lastLoginAt).toEqual(clock.now());
  });

  it('disables an account, ending its sessions, and enables it again; each change audited with its actor', async () => {
    const user = await freshUser();
    const sessionId = await openSession(user);
    const operators = service();
    const disabled = await operators.disableUser({ username: user.username }, admin(42));
    expect(disabled).toMatchObject({ changed: true, endedSessions: 1 });
    expect(disabled.user.disabledAt).toEqual(clock.now());
    expect(
      (await createSessionsRepository(database.db, database.dialect).findSession(sessionId))?.revokedAt,
    ).toEqual(clock.now());
    expect((await operators.disableUser({ id: user.id }, cli)).changed).toBe(false);
    const enabled = await operators.enableUser({ id: user.id }, cli);
    expect(enabled.changed).toBe(true);
    expect(enabled.user.disabledAt).toBeNull();
    expect((await operators.enableUser({ id: user.id }, cli)).changed).toBe(false);
    expect(await events(user.id)).toEqual([
      {
        event: 'user_disabled',
        detail: { username: user.username, ended: 1, actor: 'admin:42', actorUserId: 42 },
      },
      { event: 'user_enabled', detail: { username: user.username, actor: 'cli:root' } },
    ]);
  });

  it('unlocks an account locked out for untrusted clients (R2), and says when it cannot', async () => {
    const user = await freshUser();
    const attempt: LoginAttempt = {
      username: user.username,
      ip: '198.51.100.7',
      deviceId: undefined,
      trusted: false,
    };
    const other = { ...attempt, ip: '198.51.100.8' };
    expect(await throttle.reserveLoginAttempt(attempt)).toBeUndefined();
    expect(await throttle.reserveLoginAttempt(attempt)).toBeUndefined();
    expect((await throttle.reserveLoginAttempt(other))?.rule).toBe('R2');
    expect((await service().unlockUser({ username: user.username }, cli)).outcome).toBe('cleared');
    expect(await throttle.reserveLoginAttempt(other)).toBeUndefined();
    expect(await events(user.id)).toEqual([
      { event: 'user_unlocked', detail: { username: user.username, actor: 'cli:root' } },
    ]);
    expect((await service({ kind: 'off' }).unlockUser({ id: user.id }, cli)).outcome).toBe('throttling_off');
    expect((await service({ kind: 'unreachable' }).unlockUser({ id: user.id }, cli)).outcome).toBe(
      'counters_unreachable',
    );
    expect(await code(service().unlockUser({ username: 'nobody-at-all' }, cli))).toBe('not_found');
  });

  it('deletes an account with its sessions, keeping the audit event with the name', async () => {
    const user = await freshUser();
    const sessionId = await openSession(user);
    await service().deleteUser({ username: user.username }, admin(7));
    expect(await createUsersRepository(database.db).findUserById(user.id)).toBeUndefined();
    expect(
      await createSessionsRepository(database.db, database.dialect).findSession(sessionId),
    ).toBeUndefined();
    expect(await events(user.id)).toEqual([
      { event: 'user_deleted', detail: { username: user.username, actor: 'admin:7', actorUserId: 7 } },
    ]);
    expect(await code(service().deleteUser({ id: user.id }, cli))).toBe('not_found');
  });

  it('grants and revokes the admin role, once each', async () => {
    const user = await freshUser();
    const operators = service();
    const granted = await operators.grantRole({ id: user.id }, 'admin', cli);
    expect(granted).toMatchObject({ changed: true, user: { roles: ['admin'] } });
    expect((await operators.grantRole({ id: user.id }, 'admin', cli)).changed).toBe(false);
    const revoked = await operators.revokeRole({ id: user.id }, 'admin', cli);
    expect(revoked).toMatchObject({ changed: true, user: { roles: [] } });
    expect((await operators.revokeRole({ id: user.id }, 'admin', cli)).changed).toBe(false);
    expect((await events(user.id)).map((entry) => [entry.event, entry.detail.role])).toEqual([
      ['role_granted', 'admin'],
      ['role_revoked', 'admin'],
    ]);
  });

  it("lists and ends a user's live sessions, one or all, and never another user's", async () => {
    const user = await freshUser();
    const stranger = await freshUser();
    const [first, second, third] = [
      await openSession(user),
      await openSession(user),
      await openSession(user),
    ];
    const strangers = await openSession(stranger);
    const operators = service();
    const listed = await operators.listSessions({ id: user.id }, cli);
    expect(listed.sessions.map((session) => session.id).sort()).toEqual([first, second, third].sort());
    expect(await code(operators.revokeSessions({ id: user.id }, strangers, cli))).toBe('not_found');
    expect(await code(operators.revokeSessions({ id: user.id }, 'no-such-session', cli))).toBe('not_found');
    expect((await operators.revokeSessions({ id: user.id }, first, cli)).ended).toBe(1);
    expect(await code(operators.revokeSessions({ id: user.id }, first, cli))).toBe('not_found');
    expect((await operators.revokeSessions({ id: user.id }, undefined, cli)).ended).toBe(2);
    expect((await operators.listSessions({ id: user.id }, cli)).sessions).toEqual([]);
    expect((await operators.listSessions({ id: stranger.id }, cli)).sessions.map((s) => s.id)).toEqual([
      strangers,
    ]);
    expect((await events(user.id)).map((entry) => entry.event)).toEqual([
      'user_viewed',
      'session_revoked',
      'sessions_revoked',
      'user_viewed',
    ]);
  });

  it("pages through a user's audit events, newest first", async () => {
    const user = await freshUser();
    const operators = service();
    await operators.grantRole({ id: user.id }, 'admin', cli);
    await operators.revokeRole({ id: user.id }, 'admin', cli);
    const page = await operators.listAuditEvents({ id: user.id }, { limit: 1, before: undefined }, cli);
    expect(page.events.map((event) => event.event)).toEqual(['role_revoked']);
    const next = await operators.listAuditEvents({ id: user.id }, { limit: 5, before: page.next }, cli);
    expect(next.events.map((event) => event.event)).toEqual(['role_granted']);
    expect(next.next).toBeUndefined();
  });

  it('rotates and retires signing keys, refusing to retire the signing one or an unknown kid', async () => {
    const operators = service();
    const older = await operators.rotateSigningKey(cli);
    clock.advanceSeconds(1);
    const newer = await operators.rotateSigningKey(cli);
    const keys = await operators.listSigningKeys();
    expect(keys.map((key) => [key.kid, key.state])).toEqual([
      [newer, 'signing'],
      [older, 'verifying'],
    ]);
    expect(await operators.retireSigningKey(newer, cli)).toBe('signing');
    expect(await operators.retireSigningKey('nope', cli)).toBe('not_found');
    expect(await operators.retireSigningKey(older, cli)).toBe('retired');
    expect(await operators.retireSigningKey(older, cli)).toBe('already_retired');
  });

  it('resets the second factors of a user who has none: nothing removed, audited', async () => {
    const user = await freshUser('nofactor');
    const reset = await service().resetSecondFactors({ username: user.username }, cli);
    expect(reset).toMatchObject({ totp: 'none', recoveryCodes: 0, passkeys: 0 });
    expect((await events(user.id)).map((row) => row.event)).toContain('mfa_reset');
  });

  /** Ten wrong codes lock the user's second factor (R13) for 15 minutes. */
  const lockSecondFactor = async (userId: number) => {
    for (let i = 0; i < 10; i += 1) await throttle.reserveSecondFactorAttempt(userId, 'capped');
    expect(await throttle.reserveSecondFactorAttempt(userId, 'uncapped')).toBe('locked');
  };

  // The way out of R13's lock and of its cap of 100 failures for an owner who has neither recovery code nor passkey.
  it('forgets the second-factor lock (R13) when it unlocks the account', async () => {
    const user = await freshUser('mfalocked');
    await lockSecondFactor(user.id);
    expect((await service().unlockUser({ id: user.id }, cli)).outcome).toBe('cleared');
    expect(await throttle.reserveSecondFactorAttempt(user.id, 'capped')).toBe('admitted');
  });

  it('forgets the second-factor lock (R13) when it resets the second factors', async () => {
    const user = await freshUser('mfareset');
    await lockSecondFactor(user.id);
    await service().resetSecondFactors({ id: user.id }, cli);
    expect(await throttle.reserveSecondFactorAttempt(user.id, 'capped')).toBe('admitted');
  });
});
