import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createPasswordHasher, type PasswordHasher } from '../../src/security/passwords.ts';
import {
  bearerRequest,
  buildTestApp,
  expectSignedOut,
  FAST_ARGON2,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

// Found from outside: an account deleted while one of its requests was between its password check and its write
// (an authenticator app being set up, an admin deleting the account) met the write's foreign key, answered 500.
// Here the deletion lands exactly there: inside the password check, after the request read the user.
describe.each(dialects)('an account deleted while its request runs, on %s', (dialect) => {
  let t: TestApp;
  let deleteDuringNextVerify: (() => Promise<void>) | undefined;
  let accessToken: string;

  beforeAll(async () => {
    const real = createPasswordHasher(FAST_ARGON2, {});
    const passwords: PasswordHasher = {
      ...real,
      async verify(storedHash, password, options) {
        const matches = await real.verify(storedHash, password, options);
        const deletion = deleteDuringNextVerify;
        deleteDuringNextVerify = undefined;
        await deletion?.();
        return matches;
      },
    };
    t = await buildTestApp(dialect, { passwords });
  });
  afterAll(async () => {
    await t.close();
  });

  beforeEach(async () => {
    const username = `gone${crypto.randomUUID().slice(0, 8)}`;
    await registerUser(t.app, { username, email: `${username}@example.com` });
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
    });
    accessToken = login.json().access_token;
    deleteDuringNextVerify = async () => {
      await t.database.db.deleteFrom('users').where('username', '=', username).execute();
    };
  });

  it('answers 401 to setting up an authenticator app, and writes no factor', async () => {
    expectSignedOut(
      await bearerRequest(t.app, 'POST', '/users/me/mfa/totp', accessToken, { password: STRONG_PASSWORD }),
    );
    expect(await t.database.db.selectFrom('mfa_factors').selectAll().execute()).toEqual([]);
  });

  it('answers 401 to asking for passkey registration options, and stores no challenge', async () => {
    expectSignedOut(
      await bearerRequest(t.app, 'POST', '/users/me/passkeys/registration/options', accessToken, {
        password: STRONG_PASSWORD,
      }),
    );
    expect(await t.database.db.selectFrom('webauthn_challenges').selectAll().execute()).toEqual([]);
  });

  it('answers 401 to an email change, and mails nothing', async () => {
    const newEmail = `new${crypto.randomUUID().slice(0, 8)}@example.com`;
    expectSignedOut(
      await bearerRequest(t.app, 'POST', '/users/me/email', accessToken, {
        new_email: newEmail,
        password: STRONG_PASSWORD,
      }),
    );
    const mails = await t.database.db
      .selectFrom('email_outbox')
      .select('recipient')
      .where('recipient', '=', newEmail)
      .execute();
    expect(mails).toEqual([]);
  });

  it('answers 401 to a password change', async () => {
    expectSignedOut(
      await bearerRequest(t.app, 'POST', '/users/me/password', accessToken, {
        current_password: STRONG_PASSWORD,
        new_password: 'another horse battery staple',
      }),
    );
  });

  it('answers a login whose account goes during its hash with 400 invalid_grant', async () => {
    const [user] = await t.database.db.selectFrom('users').select('username').orderBy('id', 'desc').execute();
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: user?.username, password: STRONG_PASSWORD },
    });
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json().error).toBe('invalid_grant');
  });
});
