import type {
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
} from '@simplewebauthn/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { createSoftAuthenticator } from '../support/soft-authenticator.ts';

const MFA_GRANT = 'urn:gatehouse:params:oauth:grant-type:mfa';

// Found in review: of parallel grants of one mfa_token with a passkey as the second step, each loser recorded
// passkey_login too, audited before the mfa_token was won.
describe.each(dialects)('parallel passkey grants of one mfa_token on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  it('records one passkey_login for the one grant that logged in', async () => {
    const username = 'auditleg';
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
    });
    const headers = { authorization: `Bearer ${login.json().access_token as string}` };
    const authenticator = createSoftAuthenticator({ origin: 'http://localhost:8000', counterStep: 0 });
    const creation = (
      await t.app.inject({
        method: 'POST',
        url: '/users/me/passkeys/registration/options',
        headers,
        payload: { password: STRONG_PASSWORD },
      })
    ).json() as { challenge_id: string; options: PublicKeyCredentialCreationOptionsJSON };
    const verified = await t.app.inject({
      method: 'POST',
      url: '/users/me/passkeys/registration/verify',
      headers,
      payload: { challenge_id: creation.challenge_id, response: authenticator.register(creation.options) },
    });
    expect(verified.statusCode, verified.body).toBe(201);
    const second = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
    });
    expect(second.statusCode, second.body).toBe(403);
    const mfaToken = second.json().mfa_token as string;
    const options = await Promise.all(
      [0, 1, 2].map(
        async () =>
          (
            await t.app.inject({
              method: 'POST',
              url: '/mfa/webauthn/options',
              payload: { mfa_token: mfaToken },
            })
          ).json() as {
            challenge_id: string;
            options: PublicKeyCredentialRequestOptionsJSON;
          },
      ),
    );
    const grants = await Promise.all(
      options.map(({ challenge_id, options: request }) =>
        t.app.inject({
          method: 'POST',
          url: '/token',
          payload: {
            grant_type: MFA_GRANT,
            mfa_token: mfaToken,
            challenge_id,
            webauthn_response: JSON.stringify(authenticator.assert(request)),
          },
        }),
      ),
    );
    expect(grants.map((g) => g.statusCode).sort()).toEqual([200, 400, 400]);
    await t.app.auditTrail.flush();
    const events = (
      await t.database.db
        .selectFrom('audit_events')
        .select('event')
        .where('user_id', '=', user.id)
        .orderBy('id')
        .execute()
    ).map((row) => row.event);
    expect(events.filter((event) => event === 'second_factor_used')).toHaveLength(1);
    expect(events.filter((event) => event === 'passkey_login')).toHaveLength(1);
  });
});
