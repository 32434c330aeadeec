/**
 * Issue 14 review: changing the second factors of an account that has some needs one of them, not only the
 * password. A code in the body (otp / recovery_code, counted by R13) or a session whose login used a second factor
 * within the last 10 minutes. On both databases.
 */
import type { PublicKeyCredentialCreationOptionsJSON } from '@simplewebauthn/server';
import { generateSync } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTestApp,
  loginToken,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { createSoftAuthenticator, type SoftAuthenticator } from '../support/soft-authenticator.ts';

const ORIGIN = 'http://localhost:8000';
const MFA_GRANT = 'urn:gatehouse:params:oauth:grant-type:mfa';
const WEBAUTHN_GRANT = 'urn:gatehouse:params:oauth:grant-type:webauthn';
const REQUIRED = { detail: 'A second factor is required', code: 'insufficient_user_authentication' };
const STEP_UP =
  'Bearer error="insufficient_user_authentication", error_description="A second factor is required"';

/** RFC 9470 §3: a 401 naming what is missing; `max_age` when a login with a second factor would do instead. */
const expectStepUp = (
  response: { statusCode: number; headers: Record<string, unknown>; json: () => unknown },
  recentLoginWouldDo = true,
) => {
  expect(response.statusCode).toBe(401);
  expect(response.json()).toEqual(REQUIRED);
  expect(response.headers['www-authenticate']).toBe(
    recentLoginWouldDo ? `${STEP_UP}, max_age="600"` : STEP_UP,
  );
};

describe.each(dialects)('changing second factors on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const call = (method: 'POST' | 'DELETE', url: string, bearer: string, payload: Record<string, unknown>) =>
    t.app.inject({ method, url, headers: { authorization: `Bearer ${bearer}` }, payload });
  const mfaStatus = async (bearer: string) =>
    (
      await t.app.inject({
        method: 'GET',
        url: '/users/me/mfa',
        headers: { authorization: `Bearer ${bearer}` },
      })
    ).json() as { totp: unknown };
  const code = (secret: string) =>
    generateSync({ secret, epoch: Math.floor(t.clock.now().getTime() / 1000) });
  const nextWindow = () => t.clock.advanceSeconds(90);

  let counter = 0;
  const freshUser = async () => {
    counter += 1;
    const username = `changer${counter}`;
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    return { ...user, username, bearer: await loginToken(t.app, username) };
  };
  type Fresh = Awaited<ReturnType<typeof freshUser>>;

  /** Adds a passkey while the account has no factor yet: the password alone. */
  const addPasskey = async (user: Fresh, bearer = user.bearer, extra: Record<string, unknown> = {}) => {
    const authenticator = createSoftAuthenticator({ origin: ORIGIN });
    const options = await call('POST', '/users/me/passkeys/registration/options', bearer, {
      password: STRONG_PASSWORD,
      ...extra,
    });
    expect(options.statusCode, options.body).toBe(200);
    const { challenge_id, options: creation } = options.json() as {
      challenge_id: string;
      options: PublicKeyCredentialCreationOptionsJSON;
    };
    const verified = await call('POST', '/users/me/passkeys/registration/verify', bearer, {
      challenge_id,
      response: authenticator.register(creation),
    });
    expect(verified.statusCode, verified.body).toBe(201);
    return { authenticator, id: (verified.json() as { id: string }).id };
  };

  /** A bearer token of a passwordless login: amr hwk user mfa, auth_time now. */
  const passkeyBearer = async (authenticator: SoftAuthenticator) => {
    const options = await t.app.inject({ method: 'POST', url: '/passkeys/authentication/options' });
    const { challenge_id, options: request } = options.json() as {
      challenge_id: string;
      options: Parameters<SoftAuthenticator['assert']>[0];
    };
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: WEBAUTHN_GRANT, challenge_id, webauthn_response: authenticator.assert(request) },
    });
    expect(login.statusCode, login.body).toBe(200);
    return (login.json() as { access_token: string }).access_token;
  };

  const enrolTotp = async (user: Fresh) => {
    const started = await call('POST', '/users/me/mfa/totp', user.bearer, { password: STRONG_PASSWORD });
    expect(started.statusCode, started.body).toBe(200);
    const { secret } = started.json() as { secret: string };
    const confirmed = await call('POST', '/users/me/mfa/totp/confirm', user.bearer, { code: code(secret) });
    expect(confirmed.statusCode, confirmed.body).toBe(200);
    nextWindow();
    return { secret, recoveryCodes: (confirmed.json() as { recovery_codes: string[] }).recovery_codes };
  };

  it('lets an account without second factors add one with the password alone', async () => {
    const user = await freshUser();
    await addPasskey(user);
    const other = await freshUser();
    expect(
      (await call('POST', '/users/me/mfa/totp', other.bearer, { current_password: STRONG_PASSWORD }))
        .statusCode,
    ).toBe(200);
  });

  it('asks a password-only session of a TOTP account for a code before it registers a passkey', async () => {
    const user = await freshUser();
    const { secret, recoveryCodes } = await enrolTotp(user);
    const bare = await call('POST', '/users/me/passkeys/registration/options', user.bearer, {
      password: STRONG_PASSWORD,
    });
    expectStepUp(bare);
    const wrong = await call('POST', '/users/me/passkeys/registration/options', user.bearer, {
      password: STRONG_PASSWORD,
      otp: '000000',
    });
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json()).toMatchObject({ code: 'invalid_second_factor' });
    // The password still comes first.
    const badPassword = await call('POST', '/users/me/passkeys/registration/options', user.bearer, {
      password: 'not the password at all',
      otp: code(secret),
    });
    expect(badPassword.json()).toMatchObject({ code: 'invalid_password' });
    await addPasskey(user, user.bearer, { otp: code(secret) });
    await addPasskey(user, user.bearer, { recovery_code: recoveryCodes[0] });
    // A code is spent: the same one again is refused.
    const again = await call('POST', '/users/me/passkeys/registration/options', user.bearer, {
      password: STRONG_PASSWORD,
      recovery_code: recoveryCodes[0],
    });
    expect(again.json()).toMatchObject({ code: 'invalid_second_factor' });
  });

  it('asks a password-only session of a passkey account for a second factor before TOTP set-up or a passkey change', async () => {
    const user = await freshUser();
    const { authenticator, id } = await addPasskey(user);
    const enrol = await call('POST', '/users/me/mfa/totp', user.bearer, { password: STRONG_PASSWORD });
    expectStepUp(enrol);
    const register = await call('POST', '/users/me/passkeys/registration/options', user.bearer, {
      password: STRONG_PASSWORD,
    });
    expectStepUp(register);
    const remove = await call('DELETE', `/users/me/passkeys/${id}`, user.bearer, {
      password: STRONG_PASSWORD,
    });
    expectStepUp(remove);

    // A session whose login used the passkey, within 10 minutes, is the second factor.
    const strong = await passkeyBearer(authenticator);
    expect((await call('POST', '/users/me/mfa/totp', strong, { password: STRONG_PASSWORD })).statusCode).toBe(
      200,
    );
    await addPasskey(user, strong);
    // ... but its password is still checked.
    const noPassword = await call('DELETE', `/users/me/passkeys/${id}`, strong, {
      password: 'wrong one here',
    });
    expect(noPassword.json()).toMatchObject({ code: 'invalid_password' });
    expect(
      (await call('DELETE', `/users/me/passkeys/${id}`, strong, { password: STRONG_PASSWORD })).statusCode,
    ).toBe(204);
  });

  it('does not take an MFA login older than 10 minutes as the second factor', async () => {
    const user = await freshUser();
    const { authenticator, id } = await addPasskey(user);
    const strong = await passkeyBearer(authenticator);
    t.clock.advanceSeconds(9 * 60);
    await addPasskey(user, strong);
    t.clock.advanceSeconds(2 * 60);
    const late = await call('DELETE', `/users/me/passkeys/${id}`, strong, { password: STRONG_PASSWORD });
    expectStepUp(late);
  });

  it('takes the session of an MFA grant with a code as the second factor', async () => {
    const user = await freshUser();
    const { secret } = await enrolTotp(user);
    const first = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: user.username, password: STRONG_PASSWORD },
    });
    expect(first.statusCode).toBe(403);
    const second = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: MFA_GRANT, mfa_token: first.json().mfa_token, otp: code(secret) },
    });
    expect(second.statusCode, second.body).toBe(200);
    await addPasskey(user, (second.json() as { access_token: string }).access_token);
  });

  it('keeps removing the authenticator app and regenerating codes to a code in the body, even after an MFA login', async () => {
    const user = await freshUser();
    const { secret } = await enrolTotp(user);
    const { authenticator } = await addPasskey(user, user.bearer, { otp: code(secret) });
    nextWindow();
    const strong = await passkeyBearer(authenticator);
    const regenerate = await call('POST', '/users/me/mfa/recovery-codes', strong, {
      password: STRONG_PASSWORD,
      otp: '000000',
    });
    expect(regenerate.json()).toMatchObject({ code: 'invalid_second_factor' });
    // The password comes first, as everywhere: a wrong one is a 400 before any code is asked for.
    for (const [method, url] of [
      ['DELETE', '/users/me/mfa/totp'],
      ['POST', '/users/me/mfa/recovery-codes'],
    ] as const) {
      const wrongPassword = await call(method, url, strong, { password: 'not the password at all' });
      expect(wrongPassword.statusCode, url).toBe(400);
      expect(wrongPassword.json()).toMatchObject({ code: 'invalid_password' });
    }
    const remove = await call('DELETE', '/users/me/mfa/totp', strong, { password: STRONG_PASSWORD });
    expectStepUp(remove, false);
    const regenerateBare = await call('POST', '/users/me/mfa/recovery-codes', strong, {
      password: STRONG_PASSWORD,
    });
    expectStepUp(regenerateBare, false);
    expect(
      (await call('DELETE', '/users/me/mfa/totp', strong, { password: STRONG_PASSWORD, otp: code(secret) }))
        .statusCode,
    ).toBe(204);
  });

  it('answers a factor change without the password 401 insufficient_user_authentication, changing nothing', async () => {
    const user = await freshUser();
    const PASSWORD_NEEDED = {
      detail: 'Your password is required',
      code: 'insufficient_user_authentication',
    };
    const header =
      'Bearer error="insufficient_user_authentication", error_description="Your password is required"';
    const enrol = await call('POST', '/users/me/mfa/totp', user.bearer, {});
    expect(enrol.statusCode).toBe(401);
    expect(enrol.json()).toEqual(PASSWORD_NEEDED);
    expect(enrol.headers['www-authenticate']).toBe(header);
    const options = await call('POST', '/users/me/passkeys/registration/options', user.bearer, {
      password: '',
    });
    expect(options.statusCode).toBe(401);
    expect(options.json()).toEqual(PASSWORD_NEEDED);
    expect((await mfaStatus(user.bearer)).totp).toBeNull();

    const { secret } = await enrolTotp(user);
    for (const [method, url, payload] of [
      ['DELETE', '/users/me/mfa/totp', {}],
      ['DELETE', '/users/me/mfa/totp', { otp: code(secret) }],
      ['POST', '/users/me/mfa/recovery-codes', { otp: code(secret) }],
    ] as const) {
      const refused = await call(method, url, user.bearer, payload);
      expect(refused.statusCode, `${method} ${url}`).toBe(401);
      expect(refused.json()).toEqual(PASSWORD_NEEDED);
      expect(refused.headers['www-authenticate']).toBe(header);
    }
    // With no body at all, the same: what is missing is the recent authentication, not an object.
    for (const [method, url] of [
      ['POST', '/users/me/mfa/totp'],
      ['DELETE', '/users/me/mfa/totp'],
      ['POST', '/users/me/mfa/recovery-codes'],
      ['POST', '/users/me/passkeys/registration/options'],
      ['DELETE', '/users/me/passkeys/some-id'],
    ] as const) {
      const bare = await t.app.inject({ method, url, headers: { authorization: `Bearer ${user.bearer}` } });
      expect(bare.statusCode, `${method} ${url}`).toBe(401);
      expect(bare.json()).toEqual(PASSWORD_NEEDED);
    }
    // Still on, and the access token still works: the 401 asked for more, it did not end the session.
    expect((await mfaStatus(user.bearer)).totp).toMatchObject({ status: 'active' });
    expect(await conversationStatus(user.bearer)).toBe(200);
  });

  const conversationStatus = async (bearer: string) =>
    (
      await t.app.inject({
        method: 'GET',
        url: '/conversation',
        headers: { authorization: `Bearer ${bearer}` },
      })
    ).statusCode;

  it('ends the password-only sessions elsewhere once an authenticator app is on, keeping the one that set it up', async () => {
    const user = await freshUser();
    const elsewhere = await loginToken(t.app, user.username);
    expect(await conversationStatus(elsewhere)).toBe(200);
    await enrolTotp(user);
    expect(await conversationStatus(elsewhere)).toBe(401);
    expect(await conversationStatus(user.bearer)).toBe(200);
  });

  it('ends the password-only sessions elsewhere once a passkey is added, but not a session that used a second factor', async () => {
    const user = await freshUser();
    const elsewhere = await loginToken(t.app, user.username);
    const { authenticator } = await addPasskey(user);
    expect(await conversationStatus(elsewhere)).toBe(401);
    expect(await conversationStatus(user.bearer)).toBe(200);
    // A second passkey, from a session that signed in with the first: the password-only one ends now.
    const strong = await passkeyBearer(authenticator);
    await addPasskey(user, strong);
    expect(await conversationStatus(strong)).toBe(200);
    expect(await conversationStatus(user.bearer)).toBe(401);
  });
});
