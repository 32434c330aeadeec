import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { discoverBearerRoutes, type Route, routeName } from '../support/bearer-routes.ts';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { decodeToken } from '../support/forge-token.ts';
import { createSoftAuthenticator } from '../support/soft-authenticator.ts';

const ALICE_PASSWORD = STRONG_PASSWORD;
const BOB_PASSWORD = 'a different passphrase for bob';
const ALICE_ADDRESS = '198.51.100.7';
const ALICE_AGENT = 'alice-agent/7.1';
const ALICE_MESSAGES = ['alice secret one', 'alice secret two', 'alice secret three'];

interface Alice {
  id: number;
  accessToken: string;
  sessionIds: string[];
  messageCursor: string;
  activityCursor: string;
  passkeyId: string;
  /** A registration challenge of Alice's, never answered. */
  registrationChallengeId: string;
}

type Call = (bob: string, alice: Alice) => Promise<LightMyRequestResponse>;

/**
 * Nobody reads or writes another user's data (ASVS 8.2.2): every Bearer route, called with Bob's token and Alice's
 * ids, answers about Bob or refuses, and Alice's data stays as it was.
 */
describe.each(dialects)('isolation between users on %s', (dialect) => {
  let t: TestApp;
  let alice: Alice;
  let bob: string;

  const send = (
    method: string,
    url: string,
    token: string,
    payload?: unknown,
    extra: { remoteAddress?: string; headers?: Record<string, string> } = {},
  ) =>
    t.app.inject({
      method: method as 'GET',
      url,
      ...(extra.remoteAddress ? { remoteAddress: extra.remoteAddress } : {}),
      headers: { authorization: `Bearer ${token}`, ...extra.headers },
      ...(payload === undefined ? {} : { payload: payload as object }),
    });
  const login = async (
    username: string,
    password: string,
    extra: { remoteAddress?: string; headers?: Record<string, string> } = {},
  ) => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password },
      ...extra,
    });
    expect(response.statusCode).toBe(200);
    return response.json().access_token as string;
  };

  beforeAll(async () => {
    t = await buildTestApp(dialect);
    const registered = await registerUser(t.app, { username: 'Alice-iso', email: 'alice-iso@example.com' });
    await registerUser(t.app, {
      username: 'Bob-iso',
      email: 'bob-iso@example.com',
      password: BOB_PASSWORD,
    });
    const aliceLogin = { remoteAddress: ALICE_ADDRESS, headers: { 'user-agent': ALICE_AGENT } };
    const tokens = [
      await login('alice-iso', ALICE_PASSWORD, aliceLogin),
      await login('alice-iso', ALICE_PASSWORD, aliceLogin),
    ];
    // A failed login against Alice's account, so that her activity has something Bob must not see.
    await t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: ALICE_ADDRESS,
      payload: { username: 'alice-iso', password: 'wrong password for alice' },
    });
    for (const text of ALICE_MESSAGES) {
      expect((await send('POST', '/conversation/messages', tokens[0]!, { text })).statusCode).toBe(201);
    }
    const messages = (await send('GET', '/conversation/messages?limit=1', tokens[0]!)).json();
    await t.app.auditTrail.flush();
    const activity = (await send('GET', '/users/me/activity?limit=1', tokens[0]!)).json();
    expect(activity.next).toEqual(expect.any(String));
    const authenticator = createSoftAuthenticator({ origin: 'http://localhost:8000' });
    const passkeyOptions = () =>
      send('POST', '/users/me/passkeys/registration/options', tokens[0]!, { password: ALICE_PASSWORD });
    const creation = (await passkeyOptions()).json();
    // Taken before the passkey exists: then the password alone gives options.
    const registrationChallengeId = (await passkeyOptions()).json().challenge_id;
    const passkey = await send('POST', '/users/me/passkeys/registration/verify', tokens[0]!, {
      challenge_id: creation.challenge_id,
      response: authenticator.register(creation.options),
      name: 'Alice-iso laptop',
    });
    expect(passkey.statusCode).toBe(201);
    alice = {
      id: registered.id,
      accessToken: tokens[0]!,
      sessionIds: tokens.map((token) => decodeToken(token).payload.sid as string),
      messageCursor: messages.next,
      activityCursor: activity.next,
      passkeyId: passkey.json().id,
      registrationChallengeId,
    };
    bob = await login('bob-iso', BOB_PASSWORD);
  });
  afterAll(async () => {
    await t.close();
  });

  /** Anything of Alice's that Bob must never be shown. */
  const aliceMarkers = () => [
    'Alice-iso',
    'alice-iso@example.com',
    ALICE_ADDRESS,
    ALICE_AGENT,
    ...ALICE_MESSAGES,
    ...alice.sessionIds,
    alice.passkeyId,
  ];

  const expectNothingOfAlice = (response: LightMyRequestResponse, what: string) => {
    expect(response.statusCode, `${what}: ${response.body}`).toBeLessThan(500);
    for (const marker of aliceMarkers())
      expect(response.body, `${what} shows ${marker}`).not.toContain(marker);
  };

  // What each known route does with Bob's token and Alice's ids, and the status it must answer.
  const KNOWN: Record<string, { call: Call; status: number[] }> = {
    'GET /conversation': { call: (b) => send('GET', '/conversation', b), status: [200] },
    'GET /conversation/messages': {
      call: (b, a) => send('GET', `/conversation/messages?before=${encodeURIComponent(a.messageCursor)}`, b),
      status: [200],
    },
    'POST /conversation/messages': {
      // Fields naming Alice's conversation are not the API's: they must change nothing of hers.
      call: (b, a) =>
        send('POST', '/conversation/messages', b, {
          text: 'bob writes',
          user_id: a.id,
          conversation_id: a.id,
        }),
      status: [201, 422],
    },
    'GET /users/me': { call: (b) => send('GET', '/users/me', b), status: [200] },
    'PATCH /users/me': {
      call: (b, a) => send('PATCH', '/users/me', b, { id: a.id, username: 'Alice-iso', age: 77 }),
      status: [200, 422],
    },
    'POST /users/me/password': {
      call: (b) =>
        send('POST', '/users/me/password', b, {
          current_password: ALICE_PASSWORD,
          new_password: 'bob takes over alice now',
        }),
      status: [400],
    },
    'DELETE /users/me': {
      call: (b) => send('DELETE', '/users/me', b, { password: ALICE_PASSWORD }),
      status: [400],
    },
    'GET /users/me/sessions': { call: (b) => send('GET', '/users/me/sessions', b), status: [200] },
    // Second factors: Bob's own, and Alice's password proves nothing for Bob's session.
    'GET /users/me/mfa': { call: (b) => send('GET', '/users/me/mfa', b), status: [200] },
    'POST /users/me/mfa/totp': {
      call: (b) => send('POST', '/users/me/mfa/totp', b, { password: ALICE_PASSWORD }),
      status: [400],
    },
    'POST /users/me/mfa/totp/confirm': {
      call: (b) => send('POST', '/users/me/mfa/totp/confirm', b, { code: '123456' }),
      status: [404],
    },
    'DELETE /users/me/mfa/totp': {
      call: (b) => send('DELETE', '/users/me/mfa/totp', b, { password: ALICE_PASSWORD, otp: '123456' }),
      status: [400],
    },
    'POST /users/me/mfa/recovery-codes': {
      call: (b) =>
        send('POST', '/users/me/mfa/recovery-codes', b, { password: ALICE_PASSWORD, otp: '123456' }),
      status: [400],
    },
    // Only Bob's own account can change: Alice's password proves nothing for Bob's session.
    'POST /users/me/email': {
      call: (b) =>
        send('POST', '/users/me/email', b, { new_email: 'bob-moves@example.com', password: ALICE_PASSWORD }),
      status: [400],
    },
    // Bob's own address gets the link, whatever id of Alice's the body names.
    'POST /users/me/email/verification': {
      call: (b, a) =>
        send('POST', '/users/me/email/verification', b, { id: a.id, email: 'alice-iso@example.com' }),
      status: [202],
    },
    'DELETE /users/me/sessions/{id}': {
      call: async (b, a) => {
        const answers = await Promise.all(
          a.sessionIds.map((id) => send('DELETE', `/users/me/sessions/${id}`, b)),
        );
        for (const answer of answers) expect(answer.statusCode).toBe(404);
        return answers[0]!;
      },
      status: [404],
    },
    'GET /users/me/activity': {
      call: (b, a) => send('GET', `/users/me/activity?before=${encodeURIComponent(a.activityCursor)}`, b),
      status: [200],
    },
    'POST /users/me/passkeys/registration/options': {
      call: (b) => send('POST', '/users/me/passkeys/registration/options', b, { password: ALICE_PASSWORD }),
      status: [400],
    },
    'POST /users/me/passkeys/registration/verify': {
      call: (b, a) => {
        const forged = createSoftAuthenticator({ origin: 'http://localhost:8000' }).register({
          challenge: 'AAAA',
          rp: { id: 'localhost', name: 'Gatehouse' },
          user: { id: 'AAAA', name: 'bob-iso', displayName: 'bob-iso' },
          pubKeyCredParams: [],
        });
        return send('POST', '/users/me/passkeys/registration/verify', b, {
          challenge_id: a.registrationChallengeId,
          response: forged,
        });
      },
      status: [400],
    },
    'GET /users/me/passkeys': { call: (b) => send('GET', '/users/me/passkeys', b), status: [200] },
    'PATCH /users/me/passkeys/{id}': {
      call: (b, a) => send('PATCH', `/users/me/passkeys/${a.passkeyId}`, b, { name: 'bob was here' }),
      status: [404],
    },
    'DELETE /users/me/passkeys/{id}': {
      call: (b, a) => send('DELETE', `/users/me/passkeys/${a.passkeyId}`, b, { password: BOB_PASSWORD }),
      status: [404],
    },
    'POST /logout': { call: (b) => send('POST', '/logout', b), status: [204] },
    'POST /logout/all': {
      call: async () => send('POST', '/logout/all', await login('bob-iso', BOB_PASSWORD)),
      status: [204],
    },
  };
  // Signing out ends Bob's token: those go last.
  const LAST = ['POST /logout', 'POST /logout/all'];

  /** A route nobody listed above (added later): Alice's ids in every parameter, and never a success on them. */
  const unlisted =
    (route: Route): Call =>
    async (b, a) => {
      const ids = [String(a.id), 'Alice-iso', a.sessionIds[0]!];
      let last: LightMyRequestResponse | undefined;
      for (const id of ids) {
        const url = route.path.replace(/\{[^}]+\}/g, encodeURIComponent(id));
        last = await send(route.method, url, b, route.method === 'GET' ? undefined : {});
        expectNothingOfAlice(last, `${routeName(route)} with ${id}`);
        if (route.path.includes('{'))
          expect(last.statusCode, `${routeName(route)} with ${id}`).toBeGreaterThanOrEqual(400);
      }
      return last!;
    };

  it('walks every Bearer route with Bob’s token and Alice’s ids: refusals or Bob’s own data, never Alice’s', async () => {
    const routes = await discoverBearerRoutes(t.app);
    for (const name of Object.keys(KNOWN)) expect(routes.map(routeName), name).toContain(name);
    const ordered = [
      ...routes.filter((route) => !LAST.includes(routeName(route))),
      ...LAST.map((name) => routes.find((route) => routeName(route) === name)!),
    ];
    for (const route of ordered) {
      const name = routeName(route);
      const known = KNOWN[name];
      const response = await (known ? known.call(bob, alice) : unlisted(route)(bob, alice));
      if (known)
        expect(known.status, `${name} answered ${response.statusCode}: ${response.body}`).toContain(
          response.statusCode,
        );
      expectNothingOfAlice(response, name);
    }

    // Alice's account, sessions and conversation are as they were.
    const me = await send('GET', '/users/me', alice.accessToken);
    expect(me.statusCode).toBe(200);
    expect(me.json()).toMatchObject({
      id: alice.id,
      username: 'Alice-iso',
      email: 'alice-iso@example.com',
      age: 30,
    });
    const sessions = (await send('GET', '/users/me/sessions', alice.accessToken)).json().sessions;
    // Her second session signed in with the password alone and ended when she added the passkey from the first.
    expect(sessions.map((session: { id: string }) => session.id)).toEqual([alice.sessionIds[0]]);
    const messages = (await send('GET', '/conversation/messages', alice.accessToken)).json().messages;
    expect(messages.map((message: { text: string }) => message.text)).toEqual([
      ...[...ALICE_MESSAGES].reverse(),
      'This is a secure conversation',
    ]);
    expect((await send('GET', '/conversation', alice.accessToken)).json().current_user).toBe('Alice-iso');
    const passkeys = (await send('GET', '/users/me/passkeys', alice.accessToken)).json().passkeys;
    expect(passkeys).toEqual([expect.objectContaining({ id: alice.passkeyId, name: 'Alice-iso laptop' })]);
    // Her password is still hers: with her passkey registered, it now leads to the second step.
    const again = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: 'alice-iso', password: ALICE_PASSWORD },
    });
    expect(again.statusCode).toBe(403);
    expect(again.json()).toMatchObject({ error: 'mfa_required', mfa_methods: ['webauthn'] });
  });

  it('pages Bob through his own messages only, whatever cursor of Alice’s he sends', async () => {
    const token = await login('bob-iso', BOB_PASSWORD);
    const response = await send(
      'GET',
      `/conversation/messages?before=${encodeURIComponent(alice.messageCursor)}`,
      token,
    );
    expectNothingOfAlice(response, 'cursor');
  });
});
