import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUsersRepository, type UsersRepository } from '../../src/db/users.ts';
import { createPasswordPolicy } from '../../src/security/password-policy.ts';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import { createAccountsService } from '../../src/services/accounts.ts';
import { FAST_ARGON2, STRONG_PASSWORD } from '../support/build-test-app.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';

describe.each(dialects)('account changes racing a password change on %s', (dialect) => {
  let database: TestDatabase;
  const hasher = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
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
      policy: createPasswordPolicy({ minLength: 8, maxLength: 1024 }),
      clock,
      maxPasswordLength: 1024,
      welcomeMessage: 'welcome',
    });
    return { accounts, users, user };
  }

  it('refuses a deletion whose password check a password change overtook, deleting nothing', async () => {
    const { accounts, users, user } = await accountsWithPasswordChangedAfterCheck('deleterace');
    await expect(accounts.deleteAccount(user.id, STRONG_PASSWORD)).rejects.toMatchObject({
      code: 'invalid_password',
    });
    expect(await users.findUserById(user.id)).toEqual(user);
  });

  it('refuses an email change whose password check a password change overtook, changing nothing', async () => {
    const { accounts, users, user } = await accountsWithPasswordChangedAfterCheck('emailrace');
    await expect(
      accounts.updateProfile(user.id, { email: 'attacker@example.com', currentPassword: STRONG_PASSWORD }),
    ).rejects.toMatchObject({ code: 'invalid_password' });
    expect(await users.findUserById(user.id)).toEqual(user);
  });
});
