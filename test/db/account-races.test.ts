import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUsersRepository, type UsersRepository } from '../../src/db/users.ts';
import { createPasswordPolicy } from '../../src/security/password-policy.ts';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { createAccountsService } from '../../src/services/accounts.ts';
import { createEmailChangeMailer } from '../../src/services/email-flows.ts';
import { createMailComposer } from '../../src/services/mail.ts';
import type { RequestContext } from '../../src/services/request-context.ts';
import { FAST_ARGON2, STRONG_PASSWORD, TEST_SECRET } from '../support/build-test-app.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { insertLiveSession } from '../support/new-user.ts';

describe.each(dialects)('account changes racing a password change on %s', (dialect) => {
  let database: TestDatabase;
  const audited: string[] = [];
  const context: RequestContext = {
    userAgent: undefined,
    ipAddress: undefined,
    audit: (event) => audited.push(event),
  };
  const hasher = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
  const policy = createPasswordPolicy({ minLength: 8, maxLength: 1024 });
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await policy.close();
    await database.destroy();
  });

  // The password changes after the service read the hash it verifies, before it writes: the race window.
  async function accountsWithPasswordChangedAfterCheck(username: string) {
    const users = createUsersRepository(database.db);
    const clock = createTestClock();
    const user = await users.insertUserWithConversation(
      {
        username,
        usernameCanonical: username,
        usernameSkeleton: username,
        email: `${username}@example.com`,
        emailCanonical: `${username}@example.com`,
        passwordHash: await hasher.hash(STRONG_PASSWORD),
        age: 30,
        level: 'beginner',
      },
      'welcome',
      clock.now(),
    );
    const racing: UsersRepository = {
      ...users,
      async findCredentialsById(id) {
        const credentials = await users.findCredentialsById(id);
        if (credentials) {
          const changed = await hasher.hash('a brand new passphrase here');
          await users.replacePasswordHash(id, credentials.passwordHash, changed, clock.now());
        }
        return credentials;
      },
    };
    const accounts = createAccountsService({
      users: racing,
      hasher,
      policy,
      clock,
      maxPasswordLength: 1024,
      emailChanges: createEmailChangeMailer({
        mail: createMailComposer(createSecretBox([TEST_SECRET])),
        clock,
        publicUrl: 'http://localhost:8000',
      }),
    });
    const sessionId = `s-${username}`;
    const nowMs = clock.now().getTime();
    await insertLiveSession(database.db, sessionId, user.id, nowMs);
    return { accounts, users, user, sessionId };
  }

  it('refuses a deletion whose password check a password change overtook, deleting nothing', async () => {
    const { accounts, users, user, sessionId } = await accountsWithPasswordChangedAfterCheck('deleterace');
    await expect(accounts.deleteAccount(user.id, STRONG_PASSWORD, sessionId, context)).rejects.toMatchObject({
      code: 'invalid_password',
    });
    expect(await users.findUserById(user.id)).toEqual(user);
  });

  it('refuses an email change whose password check a password change overtook, changing nothing', async () => {
    const { accounts, users, user, sessionId } = await accountsWithPasswordChangedAfterCheck('emailrace');
    await expect(
      accounts.updateProfile(
        user.id,
        { sessionId, email: 'attacker@example.com', currentPassword: STRONG_PASSWORD },
        context,
      ),
    ).rejects.toMatchObject({ code: 'invalid_password' });
    expect(await users.findUserById(user.id)).toEqual(user);
    expect(audited).not.toContain('email_change_requested');
    expect(await mailsTo('attacker@example.com')).toBe(0);
  });

  it('refuses a profile change from a session that a password change ended after the request was authenticated', async () => {
    const { accounts, users, user, sessionId } = await accountsWithPasswordChangedAfterCheck('sessionrace');
    await database.db
      .updateTable('sessions')
      .set({ revoked_at_ms: Date.now(), revoked_reason: 'password_changed' })
      .where('id', '=', sessionId)
      .execute();
    await expect(accounts.updateProfile(user.id, { sessionId, age: 77 }, context)).rejects.toMatchObject({
      code: 'invalid_token',
    });
    expect(await users.findUserById(user.id)).toEqual(user);
  });

  it('refuses an email change to a new address without a password, as seed clients sent it, mailing nothing', async () => {
    const { accounts, users, user, sessionId } = await accountsWithPasswordChangedAfterCheck('liveemail');
    audited.length = 0;
    await expect(
      accounts.updateProfile(user.id, { sessionId, email: 'new-address@example.com' }, context),
    ).rejects.toMatchObject({
      code: 'validation_failed',
      details: [expect.objectContaining({ loc: ['body', 'current_password'] })],
    });
    expect(await users.findUserById(user.id)).toEqual(user);
    expect(audited).toEqual([]);
    expect(await mailsTo('new-address@example.com')).toBe(0);
  });

  const mailsTo = async (recipient: string) =>
    (await database.db.selectFrom('email_outbox').select('id').where('recipient', '=', recipient).execute())
      .length;
});
