import { setTimeout as sleep } from 'node:timers/promises';
import { hashSync as bcryptHashSync } from '@node-rs/bcrypt';
import type {
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
} from '@simplewebauthn/server';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createCounterStore } from '../../src/db/counters.ts';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createPasskeysRepository } from '../../src/db/passkeys.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { generateOneTimeToken } from '../../src/security/one-time-tokens.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { createMailComposer } from '../../src/services/mail.ts';
import { createPasskeysService } from '../../src/services/passkeys.ts';
import { createThrottle, type Throttle, throttleKeysOf } from '../../src/services/throttle.ts';
import {
  buildTestApp,
  registerUser,
  STRONG_PASSWORD,
  TEST_SECRET,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { outboxMails } from '../support/outbox.ts';
import {
  type CeremonyOverrides,
  createSoftAuthenticator,
  type SoftAuthenticator,
  type SoftAuthenticatorOptions,
} from '../support/soft-authenticator.ts';

const ORIGIN = 'http://localhost:8000';
const WEBAUTHN_GRANT = 'urn:gatehouse:params:oauth:grant-type:webauthn';

interface PasskeyBody {
  id: string;
  name: string;
  created_at: string;
  last_used_at: string | null;
  backed_up: boolean;
  suspect: boolean;
}

/** The passkeys service over a test app's database, driven directly as the grants' use cases drive it. */
const passkeysServiceOver = (t: TestApp, throttle?: Throttle) =>
  createPasskeysService({
    passkeys: createPasskeysRepository(t.database.db),
    users: createUsersRepository(t.database.db),
    mfa: {} as never,
    clock: t.clock,
    mail: {
      composer: createMailComposer(createSecretBox([TEST_SECRET])),
      publicUrl: 'http://localhost:8000',
      mailQueued: () => {},
    },
    rp: t.config.webauthn,
    throttle,
  });

describe.each(dialects)('passkeys on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  let counter = 0;
  /** A new account with its bearer token and a software authenticator of its own. */
  const newAccount = async (options: Partial<SoftAuthenticatorOptions> = {}) => {
    counter += 1;
    const username = `keyholder${counter}`;
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
    });
    const bearer = (response.json() as { access_token: string }).access_token;
    return {
      user,
      bearer,
      authenticator: createSoftAuthenticator({ origin: ORIGIN, ...options }),
    };
  };
  type Account = Awaited<ReturnType<typeof newAccount>>;

  const call = (
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    bearer?: string,
    payload?: unknown,
  ) =>
    t.app.inject({
      method,
      url,
      headers: bearer ? { authorization: `Bearer ${bearer}` } : {},
      ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }),
    });

  const registrationOptions = async (account: Account) => {
    const response = await call('POST', '/users/me/passkeys/registration/options', account.bearer, {
      password: STRONG_PASSWORD,
    });
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { challenge_id: string; options: PublicKeyCredentialCreationOptionsJSON };
  };

  const register = async (
    account: Account,
    overrides: CeremonyOverrides = {},
    name?: string,
    authenticator: SoftAuthenticator = account.authenticator,
  ) => {
    const { challenge_id, options } = await registrationOptions(account);
    return call('POST', '/users/me/passkeys/registration/verify', account.bearer, {
      challenge_id,
      response: authenticator.register(options, overrides),
      ...(name === undefined ? {} : { name }),
    });
  };

  const passwordlessOptions = async () => {
    const response = await call('POST', '/passkeys/authentication/options');
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { challenge_id: string; options: PublicKeyCredentialRequestOptionsJSON };
  };

  const grant = (challengeId: string, webauthnResponse: unknown, form = false) =>
    form
      ? t.app.inject({
          method: 'POST',
          url: '/token',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({
            grant_type: WEBAUTHN_GRANT,
            challenge_id: challengeId,
            webauthn_response: JSON.stringify(webauthnResponse),
          }).toString(),
        })
      : call('POST', '/token', undefined, {
          grant_type: WEBAUTHN_GRANT,
          challenge_id: challengeId,
          webauthn_response: webauthnResponse,
        });

  const passwordless = async (authenticator: SoftAuthenticator, overrides: CeremonyOverrides = {}) => {
    const { challenge_id, options } = await passwordlessOptions();
    return grant(challenge_id, authenticator.assert(options, overrides));
  };

  /**
   * Swaps the account's bearer for one of a passwordless login: once it has a passkey, changing factors needs a
   * session that logged in with a second factor (or a code, which a passkey-only account has not).
   */
  const signInWithPasskey = async (account: Account) => {
    const response = await passwordless(account.authenticator);
    expect(response.statusCode, response.body).toBe(200);
    account.bearer = (response.json() as { access_token: string }).access_token;
  };

  const refusals = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .select(['event', 'detail'])
      .where('user_id', '=', userId)
      .where('event', '=', 'passkey_refused')
      .orderBy('id')
      .execute();
    return rows.map((row) => JSON.parse(row.detail ?? '{}').reason as string);
  };

  const sessionAmrs = async (userId: number) =>
    (
      await t.database.db
        .selectFrom('sessions')
        .select('amr')
        .where('user_id', '=', userId)
        .orderBy('created_at_ms')
        .execute()
    ).map((row) => row.amr);

  it('registers, lists, renames, logs in without a password, deletes, and then refuses the deleted passkey', async () => {
    const account = await newAccount();
    const registered = await register(account, {}, '  Laptop  ');
    expect(registered.statusCode, registered.body).toBe(201);
    const passkey = registered.json() as PasskeyBody;
    expect(passkey).toMatchObject({ name: 'Laptop', last_used_at: null, backed_up: false, suspect: false });

    const listed = await call('GET', '/users/me/passkeys', account.bearer);
    expect(listed.statusCode).toBe(200);
    expect((listed.json() as { passkeys: PasskeyBody[] }).passkeys).toEqual([passkey]);

    const renamed = await call('PATCH', `/users/me/passkeys/${passkey.id}`, account.bearer, {
      name: 'Work laptop',
    });
    expect(renamed.statusCode, renamed.body).toBe(200);
    expect((renamed.json() as PasskeyBody).name).toBe('Work laptop');

    const login = await passwordless(account.authenticator);
    expect(login.statusCode, login.body).toBe(200);
    const tokens = login.json() as { access_token: string; refresh_token: string };
    expect((await call('GET', '/conversation', tokens.access_token)).statusCode).toBe(200);
    expect((await sessionAmrs(account.user.id)).at(-1)).toBe('hwk user mfa');
    const [used] = (
      (await call('GET', '/users/me/passkeys', account.bearer)).json() as { passkeys: PasskeyBody[] }
    ).passkeys;
    expect(used?.last_used_at).not.toBeNull();

    const refused = await call('DELETE', `/users/me/passkeys/${passkey.id}`, tokens.access_token, {
      password: 'not the password',
    });
    expect(refused.statusCode).toBe(400);
    // The password-only session may not remove the passkey; the passkey's own session may.
    const weak = await call('DELETE', `/users/me/passkeys/${passkey.id}`, account.bearer, {
      current_password: STRONG_PASSWORD,
    });
    expect(weak.statusCode).toBe(401);
    expect(weak.json()).toMatchObject({ code: 'insufficient_user_authentication' });
    const deleted = await call('DELETE', `/users/me/passkeys/${passkey.id}`, tokens.access_token, {
      current_password: STRONG_PASSWORD,
    });
    expect(deleted.statusCode, deleted.body).toBe(204);
    expect((await call('GET', '/users/me/passkeys', account.bearer)).json()).toEqual({ passkeys: [] });

    const afterDelete = await passwordless(account.authenticator);
    expect(afterDelete.statusCode).toBe(400);
    expect(afterDelete.json()).toMatchObject({ error: 'invalid_grant' });
    expect(await refusals(account.user.id)).toEqual([]);

    const mails = (await outboxMails(t.database, `${account.user.username}@example.com`)).filter(
      (mail) => mail.template === 'mfa_changed',
    );
    expect(mails).toHaveLength(2);
  });

  it('accepts the webauthn_response as JSON text in a form body, and marks a synced passkey swk', async () => {
    const account = await newAccount({ backupEligible: true, algorithm: 'EdDSA', counterStep: 0 });
    expect((await register(account)).statusCode).toBe(201);
    const { challenge_id, options } = await passwordlessOptions();
    const login = await grant(challenge_id, account.authenticator.assert(options), true);
    expect(login.statusCode, login.body).toBe(200);
    expect((await sessionAmrs(account.user.id)).at(-1)).toBe('swk user mfa');
    // A synced passkey keeps its counter at 0: 0 after 0 is no regression.
    expect((await passwordless(account.authenticator)).statusCode).toBe(200);
    const [listed] = (
      (await call('GET', '/users/me/passkeys', account.bearer)).json() as { passkeys: PasskeyBody[] }
    ).passkeys;
    expect(listed).toMatchObject({ name: 'Passkey 1', backed_up: true, suspect: false });
  });

  it('gives the web client its refresh token in a cookie, not in the body', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    const { challenge_id, options } = await passwordlessOptions();
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      headers: { 'x-gatehouse-client': 'web', origin: 'http://localhost' },
      payload: {
        grant_type: WEBAUTHN_GRANT,
        challenge_id,
        webauthn_response: account.authenticator.assert(options),
      },
    });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json()).not.toHaveProperty('refresh_token');
    expect(response.json()).toHaveProperty('access_token');
    expect(String(response.headers['set-cookie'])).toMatch(/HttpOnly/i);
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('keeps assertions out of the logs and audits each change', async () => {
    const account = await newAccount();
    const passkey = (await register(account)).json() as PasskeyBody;
    const { challenge_id, options } = await passwordlessOptions();
    const assertion = account.authenticator.assert(options);
    const login = await grant(challenge_id, assertion);
    expect(login.statusCode).toBe(200);
    const bearer = (login.json() as { access_token: string }).access_token;
    await call('PATCH', `/users/me/passkeys/${passkey.id}`, bearer, { name: 'Phone' });
    await call('DELETE', `/users/me/passkeys/${passkey.id}`, bearer, { password: STRONG_PASSWORD });
    const logged = t.logs.join('\n');
    expect(logged).not.toContain(assertion.response.signature);
    expect(logged).not.toContain(assertion.response.authenticatorData);
    await t.app.auditTrail.flush();
    const events = await t.database.db
      .selectFrom('audit_events')
      .select(['event', 'detail'])
      .where('user_id', '=', account.user.id)
      .where('event', 'like', 'passkey_%')
      .orderBy('id')
      .execute();
    expect(events.map((row) => row.event)).toEqual([
      'passkey_registered',
      'passkey_login',
      'passkey_renamed',
      'passkey_deleted',
    ]);
    expect(JSON.parse(events[0]?.detail ?? '{}')).toEqual({ passkeyId: passkey.id });
  });

  it('gives registration options for a discoverable, user-verified passkey under a 64-byte handle without the username', async () => {
    const account = await newAccount();
    const { options } = await registrationOptions(account);
    expect(options.rp).toEqual({ id: 'localhost', name: 'Gatehouse' });
    expect(options.user.name).toBe(account.user.username);
    const handle = Buffer.from(options.user.id, 'base64url');
    expect(handle).toHaveLength(64);
    expect(handle.toString('latin1')).not.toContain(account.user.username);
    expect(options.user.id).not.toContain(account.user.username);
    expect(options.authenticatorSelection).toMatchObject({
      residentKey: 'required',
      userVerification: 'required',
    });
    expect(options.attestation).toBe('none');
    expect(options.pubKeyCredParams.map((param) => param.alg)).toEqual([-8, -7, -257]);
    expect(Buffer.from(options.challenge, 'base64url')).toHaveLength(32);
    // The handle stays the same across registrations, and the existing passkeys are excluded.
    expect((await register(account)).statusCode).toBe(201);
    await signInWithPasskey(account);
    const again = await registrationOptions(account);
    expect(again.options.user.id).toBe(options.user.id);
    expect(again.options.excludeCredentials).toHaveLength(1);
    const stored = await t.database.db
      .selectFrom('users')
      .select('webauthn_user_handle')
      .where('id', '=', account.user.id)
      .executeTakeFirstOrThrow();
    expect(stored.webauthn_user_handle).toBe(options.user.id);
  });

  // Found from outside: a name the verification refuses was only checked there, after the authenticator had made the
  // credential (left on the device, unknown to the server), and the page showed the raw regular expression.
  it('refuses a passkey name it will not store before the ceremony, and says why in words', async () => {
    const account = await newAccount();
    for (const name of ['abc\u202edef', '\u200b\u200b']) {
      const refused = await call('POST', '/users/me/passkeys/registration/options', account.bearer, {
        password: STRONG_PASSWORD,
        name,
      });
      expect(refused.statusCode, JSON.stringify(name)).toBe(422);
      const [problem] = refused.json().detail as { loc: string[]; msg: string; type: string }[];
      expect(problem).toMatchObject({ loc: ['body', 'name'], type: 'string_pattern_mismatch' });
      expect(problem?.msg).not.toMatch(/\\p\{|\^\(\?=/);
      expect(problem?.msg).toMatch(/visible|bidi|control/);
    }
    const renamed = await call('PATCH', '/users/me/passkeys/anything', account.bearer, {
      name: 'abc\u202edef',
    });
    expect(renamed.statusCode).toBe(422);
    expect(renamed.json().detail[0].msg).not.toMatch(/\\p\{/);
    const accepted = await call('POST', '/users/me/passkeys/registration/options', account.bearer, {
      password: STRONG_PASSWORD,
      name: 'Work laptop',
    });
    expect(accepted.statusCode).toBe(200);
  });

  it('refuses registration options without the right password', async () => {
    const account = await newAccount();
    const wrong = await call('POST', '/users/me/passkeys/registration/options', account.bearer, {
      password: 'wrong password here',
    });
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json()).toMatchObject({ code: 'invalid_password' });
    // A missing password is missing recent authentication (RFC 9470), as on /users/me/mfa/totp.
    const missing = await call('POST', '/users/me/passkeys/registration/options', account.bearer, {});
    expect(missing.statusCode).toBe(401);
    expect(missing.json()).toEqual({
      detail: 'Your password is required',
      code: 'insufficient_user_authentication',
    });
    const missingOnDelete = await call('DELETE', '/users/me/passkeys/anything', account.bearer, {
      current_password: '',
    });
    expect(missingOnDelete.statusCode).toBe(401);
    expect((await call('POST', '/users/me/passkeys/registration/options', undefined, {})).statusCode).toBe(
      401,
    );
  });

  it.each<[string, CeremonyOverrides]>([
    ['user verification off', { userVerified: false }],
    ['a wrong origin', { origin: 'http://localhost:9999' }],
    ['a wrong RP ID hash', { rpId: 'evil.example' }],
    ['another challenge', { challenge: Buffer.alloc(32, 7).toString('base64url') }],
    // Found from outside: a made-up response naming another id than its credential's was stored.
    ["an id other than its credential's", { responseId: Buffer.alloc(32, 9).toString('base64url') }],
  ])('refuses a registration with %s', async (_, overrides) => {
    const account = await newAccount();
    const response = await register(account, overrides);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ code: 'invalid_passkey' });
    expect((await call('GET', '/users/me/passkeys', account.bearer)).json()).toEqual({ passkeys: [] });
  });

  it('gives public options with an empty allowCredentials and user verification required', async () => {
    const { challenge_id, options } = await passwordlessOptions();
    expect(challenge_id).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(options.allowCredentials).toEqual([]);
    expect(options.userVerification).toBe('required');
    expect(options.rpId).toBe('localhost');
  });

  it.each<[string, CeremonyOverrides, string]>([
    ['user verification off', { userVerified: false }, 'invalid_assertion'],
    ['a bogus signature', { bogusSignature: true }, 'invalid_assertion'],
    ['a wrong origin', { origin: 'https://evil.example' }, 'invalid_assertion'],
    ['a wrong RP ID hash', { rpId: 'evil.example' }, 'invalid_assertion'],
  ])('refuses a passwordless login with %s', async (_, overrides, reason) => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    const response = await passwordless(account.authenticator, overrides);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ error: 'invalid_grant' });
    expect(await refusals(account.user.id)).toEqual([reason]);
    expect(await sessionAmrs(account.user.id)).toEqual(['pwd']);
  });

  it('refuses a replayed assertion: its challenge is spent', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    const { challenge_id, options } = await passwordlessOptions();
    const assertion = account.authenticator.assert(options);
    expect((await grant(challenge_id, assertion)).statusCode).toBe(200);
    const replay = await grant(challenge_id, assertion);
    expect(replay.statusCode).toBe(400);
    expect(replay.json()).toMatchObject({ error: 'invalid_grant' });
  });

  it('lets exactly one of 2 parallel submissions of one assertion through', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    const { challenge_id, options } = await passwordlessOptions();
    const assertion = account.authenticator.assert(options);
    const results = await Promise.all([grant(challenge_id, assertion), grant(challenge_id, assertion)]);
    expect(results.map((response) => response.statusCode).sort()).toEqual([200, 400]);
  });

  // Found in review: a passwordless login proves no password, yet its session was bound to the hash it had read, so a
  // password login upgrading that hash meanwhile (an imported bcrypt hash, older argon2id parameters) refused it,
  // after its assertion and challenge were spent.
  it('logs in without a password while a password login upgrades the account’s hash', async () => {
    const accounts = await Promise.all(Array.from({ length: 6 }, () => newAccount()));
    for (const account of accounts) expect((await register(account)).statusCode).toBe(201);
    const answers = await Promise.all(
      accounts.map(async (account, index) => {
        await t.database.db
          .updateTable('users')
          .set({ password_hash: bcryptHashSync(STRONG_PASSWORD, 4) })
          .where('id', '=', account.user.id)
          .execute();
        const { challenge_id, options } = await passwordlessOptions();
        const assertion = account.authenticator.assert(options);
        const passwordLogin = () =>
          call('POST', '/token', undefined, { username: account.user.username, password: STRONG_PASSWORD });
        // Both orders: the upgrade lands before the session's write in one or the other.
        const [passwordless, password] =
          index % 2 === 0
            ? await Promise.all([grant(challenge_id, assertion), passwordLogin()])
            : await Promise.all([passwordLogin(), grant(challenge_id, assertion)]).then(
                ([a, b]) => [b, a] as const,
              );
        expect(password.statusCode, password.body).toBeLessThan(500);
        return passwordless.statusCode;
      }),
    );
    expect(answers).toEqual(Array(accounts.length).fill(200));
    for (const account of accounts) {
      const { password_hash } = await t.database.db
        .selectFrom('users')
        .select('password_hash')
        .where('id', '=', account.user.id)
        .executeTakeFirstOrThrow();
      expect(password_hash).toMatch(/^\$argon2id\$/);
    }
  });

  // The same race, made certain (found in review: the parallel test above failed without the fix in 3 runs of 7): the
  // grant has read the hash and waits for the user's row, which a transaction holds while it stores an upgraded hash.
  it.runIf(dialect === 'postgres')(
    'logs in without a password when the hash it read is upgraded before its session is written',
    async () => {
      const account = await newAccount();
      expect((await register(account)).statusCode).toBe(201);
      const { challenge_id, options } = await passwordlessOptions();
      const assertion = account.authenticator.assert(options);
      let answer: Awaited<ReturnType<typeof grant>> | undefined;
      await t.database.db.transaction().execute(async (trx) => {
        await sql`select id from users where id = ${account.user.id} for update`.execute(trx);
        void grant(challenge_id, assertion).then((response) => {
          answer = response;
        });
        const waitsForTheRow = async () =>
          (
            await sql<{ waiting: number }>`select count(*)::int as waiting from pg_stat_activity
              where wait_event_type = 'Lock' and datname = current_database()`.execute(t.database.db)
          ).rows[0]?.waiting ?? 0;
        for (let waited = 0; (await waitsForTheRow()) === 0 && waited < 5000; waited += 20) await sleep(20);
        expect(await waitsForTheRow()).toBeGreaterThan(0);
        await trx
          .updateTable('users')
          .set({ password_hash: bcryptHashSync(STRONG_PASSWORD, 4) })
          .where('id', '=', account.user.id)
          .execute();
      });
      for (let waited = 0; answer === undefined && waited < 5000; waited += 20) await sleep(20);
      expect(answer?.statusCode, answer?.body).toBe(200);
    },
  );

  it('marks a cloned credential with a lower counter suspect, mails the owner, and then refuses even a good counter', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    for (let n = 0; n < 3; n += 1) expect((await passwordless(account.authenticator)).statusCode).toBe(200);
    // The clone signs with the same key but only knows counter 2; the original is at 3.
    const clone = await passwordless(account.authenticator, { signCount: 2 });
    expect(clone.statusCode).toBe(400);
    const [listed] = (
      (await call('GET', '/users/me/passkeys', account.bearer)).json() as { passkeys: PasskeyBody[] }
    ).passkeys;
    expect(listed?.suspect).toBe(true);
    const good = await passwordless(account.authenticator, { signCount: 100 });
    expect(good.statusCode).toBe(400);
    expect(await refusals(account.user.id)).toEqual(['counter_regression', 'suspect_credential']);
    const mails = (await outboxMails(t.database, `${account.user.username}@example.com`)).filter(
      (mail) => mail.template === 'mfa_changed',
    );
    // Added, then refused as a possible copy.
    expect(mails).toHaveLength(2);
    // A blocked passkey is no second factor: the password grant no longer offers it, the counts leave it out.
    const afterBlock = await call('POST', '/token', undefined, {
      username: account.user.username,
      password: STRONG_PASSWORD,
    });
    expect(afterBlock.statusCode, afterBlock.body).toBe(200);
    expect((await call('GET', '/users/me/mfa', account.bearer)).json()).toMatchObject({ passkeys: 0 });
  });

  // Found from outside: five assertions with one counter, all above the stored one, sent at once: one logged in, and the
  // passkey was marked suspect only when a loser read the counter after the winner wrote it. A genuine authenticator
  // never signs two assertions with one non-zero counter (L3 §6.1.1): the equal counter is the copy's mark.
  it('marks a passkey suspect when assertions with one counter race: one logs in, the others are refused', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    expect((await passwordless(account.authenticator)).statusCode).toBe(200);
    const challenges = await Promise.all([0, 1, 2, 3, 4].map(() => passwordlessOptions()));
    const answers = await Promise.all(
      challenges.map(({ challenge_id, options }) =>
        grant(challenge_id, account.authenticator.assert(options, { signCount: 2 })),
      ),
    );
    expect(answers.map((answer) => answer.statusCode).sort()).toEqual([200, 400, 400, 400, 400]);
    const [listed] = (
      (await call('GET', '/users/me/passkeys', account.bearer)).json() as { passkeys: PasskeyBody[] }
    ).passkeys;
    expect(listed?.suspect).toBe(true);
    // The first loser marks it; the ones judged after that meet a suspect passkey.
    const reasons = await refusals(account.user.id);
    expect(reasons).toHaveLength(4);
    expect(reasons).toContain('counter_regression');
    expect(
      reasons.filter((reason) => reason !== 'counter_regression' && reason !== 'suspect_credential'),
    ).toEqual([]);
  });

  it('refuses a challenge of another purpose or user, and another user’s passkey id', async () => {
    const alice = await newAccount();
    const bob = await newAccount();
    expect((await register(alice)).statusCode).toBe(201);
    const bobsPasskey = (await register(bob)).json() as PasskeyBody;
    await signInWithPasskey(alice);

    // Alice's registration challenge, answered by Bob.
    const { challenge_id, options } = await registrationOptions(alice);
    const stolen = await call('POST', '/users/me/passkeys/registration/verify', bob.bearer, {
      challenge_id,
      response: bob.authenticator.register(options),
    });
    expect(stolen.statusCode).toBe(400);

    // A registration challenge is no login challenge.
    const other = await registrationOptions(alice);
    const assertion = alice.authenticator.assert({ challenge: other.options.challenge, rpId: 'localhost' });
    expect((await grant(other.challenge_id, assertion)).statusCode).toBe(400);

    expect(
      (await call('PATCH', `/users/me/passkeys/${bobsPasskey.id}`, alice.bearer, { name: 'mine' }))
        .statusCode,
    ).toBe(404);
    expect(
      (
        await call('DELETE', `/users/me/passkeys/${bobsPasskey.id}`, alice.bearer, {
          password: STRONG_PASSWORD,
        })
      ).statusCode,
    ).toBe(404);
  });

  it('refuses a passwordless assertion whose user handle is not the owner’s', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    const { challenge_id, options } = await passwordlessOptions();
    const assertion = account.authenticator.assert(options);
    assertion.response.userHandle = Buffer.alloc(64, 1).toString('base64url');
    expect((await grant(challenge_id, assertion)).statusCode).toBe(400);
    expect(await refusals(account.user.id)).toEqual(['user_handle_mismatch']);
  });

  it('refuses malformed grants with 400', async () => {
    const { challenge_id } = await passwordlessOptions();
    for (const webauthnResponse of ['not json', '[]', { id: 1 }, { id: 'a', rawId: 'a', response: null }]) {
      const response = await grant(challenge_id, webauthnResponse);
      expect(response.statusCode, JSON.stringify(webauthnResponse)).toBe(400);
      expect(response.json()).toMatchObject({ error: 'invalid_grant' });
    }
    const missing = await call('POST', '/token', undefined, { grant_type: WEBAUTHN_GRANT, challenge_id });
    expect(missing.statusCode).toBe(400);
    expect(missing.json()).toMatchObject({ error: 'invalid_request' });
  });

  it('refuses the 11th passkey with 409 passkey_limit', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    await signInWithPasskey(account);
    for (let n = 1; n < 10; n += 1) expect((await register(account)).statusCode).toBe(201);
    const options = await call('POST', '/users/me/passkeys/registration/options', account.bearer, {
      password: STRONG_PASSWORD,
    });
    expect(options.statusCode).toBe(409);
    expect(options.json()).toMatchObject({ code: 'passkey_limit' });
  });

  it('refuses an 11th passkey whose options were taken before the 10th was stored', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    await signInWithPasskey(account);
    for (let n = 1; n < 9; n += 1) expect((await register(account)).statusCode).toBe(201);
    const first = await registrationOptions(account);
    const second = await registrationOptions(account);
    const results = await Promise.all(
      [first, second].map(({ challenge_id, options }) =>
        call('POST', '/users/me/passkeys/registration/verify', account.bearer, {
          challenge_id,
          response: account.authenticator.register(options),
        }),
      ),
    );
    expect(results.map((response) => response.statusCode).sort()).toEqual([201, 409]);
  });

  it('validates names: trimmed 1..64 characters, no control characters, lone surrogates or bidi overrides', async () => {
    const account = await newAccount();
    const passkey = (await register(account)).json() as PasskeyBody;
    expect(passkey.name).toBe('Passkey 1');
    for (const name of [
      '',
      '   ',
      'x'.repeat(65),
      '\u0000a',
      'a\u0007b',
      '\u202e evil',
      'x\ud800',
      'line\nbreak',
      // found from outside: names drawn as nothing, and a line separator that breaks the mfa_changed notice's line
      '\u2060',
      '\u200b',
      '\u3164',
      '\u0301',
      '\ufe0f',
      '\u{e0041}\u{e0042}',
      ' \u200b \u2060 ',
      'a\u2028SECURITY NOTICE',
      'a\u2029b',
      '\u2800',
      '\ufff9',
      '\u{1d159}',
      '\u{f0000}',
    ]) {
      expect(
        (await call('PATCH', `/users/me/passkeys/${passkey.id}`, account.bearer, { name })).statusCode,
        JSON.stringify(name),
      ).toBe(422);
    }
    const kept = await call('PATCH', `/users/me/passkeys/${passkey.id}`, account.bearer, {
      name: 'Laptop 👩‍💻 ünï',
    });
    expect(kept.statusCode).toBe(200);
    // a joiner or a variation selector within a visible name stays allowed
    expect(
      (await call('PATCH', `/users/me/passkeys/${passkey.id}`, account.bearer, { name: '❤️ key' })).statusCode,
    ).toBe(200);
    expect(kept.json()).toMatchObject({ name: 'Laptop 👩‍💻 ünï' });
  });

  it('forgets the second-factor lock (R13) of a user who signs in with a passkey', async () => {
    const account = await newAccount();
    expect((await register(account)).statusCode).toBe(201);
    const counters = createCounterStore();
    const throttle = createThrottle(counters, loadConfig({}).throttling, throttleKeysOf([TEST_SECRET]));
    for (let i = 0; i < 10; i += 1) await throttle.reserveSecondFactorAttempt(account.user.id, 'capped');
    expect(await throttle.reserveSecondFactorAttempt(account.user.id, 'uncapped')).toBe('locked');
    const passkeys = passkeysServiceOver(t, throttle);
    const { challenge_id, options } = await passwordlessOptions();
    const context = { userAgent: undefined, ipAddress: undefined, audit: () => {} };
    const login = await passkeys.passwordlessLogin(
      challenge_id,
      account.authenticator.assert(options),
      context,
    );
    expect(login?.user.id).toBe(account.user.id);
    expect(await throttle.reserveSecondFactorAttempt(account.user.id, 'capped')).toBe('admitted');
    await counters.close();
  });

  it('gives MFA options listing the passkeys only for a live mfa_token', async () => {
    const bad = await call('POST', '/mfa/webauthn/options', undefined, { mfa_token: 'x'.repeat(43) });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ error: 'invalid_grant' });
  });
});

describe.each(dialects)('passkeys as a second factor on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const context = { userAgent: undefined, ipAddress: undefined, audit: () => {} };
  // The MFA grant (branch totp) calls this port; here it is driven directly, over the app's database.
  const service = () => passkeysServiceOver(t);

  let counter = 0;
  const userWithPasskey = async () => {
    counter += 1;
    const username = `second${counter}`;
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
    });
    const headers = { authorization: `Bearer ${(login.json() as { access_token: string }).access_token}` };
    const authenticator = createSoftAuthenticator({ origin: ORIGIN });
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
    return { user, authenticator };
  };

  const accountWithPasskey = async () => {
    const { user, authenticator } = await userWithPasskey();
    const { token, tokenHash } = generateOneTimeToken();
    await createMfaRepository(t.database.db).insertMfaChallenge(
      {
        tokenHash,
        userId: user.id,
        scope: 'conversation:read conversation:write',
        passwordDigest: 'digest',
        expiresAt: new Date(t.clock.now().getTime() + 300_000),
      },
      t.clock.now(),
    );
    return { user, authenticator, mfaToken: token, tokenHash };
  };
  type Holder = Awaited<ReturnType<typeof accountWithPasskey>>;

  const mfaOptions = async (holder: Holder) => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/mfa/webauthn/options',
      payload: { mfa_token: holder.mfaToken },
    });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.headers['cache-control']).toBe('no-store');
    return response.json() as { challenge_id: string; options: PublicKeyCredentialRequestOptionsJSON };
  };

  // Found in review: of parallel grants of one mfa_token with a passkey as the second step, each loser recorded
  // passkey_login too, audited before the mfa_token was won.
  it('records one second_factor_used and one passkey_login for the one of parallel grants that logged in', async () => {
    const { user, authenticator } = await userWithPasskey();
    const second = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: user.username, password: STRONG_PASSWORD },
    });
    expect(second.statusCode, second.body).toBe(403);
    const mfaToken = second.json().mfa_token as string;
    const holder = { mfaToken } as Holder;
    const options = await Promise.all([0, 1, 2].map(() => mfaOptions(holder)));
    const grants = await Promise.all(
      options.map(({ challenge_id, options: request }) =>
        t.app.inject({
          method: 'POST',
          url: '/token',
          payload: {
            grant_type: 'urn:gatehouse:params:oauth:grant-type:mfa',
            mfa_token: mfaToken,
            challenge_id,
            webauthn_response: JSON.stringify(authenticator.assert(request)),
          },
        }),
      ),
    );
    expect(grants.map((grant) => grant.statusCode).sort()).toEqual([200, 400, 400]);
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

  it('lists the passkeys for a live mfa_token without spending one of its attempts', async () => {
    const holder = await accountWithPasskey();
    const { options } = await mfaOptions(holder);
    expect(options.allowCredentials?.map((entry) => entry.id)).toEqual([
      holder.authenticator.credentials[0]?.id.toString('base64url'),
    ]);
    expect(options.userVerification).toBe('required');
    for (let n = 0; n < 6; n += 1) await mfaOptions(holder);
    const row = await t.database.db
      .selectFrom('mfa_challenges')
      .select('attempts')
      .where('token_hash', '=', holder.tokenHash)
      .executeTakeFirstOrThrow();
    expect(Number(row.attempts)).toBe(0);
  });

  it('accepts an assertion of the user once, with hwk, and refuses replays, other users and UV off', async () => {
    const holder = await accountWithPasskey();
    const other = await accountWithPasskey();
    const passkeys = service();
    const first = await mfaOptions(holder);
    const assertion = holder.authenticator.assert(first.options);
    expect(
      await passkeys.verifySecondFactor(
        other.user.id,
        first.challenge_id,
        assertion,
        context,
        'second_factor',
      ),
    ).toBe(undefined);
    const second = await mfaOptions(holder);
    const good = holder.authenticator.assert(second.options);
    const results = await Promise.all([
      passkeys.verifySecondFactor(holder.user.id, second.challenge_id, good, context, 'second_factor'),
      passkeys.verifySecondFactor(holder.user.id, second.challenge_id, good, context, 'second_factor'),
    ]);
    expect(results.filter((result) => result?.amr === 'hwk')).toHaveLength(1);
    expect(
      await passkeys.verifySecondFactor(holder.user.id, second.challenge_id, good, context, 'second_factor'),
    ).toBe(undefined);
    const third = await mfaOptions(holder);
    const unverified = holder.authenticator.assert(third.options, { userVerified: false });
    expect(
      await passkeys.verifySecondFactor(
        holder.user.id,
        third.challenge_id,
        unverified,
        context,
        'second_factor',
      ),
    ).toBe(undefined);
    // Another user's passkey, on a challenge of this user.
    const fourth = await mfaOptions(holder);
    const foreign = other.authenticator.assert({ challenge: fourth.options.challenge, rpId: 'localhost' });
    expect(
      await passkeys.verifySecondFactor(
        holder.user.id,
        fourth.challenge_id,
        foreign,
        context,
        'second_factor',
      ),
    ).toBe(undefined);
  });
});

describe.each(dialects)('passkey throttling on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: { RATE_LIMITS: 'on', PASSKEY_OPTIONS_PER_IP: '2/60s', TOKEN_PASSWORD_PER_IP: '2/60s' },
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('hands a passkey sign-in the device token, as the password and MFA grants, and takes it back', async () => {
    const username = 'devicekey';
    await registerUser(t.app, { username, email: `${username}@example.com` });
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: '203.0.113.20',
      payload: { username, password: STRONG_PASSWORD },
    });
    const bearer = (login.json() as { access_token: string }).access_token;
    const authenticator = createSoftAuthenticator({ origin: ORIGIN });
    const creation = await t.app.inject({
      method: 'POST',
      url: '/users/me/passkeys/registration/options',
      headers: { authorization: `Bearer ${bearer}` },
      payload: { password: STRONG_PASSWORD },
    });
    const { challenge_id: registrationId, options: creationOptions } = creation.json() as {
      challenge_id: string;
      options: PublicKeyCredentialCreationOptionsJSON;
    };
    const registered = await t.app.inject({
      method: 'POST',
      url: '/users/me/passkeys/registration/verify',
      headers: { authorization: `Bearer ${bearer}` },
      payload: { challenge_id: registrationId, response: authenticator.register(creationOptions) },
    });
    expect(registered.statusCode, registered.body).toBe(201);
    const signIn = async (deviceToken?: string) => {
      const options = await t.app.inject({
        method: 'POST',
        url: '/passkeys/authentication/options',
        remoteAddress: '203.0.113.21',
      });
      const { challenge_id, options: request } = options.json() as {
        challenge_id: string;
        options: PublicKeyCredentialRequestOptionsJSON;
      };
      return t.app.inject({
        method: 'POST',
        url: '/token',
        remoteAddress: '203.0.113.21',
        payload: {
          grant_type: WEBAUTHN_GRANT,
          challenge_id,
          webauthn_response: authenticator.assert(request),
          ...(deviceToken ? { device_token: deviceToken } : {}),
        },
      });
    };
    const first = await signIn();
    expect(first.statusCode, first.body).toBe(200);
    const deviceToken = (first.json() as { device_token?: string }).device_token;
    expect(typeof deviceToken).toBe('string');
    const second = await signIn(deviceToken);
    expect(second.statusCode, second.body).toBe(200);
    expect(typeof (second.json() as { device_token?: string }).device_token).toBe('string');
  });

  it('caps the public options per address (R14) and the passwordless grant as the password grant (R5)', async () => {
    const options = () =>
      t.app.inject({ method: 'POST', url: '/passkeys/authentication/options', remoteAddress: '203.0.113.9' });
    const first = await options();
    expect(first.statusCode).toBe(200);
    expect((await options()).statusCode).toBe(200);
    const refused = await options();
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['retry-after']).toBeDefined();
    expect((await options()).statusCode).toBe(429);
    // Another address is not affected.
    expect(
      (
        await t.app.inject({
          method: 'POST',
          url: '/passkeys/authentication/options',
          remoteAddress: '203.0.113.10',
        })
      ).statusCode,
    ).toBe(200);

    const { challenge_id } = first.json() as { challenge_id: string };
    const grant = () =>
      t.app.inject({
        method: 'POST',
        url: '/token',
        remoteAddress: '203.0.113.11',
        payload: { grant_type: WEBAUTHN_GRANT, challenge_id, webauthn_response: '{}' },
      });
    expect((await grant()).statusCode).toBe(400);
    expect((await grant()).statusCode).toBe(400);
    const throttled = await grant();
    expect(throttled.statusCode).toBe(429);
    expect(throttled.json()).toMatchObject({ error: 'temporarily_unavailable' });
  });

  it('caps the second-factor options per address too (R14): each answer stores a challenge', async () => {
    const mfaOptions = () =>
      t.app.inject({
        method: 'POST',
        url: '/mfa/webauthn/options',
        remoteAddress: '203.0.113.30',
        payload: { mfa_token: 'x'.repeat(43) },
      });
    expect((await mfaOptions()).statusCode).toBe(400);
    expect((await mfaOptions()).statusCode).toBe(400);
    const refused = await mfaOptions();
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ error: 'temporarily_unavailable' });
  });
});
