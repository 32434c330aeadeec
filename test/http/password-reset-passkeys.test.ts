/**
 * A password reset of an account whose second factor is a passkey (issue 14, AUTH-FLOWS.md §7.2): the mailed link
 * alone is not enough, the passkey's assertion is taken in place of a code. On both databases.
 */
import type {
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
} from '@simplewebauthn/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { mailedToken } from '../support/outbox.ts';
import { type CeremonyOverrides, createSoftAuthenticator } from '../support/soft-authenticator.ts';

const ORIGIN = 'http://localhost:8000';
const NEW_PASSWORD = 'a brand new passphrase here';

type Options = { challenge_id: string; options: PublicKeyCredentialRequestOptionsJSON };

function resetFlows(t: TestApp, prefix: string) {
  let counter = 0;
  const inject = t.app.inject.bind(t.app);
  let address = 0;
  // R11 counts token submissions per client address: each request of a test comes from its own.
  const nextIp = () => {
    address += 1;
    return `198.51.${Math.floor(address / 250)}.${(address % 250) + 1}`;
  };

  const passwordGrant = (username: string, password: string) =>
    inject({ method: 'POST', url: '/token', payload: { username, password }, remoteAddress: nextIp() });

  /** A new account; with `passkey`, a passkey registered by its own software authenticator. */
  const account = async (passkey = true) => {
    counter += 1;
    const username = `${prefix}${counter}`;
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    const authenticator = createSoftAuthenticator({ origin: ORIGIN });
    if (passkey) {
      const login = await passwordGrant(username, STRONG_PASSWORD);
      const headers = { authorization: `Bearer ${(login.json() as { access_token: string }).access_token}` };
      const creation = await inject({
        method: 'POST',
        url: '/users/me/passkeys/registration/options',
        headers,
        payload: { password: STRONG_PASSWORD },
      });
      expect(creation.statusCode, creation.body).toBe(200);
      const { challenge_id, options } = creation.json() as {
        challenge_id: string;
        options: PublicKeyCredentialCreationOptionsJSON;
      };
      const verified = await inject({
        method: 'POST',
        url: '/users/me/passkeys/registration/verify',
        headers,
        payload: { challenge_id, response: authenticator.register(options) },
      });
      expect(verified.statusCode, verified.body).toBe(201);
    }
    return { user, authenticator };
  };
  type Account = Awaited<ReturnType<typeof account>>;

  const link = async (holder: Account) => {
    const forgot = await inject({
      method: 'POST',
      url: '/password/forgot',
      payload: { email: holder.user.email },
      remoteAddress: nextIp(),
    });
    expect(forgot.statusCode).toBe(202);
    await t.app.backgroundWork.settled();
    return mailedToken(t.database, holder.user.email, 'password_reset');
  };

  const options = (token: string) =>
    inject({
      method: 'POST',
      url: '/password/reset/webauthn/options',
      payload: { token },
      remoteAddress: nextIp(),
    });

  const liveOptions = async (token: string) => {
    const response = await options(token);
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as Options;
  };

  const reset = (token: string, extra: Record<string, unknown> = {}, ip = nextIp()) =>
    inject({
      method: 'POST',
      url: '/password/reset',
      payload: { token, new_password: NEW_PASSWORD, ...extra },
      remoteAddress: ip,
    });

  /** A reset with an assertion of `holder`'s authenticator for a fresh challenge of the token. */
  const resetWithPasskey = async (token: string, holder: Account, overrides: CeremonyOverrides = {}) => {
    const { challenge_id, options: requested } = await liveOptions(token);
    return reset(token, {
      challenge_id,
      webauthn_response: holder.authenticator.assert(requested, overrides),
    });
  };

  return { inject, nextIp, passwordGrant, account, link, options, liveOptions, reset, resetWithPasskey };
}

describe.each(dialects)('password reset of a passkey account on %s', (dialect) => {
  let t: TestApp;
  let f: ReturnType<typeof resetFlows>;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
    f = resetFlows(t, 'keyreset');
  });
  afterAll(async () => {
    await t.close();
  });

  const passkeyRow = (userId: number) =>
    t.database.db
      .selectFrom('webauthn_credentials')
      .select(['sign_count', 'last_used_at_ms', 'suspect'])
      .where('user_id', '=', userId)
      .executeTakeFirstOrThrow();

  const auditOf = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .select(['event', 'detail'])
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows.map((row) => [row.event, JSON.parse(row.detail ?? '{}').reason]);
  };

  it('asks for the passkey when the link comes alone, changes nothing, and keeps the link usable', async () => {
    const holder = await f.account();
    const token = await f.link(holder);
    const alone = await f.reset(token);
    expect(alone.statusCode).toBe(400);
    expect(alone.json()).toEqual({
      detail: 'A second factor is required',
      code: 'second_factor_required',
      mfa_methods: ['webauthn'],
    });
    // The old password still matches (and still asks for the passkey); the new one does not.
    expect((await f.passwordGrant(holder.user.username, STRONG_PASSWORD)).statusCode).toBe(403);
    expect((await f.passwordGrant(holder.user.username, NEW_PASSWORD)).statusCode).toBe(400);
    const done = await f.resetWithPasskey(token, holder);
    expect(done.statusCode, done.body).toBe(204);
  });

  it('resets with a valid assertion: 204, the new password works, the counter moves as at a login', async () => {
    const holder = await f.account();
    const token = await f.link(holder);
    const before = await passkeyRow(holder.user.id);
    const done = await f.resetWithPasskey(token, holder);
    expect(done.statusCode, done.body).toBe(204);
    const required = await f.passwordGrant(holder.user.username, NEW_PASSWORD);
    expect(required.statusCode).toBe(403);
    expect(required.json().mfa_methods).toEqual(['webauthn']);
    expect((await f.passwordGrant(holder.user.username, STRONG_PASSWORD)).statusCode).toBe(400);
    const after = await passkeyRow(holder.user.id);
    expect(Number(after.sign_count)).toBeGreaterThan(Number(before.sign_count));
    expect(after.last_used_at_ms).not.toBeNull();
    const events = await auditOf(holder.user.id);
    expect(events).toEqual(
      expect.arrayContaining([
        ['second_factor_used', 'webauthn'],
        ['password_reset', undefined],
      ]),
    );
    // The activity must not show a sign-in that never happened: the reset opened no session.
    expect(events.filter(([event]) => event === 'passkey_login')).toEqual([]);
    // The link is spent: its options are refused as the reset refuses it.
    const spent = await f.options(token);
    expect(spent.statusCode).toBe(400);
    expect(spent.json()).toMatchObject({ error: 'invalid_token' });
  });

  it('gives options listing the passkeys with user verification required, without spending the link', async () => {
    const holder = await f.account();
    const token = await f.link(holder);
    const first = await f.options(token);
    expect(first.statusCode, first.body).toBe(200);
    expect(first.headers['cache-control']).toBe('no-store');
    const { challenge_id, options } = first.json() as Options;
    expect(challenge_id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(options.userVerification).toBe('required');
    expect(options.timeout).toBe(300_000);
    expect(options.allowCredentials?.map((entry) => entry.id)).toEqual([
      holder.authenticator.credentials[0]?.id.toString('base64url'),
    ]);
    await f.liveOptions(token);
    expect((await f.reset(token, { otp: '000000' })).json().code).toBe('invalid_second_factor');
    expect((await f.resetWithPasskey(token, holder)).statusCode).toBe(204);
  });

  it('answers a dead link on the options route exactly as the reset does', async () => {
    const holder = await f.account();
    for (const dead of ['', 'nope', 'A'.repeat(43)]) {
      const refusedOptions = await f.options(dead);
      const refusedReset = await f.reset(dead);
      expect(refusedOptions.statusCode, dead).toBe(400);
      expect(refusedOptions.json()).toEqual(refusedReset.json());
      expect(refusedOptions.json()).toMatchObject({
        error: 'invalid_token',
        detail: 'The link is invalid, expired or already used',
      });
    }
    // Mailed to an address the account has since left: dead for the options as for the reset.
    const moved = await f.link(holder);
    await t.database.db
      .updateTable('users')
      .set({ email: 'moved-away@example.com', email_canonical: 'moved-away@example.com' })
      .where('id', '=', holder.user.id)
      .execute();
    expect((await f.options(moved)).json()).toEqual((await f.reset(moved)).json());
    expect((await f.options(moved)).statusCode).toBe(400);
    await t.database.db
      .updateTable('users')
      .set({ email: holder.user.email, email_canonical: holder.user.email.toLowerCase() })
      .where('id', '=', holder.user.id)
      .execute();
    // Back at that address, the link refused while it pointed elsewhere stays dead.
    expect((await f.reset(moved)).json()).toMatchObject({ error: 'invalid_token' });
    expect((await f.options(moved)).json()).toMatchObject({ error: 'invalid_token' });

    const expiring = await f.link(holder);
    t.clock.advanceSeconds(3601);
    expect((await f.options(expiring)).json()).toEqual((await f.reset(expiring)).json());
    expect((await f.options(expiring)).statusCode).toBe(400);
    await t.app.auditTrail.flush();
    const refusals = await t.database.db
      .selectFrom('audit_events')
      .select('detail')
      .where('event', '=', 'one_time_token_refused')
      .where('user_id', '=', holder.user.id)
      .execute();
    expect(refusals.length).toBeGreaterThanOrEqual(2);
  });

  it('answers 400 no_passkey for a live link of an account without a usable passkey, and such an account resets with the link alone', async () => {
    const plain = await f.account(false);
    const plainToken = await f.link(plain);
    const none = await f.options(plainToken);
    expect(none.statusCode).toBe(400);
    expect(none.json()).toEqual({ detail: 'The account has no passkey', code: 'no_passkey' });
    expect((await f.reset(plainToken)).statusCode).toBe(204);

    // A suspect passkey is no second factor (README "Signature counters"): neither options nor a proof are asked.
    const cloned = await f.account();
    await t.database.db
      .updateTable('webauthn_credentials')
      .set({ suspect: 1 })
      .where('user_id', '=', cloned.user.id)
      .execute();
    const clonedToken = await f.link(cloned);
    expect((await f.options(clonedToken)).json().code).toBe('no_passkey');
    expect((await f.reset(clonedToken)).statusCode).toBe(204);
  });

  it('refuses a replayed assertion, another user’s passkey, a challenge of another purpose or user, UV off and a cloned counter with invalid_second_factor, the link unspent', async () => {
    const holder = await f.account();
    const other = await f.account();
    const token = await f.link(holder);
    const otherToken = await f.link(other);
    const refused = async (extra: Record<string, unknown>, why: string) => {
      const response = await f.reset(token, extra);
      expect(response.statusCode, why).toBe(400);
      expect(response.json(), why).toEqual({
        detail: 'Incorrect or already used code',
        code: 'invalid_second_factor',
      });
    };

    // Replayed: the challenge of a refused attempt is spent all the same.
    const first = await f.liveOptions(token);
    const assertion = holder.authenticator.assert(first.options, { userVerified: false });
    await refused({ challenge_id: first.challenge_id, webauthn_response: assertion }, 'UV off');
    await refused({ challenge_id: first.challenge_id, webauthn_response: assertion }, 'replayed');

    // Another user's passkey, on this link's challenge.
    const second = await f.liveOptions(token);
    await refused(
      {
        challenge_id: second.challenge_id,
        webauthn_response: other.authenticator.assert({
          challenge: second.options.challenge,
          rpId: 'localhost',
        }),
      },
      "another user's passkey",
    );

    // The other user's challenge (of their own link), answered by this user's passkey.
    const foreign = await f.liveOptions(otherToken);
    await refused(
      {
        challenge_id: foreign.challenge_id,
        webauthn_response: holder.authenticator.assert({
          challenge: foreign.options.challenge,
          rpId: 'localhost',
        }),
      },
      "another user's challenge",
    );

    // A passwordless login's challenge is of another purpose.
    const passwordless = await f.inject({
      method: 'POST',
      url: '/passkeys/authentication/options',
      remoteAddress: f.nextIp(),
    });
    const loginCeremony = passwordless.json() as Options;
    await refused(
      {
        challenge_id: loginCeremony.challenge_id,
        webauthn_response: holder.authenticator.assert(loginCeremony.options),
      },
      'a passwordless challenge',
    );

    // A login's second leg of the same user: its challenge answers the login, not a reset of the password.
    const mfaToken = (await f.passwordGrant(holder.user.username, STRONG_PASSWORD)).json()
      .mfa_token as string;
    const secondLeg = await f.inject({
      method: 'POST',
      url: '/mfa/webauthn/options',
      payload: { mfa_token: mfaToken },
      remoteAddress: f.nextIp(),
    });
    expect(secondLeg.statusCode, secondLeg.body).toBe(200);
    const legCeremony = secondLeg.json() as Options;
    await refused(
      {
        challenge_id: legCeremony.challenge_id,
        webauthn_response: holder.authenticator.assert(legCeremony.options),
      },
      "a login's second-leg challenge",
    );
    // Nor does a reset's challenge answer the login's second leg.
    const resetCeremony = await f.liveOptions(token);
    const crossed = await f.inject({
      method: 'POST',
      url: '/token',
      payload: {
        grant_type: 'urn:gatehouse:params:oauth:grant-type:mfa',
        mfa_token: mfaToken,
        challenge_id: resetCeremony.challenge_id,
        webauthn_response: JSON.stringify(holder.authenticator.assert(resetCeremony.options)),
      },
      remoteAddress: f.nextIp(),
    });
    expect(crossed.statusCode, crossed.body).toBe(400);
    expect(crossed.json().error).toBe('invalid_grant');

    // Malformed or half a proof.
    const third = await f.liveOptions(token);
    await refused({ challenge_id: third.challenge_id }, 'challenge_id alone');
    await refused({ challenge_id: third.challenge_id, webauthn_response: '{not json' }, 'not JSON');

    // Two proofs at once: neither is checked, so the assertion's challenge stays unspent and then resets.
    const fourth = await f.liveOptions(token);
    const fourthAssertion = holder.authenticator.assert(fourth.options);
    await refused(
      { otp: '123456', challenge_id: fourth.challenge_id, webauthn_response: fourthAssertion },
      'two proofs',
    );

    // Nothing changed, and the link still works with a good assertion.
    expect((await f.passwordGrant(holder.user.username, STRONG_PASSWORD)).statusCode).toBe(403);
    const afterTwo = await f.reset(token, {
      challenge_id: fourth.challenge_id,
      webauthn_response: fourthAssertion,
    });
    expect(afterTwo.statusCode, afterTwo.body).toBe(204);

    // The counter rule of the MFA grant: a counter that went backwards marks the passkey suspect.
    expect((await f.resetWithPasskey(otherToken, other)).statusCode).toBe(204);
    const again = await f.link(other);
    const clone = await f.resetWithPasskey(again, other, { signCount: 0 });
    expect(clone.json().code).toBe('invalid_second_factor');
    const row = await t.database.db
      .selectFrom('webauthn_credentials')
      .select('suspect')
      .where('user_id', '=', other.user.id)
      .executeTakeFirstOrThrow();
    expect(Number(row.suspect)).toBe(1);
  });

  it('accepts the webauthn_response as JSON text, as the MFA grant does', async () => {
    const holder = await f.account();
    const token = await f.link(holder);
    const { challenge_id, options } = await f.liveOptions(token);
    const response = await f.reset(token, {
      challenge_id,
      webauthn_response: JSON.stringify(holder.authenticator.assert(options)),
    });
    expect(response.statusCode, response.body).toBe(204);
  });
});

describe.each(dialects)('password reset of a passkey account, throttled, on %s', (dialect) => {
  let t: TestApp;
  let f: ReturnType<typeof resetFlows>;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: { RATE_LIMITS: 'on', TOKEN_PASSWORD_PER_IP: '1000/60s', REGISTER_PER_IP: '1000/10s' },
    });
    f = resetFlows(t, 'lockreset');
  });
  afterAll(async () => {
    await t.close();
  });

  it('counts refused assertions toward the per-user second-factor lock (R13), then refuses a right one', async () => {
    const holder = await f.account();
    const token = await f.link(holder);
    for (let attempt = 0; attempt < 10; attempt += 1) {
      const wrong = await f.resetWithPasskey(token, holder, { userVerified: false });
      expect(wrong.json().code).toBe('invalid_second_factor');
    }
    const locked = await f.resetWithPasskey(token, holder);
    expect(locked.statusCode).toBe(400);
    expect(locked.json().code).toBe('invalid_second_factor');
  });

  it('counts the options route as a token submission (R11)', async () => {
    const bogus = 'B'.repeat(43);
    const from = (url: string, payload: object) =>
      f.inject({ method: 'POST', url, payload, remoteAddress: '203.0.113.77' });
    for (let i = 0; i < 5; i += 1) {
      expect((await from('/password/reset/webauthn/options', { token: bogus })).statusCode).toBe(400);
      expect(
        (await from('/password/reset', { token: bogus, new_password: 'whatever passphrase' })).statusCode,
      ).toBe(400);
    }
    const refused = await from('/password/reset/webauthn/options', { token: bogus });
    expect(refused.statusCode).toBe(429);
  });
});
