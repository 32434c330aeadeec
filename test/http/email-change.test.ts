import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearerRequest,
  buildTestApp,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { mailedToken, outboxMails } from '../support/outbox.ts';

describe.each(dialects)('email change on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  let counter = 0;
  const freshUser = () => {
    counter += 1;
    const username = `mover${counter}`;
    return registerUser(t.app, { username, email: `${username}@old.example.com` });
  };
  const login = async (username: string) => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
    });
    expect(response.statusCode).toBe(200);
    return (response.json() as { access_token: string }).access_token;
  };
  const call = (method: 'GET' | 'PATCH' | 'POST', url: string, accessToken: string, payload?: object) =>
    bearerRequest(t.app, method, url, accessToken, payload);
  const verify = (token: string) =>
    t.app.inject({ method: 'POST', url: '/email/verify', payload: { token } });
  const changeEmail = (accessToken: string, email: string) =>
    call('PATCH', '/users/me', accessToken, { email, current_password: STRONG_PASSWORD });
  const unspentTokens = async (userId: number) =>
    (
      await t.database.db
        .selectFrom('one_time_tokens')
        .select(['purpose', 'email'])
        .where('user_id', '=', userId)
        .where('consumed_at_ms', 'is', null)
        .execute()
    ).map((row) => `${row.purpose}:${row.email}`);
  const events = async (userId: number) => {
    await t.app.auditTrail.flush();
    return (
      await t.database.db
        .selectFrom('audit_events')
        .select('event')
        .where('user_id', '=', userId)
        .orderBy('id')
        .execute()
    ).map((row) => row.event);
  };

  it('takes the same change at POST /users/me/email {new_email, password}, the dedicated route', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const missing = await call('POST', '/users/me/email', accessToken, { new_email: 'x@new.example.com' });
    expect(missing.statusCode).toBe(422);
    const wrong = await call('POST', '/users/me/email', accessToken, {
      new_email: 'x@new.example.com',
      password: 'not the password at all',
    });
    expect(wrong.statusCode).toBe(400);
    // the code as the other routes that check a password give it (found from outside: the route's schema dropped it)
    expect(wrong.json()).toEqual({ detail: 'Incorrect password', code: 'invalid_password' });
    // a 400 without a code (a token in the header and the query) still fits the route's 400 schema: no 500 (review)
    const twice = await t.app.inject({
      method: 'POST',
      url: '/users/me/email?access_token=x',
      headers: { authorization: `Bearer ${accessToken}` },
      payload: { new_email: 'x@new.example.com', password: STRONG_PASSWORD },
    });
    expect(twice.statusCode, twice.body).toBe(400);
    expect(twice.json()).toEqual({ detail: 'Malformed Authorization header' });
    const response = await call('POST', '/users/me/email', accessToken, {
      new_email: `${user.username}@route.example.com`,
      password: STRONG_PASSWORD,
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      email: user.email,
      pending_email: `${user.username}@route.example.com`,
      email_verified: false,
    });
    await t.app.backgroundWork.settled();
    const mails = await outboxMails(t.database);
    expect(mails.map((mail) => `${mail.template}:${mail.recipient}`)).toEqual(
      expect.arrayContaining([
        `verify_email:${user.username}@route.example.com`,
        `email_change_requested:${user.email}`,
      ]),
    );
  });

  it('keeps the email and sets pending_email, mails a link to the new address and a notice to the old one', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const response = await call('PATCH', '/users/me', accessToken, {
      email: 'Mover@New.example.com',
      current_password: STRONG_PASSWORD,
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({
      ...user,
      email_verified: false,
      pending_email: 'Mover@New.example.com',
    });
    expect((await call('GET', '/users/me', accessToken)).json().pending_email).toBe('Mover@New.example.com');
    const toNew = await outboxMails(t.database, 'Mover@New.example.com');
    expect(toNew.map((mail) => mail.template)).toEqual(['verify_email']);
    const toOld = await outboxMails(t.database, user.email);
    expect(toOld.map((mail) => [mail.template, mail.values])).toEqual([
      ['email_change_requested', { username: user.username, newEmail: 'Mover@New.example.com' }],
    ]);
    expect(await events(user.id)).toContain('email_change_requested');
    expect(await events(user.id)).not.toContain('email_changed');
  });

  it('makes the pending address the email once its link is used, and tells the old address', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    await changeEmail(accessToken, `${user.username}@new.example.com`);
    const token = await mailedToken(t.database, `${user.username}@new.example.com`, 'verify_email');
    const verified = await verify(token);
    expect(verified.statusCode).toBe(200);
    expect(verified.json()).toEqual({ email: `${user.username}@new.example.com`, email_verified: true });
    // Every session ends, the one that asked for the change too.
    expect((await call('GET', '/users/me', accessToken)).statusCode).toBe(401);
    const me = (await call('GET', '/users/me', await login(user.username))).json();
    expect(me).toMatchObject({
      email: `${user.username}@new.example.com`,
      email_verified: true,
      pending_email: null,
    });
    const toOld = await outboxMails(t.database, user.email);
    expect(toOld.map((mail) => [mail.template, mail.values.newEmail])).toEqual([
      ['email_change_requested', `${user.username}@new.example.com`],
      ['email_changed', `${user.username}@new.example.com`],
    ]);
    expect(await events(user.id)).toEqual(expect.arrayContaining(['email_changed', 'email_verified']));
  });

  it('keeps a link for the current address working while a change is pending, and kills it once the change is made', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    expect((await call('POST', '/users/me/email/verification', accessToken)).statusCode).toBe(202);
    const oldLink = await mailedToken(t.database, user.email, 'verify_email');
    const address = `${user.username}@elsewhere.example.com`;
    expect((await changeEmail(accessToken, address)).statusCode).toBe(200);
    const newLink = await mailedToken(t.database, address, 'verify_email');
    expect(await unspentTokens(user.id)).toEqual(
      expect.arrayContaining([`verify_email:${user.email}`, `verify_email:${address}`]),
    );
    expect((await verify(newLink)).statusCode).toBe(200);
    // The account left the old address: its link proves nothing any more.
    expect((await verify(oldLink)).statusCode).toBe(400);
    expect((await call('GET', '/users/me', await login(user.username))).json()).toMatchObject({
      email: address,
      email_verified: true,
    });
  });

  it('does not void the email-change link when a link for the current address is asked for, nor the reverse', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const address = `${user.username}@both.example.com`;
    expect((await changeEmail(accessToken, address)).statusCode).toBe(200);
    const changeLink = await mailedToken(t.database, address, 'verify_email');
    expect((await call('POST', '/users/me/email/verification', accessToken)).statusCode).toBe(202);
    const currentLink = await mailedToken(t.database, user.email, 'verify_email');
    // A second link for the same address does void the first.
    expect((await call('POST', '/users/me/email/verification', accessToken)).statusCode).toBe(202);
    const newerCurrentLink = await mailedToken(t.database, user.email, 'verify_email');
    expect((await verify(currentLink)).statusCode).toBe(400);
    expect((await verify(newerCurrentLink)).statusCode).toBe(200);
    expect((await verify(changeLink)).statusCode).toBe(200);
    expect((await call('GET', '/users/me', await login(user.username))).json()).toMatchObject({
      email: address,
      pending_email: null,
    });
  });

  it('cancels a pending change when the current address is sent again: the abandoned address link is refused', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const address = `${user.username}@changed-mind.example.com`;
    expect((await changeEmail(accessToken, address)).statusCode).toBe(200);
    const link = await mailedToken(t.database, address, 'verify_email');
    const back = await call('PATCH', '/users/me', accessToken, { email: user.email.toUpperCase(), age: 31 });
    expect(back.statusCode).toBe(200);
    expect(back.json()).toMatchObject({ email: user.email.toUpperCase(), pending_email: null, age: 31 });
    expect(await unspentTokens(user.id)).not.toContain(`verify_email:${address}`);
    expect(await events(user.id)).toEqual(
      expect.arrayContaining(['email_change_requested', 'email_change_cancelled']),
    );
    expect((await verify(link)).statusCode).toBe(400);
    expect((await call('GET', '/users/me', accessToken)).json()).toMatchObject({
      email: user.email.toUpperCase(),
      pending_email: null,
    });
  });

  it('answers 409 email_taken for an address another account has, and changes nothing', async () => {
    const user = await freshUser();
    const other = await freshUser();
    const accessToken = await login(user.username);
    const taken = await call('PATCH', '/users/me', accessToken, {
      email: other.email.toUpperCase(),
      current_password: STRONG_PASSWORD,
      age: 55,
    });
    expect(taken.statusCode).toBe(409);
    expect(taken.json()).toEqual({ detail: 'Email already registered', code: 'email_taken' });
    expect((await call('GET', '/users/me', accessToken)).json()).toMatchObject({
      age: 30,
      pending_email: null,
    });
    expect(await outboxMails(t.database, other.email.toUpperCase())).toEqual([]);
  });

  it('answers 409 email_taken at verification when another account took the pending address meanwhile', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const address = `${user.username}@contested.example.com`;
    await changeEmail(accessToken, address);
    const token = await mailedToken(t.database, address, 'verify_email');
    await registerUser(t.app, { username: `${user.username}-rival`, email: address });
    const refused = await verify(token);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().code).toBe('email_taken');
    expect((await call('GET', '/users/me', accessToken)).json()).toMatchObject({
      email: user.email,
      pending_email: address,
    });
  });

  it('changes only the letter case of the same address at once, mailing nothing', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const response = await call('PATCH', '/users/me', accessToken, { email: user.email.toUpperCase() });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ email: user.email.toUpperCase(), pending_email: null });
    expect(await outboxMails(t.database, user.email.toUpperCase())).toEqual([]);
    expect(await outboxMails(t.database, user.email)).toEqual([]);
    // Found from outside: the address changed and the activity said nothing of it.
    expect(await events(user.id)).toContain('email_changed');
    const again = await call('PATCH', '/users/me', accessToken, { email: user.email.toUpperCase() });
    expect(again.statusCode).toBe(200);
    expect((await events(user.id)).filter((event) => event === 'email_changed')).toHaveLength(1);
  });

  it('still refuses a wrong current_password, changing nothing and mailing nothing', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const refused = await call('PATCH', '/users/me', accessToken, {
      email: `${user.username}@wrong.example.com`,
      current_password: 'not the password at all',
    });
    expect(refused.statusCode).toBe(400);
    expect(refused.json().code).toBe('invalid_password');
    expect(await outboxMails(t.database, `${user.username}@wrong.example.com`)).toEqual([]);
  });

  it('answers no 5xx when a verification and a new request for the same address race (lock order)', async () => {
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const user = await freshUser();
        const accessToken = await login(user.username);
        const address = `${user.username}@race.example.com`;
        for (let round = 0; round < 3; round += 1) {
          expect((await changeEmail(accessToken, address)).statusCode).toBe(200);
          const link = await mailedToken(t.database, address, 'verify_email');
          const [verified, changed] = await Promise.all([verify(link), changeEmail(accessToken, address)]);
          statuses.push(verified.statusCode, changed.statusCode);
          if (verified.statusCode === 200) break;
        }
      }),
    );
    expect(statuses.filter((status) => status >= 500)).toEqual([]);
  });

  it('refuses a change to a new address without current_password with 422, changing and mailing nothing', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const refused = await call('PATCH', '/users/me', accessToken, {
      email: `${user.username}@nopassword.example.com`,
      age: 44,
    });
    expect(refused.statusCode).toBe(422);
    expect(refused.json().detail).toEqual([
      expect.objectContaining({
        loc: ['body', 'current_password'],
        msg: 'current_password is required to change the email to a new address',
      }),
    ]);
    expect((await call('GET', '/users/me', accessToken)).json()).toMatchObject({
      age: 30,
      pending_email: null,
    });
    expect(await outboxMails(t.database, `${user.username}@nopassword.example.com`)).toEqual([]);
    // Age and level need no password.
    expect((await call('PATCH', '/users/me', accessToken, { age: 44 })).statusCode).toBe(200);
  });

  it('cancels a pending change when the owner resets the password: the link mailed to the new address is refused', async () => {
    const user = await freshUser();
    const stolen = await login(user.username);
    const attackerAddress = `attacker-of-${user.username}@evil.example.com`;
    expect((await changeEmail(stolen, attackerAddress)).statusCode).toBe(200);
    const attackerLink = await mailedToken(t.database, attackerAddress, 'verify_email');
    expect(
      (await t.app.inject({ method: 'POST', url: '/password/forgot', payload: { email: user.email } }))
        .statusCode,
    ).toBe(202);
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, user.email, 'password_reset');
    const reset = await t.app.inject({
      method: 'POST',
      url: '/password/reset',
      payload: { token: resetToken, new_password: 'the owner takes it back now' },
    });
    expect(reset.statusCode).toBe(204);
    expect(await unspentTokens(user.id)).toEqual([]);
    expect((await verify(attackerLink)).statusCode).toBe(400);
    const row = await t.database.db
      .selectFrom('users')
      .select(['email', 'pending_email'])
      .where('id', '=', user.id)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ email: user.email, pending_email: null });
  });

  // Found from outside: a reset mailed this notice and a password change mailed nothing (AUTH-FLOWS §5, ASVS 6.3.7).
  it('mails a password_changed notice to the account address when the password is changed, and none when refused', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const before = (await outboxMails(t.database, user.email)).length;
    const mailedSince = async () =>
      (await outboxMails(t.database, user.email)).slice(before).map((m) => [m.template, m.values.username]);
    const refused = await call('POST', '/users/me/password', accessToken, {
      current_password: 'not the password at all',
      new_password: 'another fine passphrase',
    });
    expect(refused.statusCode).toBe(400);
    expect(await mailedSince()).toEqual([]);
    const changed = await call('POST', '/users/me/password', accessToken, {
      current_password: STRONG_PASSWORD,
      new_password: 'another fine passphrase',
    });
    expect(changed.statusCode).toBe(204);
    expect(await mailedSince()).toEqual([['password_changed', user.username]]);
  });

  it('cancels a pending change when the password is changed: the link mailed to the new address is refused', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const address = `${user.username}@abandoned.example.com`;
    expect((await changeEmail(accessToken, address)).statusCode).toBe(200);
    const link = await mailedToken(t.database, address, 'verify_email');
    const changed = await call('POST', '/users/me/password', accessToken, {
      current_password: STRONG_PASSWORD,
      new_password: 'another fine passphrase',
    });
    expect(changed.statusCode).toBe(204);
    expect(await unspentTokens(user.id)).toEqual([]);
    expect((await call('GET', '/users/me', accessToken)).json()).toMatchObject({
      email: user.email,
      pending_email: null,
    });
    expect((await verify(link)).statusCode).toBe(400);
  });
});

describe.each(dialects)('email change limits on %s (RATE_LIMITS=on)', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: {
        RATE_LIMITS: 'on',
        REGISTER_PER_IP: '1000/10s',
        MAIL_REQUEST_PER_IP: '3/3600s',
        REGISTER_CONFLICTS_PER_IDENTIFIER: '2/3600s',
      },
    });
  });
  afterAll(async () => {
    await t.close();
  });
  const login = async (username: string, ip: string) => {
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username, password: STRONG_PASSWORD },
      remoteAddress: ip,
    });
    expect(response.statusCode).toBe(200);
    return (response.json() as { access_token: string }).access_token;
  };
  const changeEmail = (accessToken: string, email: string, ip: string) =>
    t.app.inject({
      method: 'PATCH',
      url: '/users/me',
      headers: { authorization: `Bearer ${accessToken}` },
      payload: { email, current_password: STRONG_PASSWORD },
      remoteAddress: ip,
    });

  it('allows 5 email changes per user an hour, from any address, then 429 with Retry-After', async () => {
    const user = await registerUser(t.app, { username: 'restless', email: 'restless@example.com' });
    const accessToken = await login(user.username, '198.51.100.50');
    for (let i = 0; i < 5; i += 1) {
      const changed = await changeEmail(accessToken, `restless${i}@example.com`, `198.51.100.${60 + i}`);
      expect(changed.statusCode).toBe(200);
    }
    const refused = await changeEmail(accessToken, 'restless-last@example.com', '198.51.100.70');
    expect(refused.statusCode).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(3000);
    expect(refused.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    expect(await outboxMails(t.database, 'restless-last@example.com')).toEqual([]);
    const me = await t.app.inject({
      method: 'GET',
      url: '/users/me',
      headers: { authorization: `Bearer ${accessToken}` },
    });
    expect(me.json().pending_email).toBe('restless4@example.com');
  });

  // ASVS 6.3.8: a 409 tells that an address has an account, so asking costs what a change costs: R12 per user here
  // (and R10 per client address, R9 per address asked for), whether the address is taken or free.
  it('counts an email change refused 409 for a taken address like one that goes through', async () => {
    const user = await registerUser(t.app, { username: 'prober', email: 'prober@example.com' });
    const taken = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((i) =>
        registerUser(t.app, { username: `probed${i}`, email: `probed${i}@example.com` }),
      ),
    );
    const accessToken = await login(user.username, '198.51.100.80');
    for (let i = 0; i < 5; i += 1) {
      const answer = await changeEmail(accessToken, taken[i]?.email ?? '', `198.51.100.${81 + i}`);
      expect(answer.statusCode).toBe(409);
    }
    for (const email of [taken[5]?.email ?? '', 'prober-free@example.com']) {
      const refused = await changeEmail(accessToken, email, '198.51.100.90');
      expect(refused.statusCode).toBe(429);
      expect(refused.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    }
  });

  // R9 counts the mails asked for one address: a taken address gets none, so asking for it twice in a minute (as a
  // client that retries, or a test of case-insensitivity) is 409 both times, not 429.
  it('answers 409 again to a second change to the same taken address within the minute', async () => {
    const user = await registerUser(t.app, { username: 'retrier', email: 'retrier@example.com' });
    await registerUser(t.app, { username: 'holder', email: 'holder@example.com' });
    const accessToken = await login(user.username, '198.51.100.95');
    for (const email of ['holder@example.com', 'HOLDER@example.com']) {
      expect((await changeEmail(accessToken, email, '198.51.100.95')).statusCode, email).toBe(409);
    }
  });

  it('caps the changes that met one taken address, from any user and address (R15, as sign-ups)', async () => {
    const taken = await registerUser(t.app, { username: 'wanted', email: 'wanted@example.com' });
    const askers = await Promise.all(
      [1, 2, 3].map((n) => registerUser(t.app, { username: `asker${n}`, email: `asker${n}@example.com` })),
    );
    const answers = [];
    for (const [i, asker] of askers.entries()) {
      const accessToken = await login(asker.username, `198.51.100.${110 + i}`);
      answers.push((await changeEmail(accessToken, taken.email, `198.51.100.${110 + i}`)).statusCode);
    }
    expect(answers).toEqual([409, 409, 429]);
  });

  it('counts email changes among the mail requests of a client address (R10)', async () => {
    const ip = '203.0.113.77';
    const first = await registerUser(t.app, { username: 'sprayer1', email: 'sprayer1@example.com' });
    const second = await registerUser(t.app, { username: 'sprayer2', email: 'sprayer2@example.com' });
    const firstToken = await login(first.username, ip);
    const secondToken = await login(second.username, ip);
    expect((await changeEmail(firstToken, 'sprayed1@example.com', ip)).statusCode).toBe(200);
    expect((await changeEmail(secondToken, 'sprayed2@example.com', ip)).statusCode).toBe(200);
    expect(
      (
        await t.app.inject({
          method: 'POST',
          url: '/password/forgot',
          payload: { email: 'x@example.com' },
          remoteAddress: ip,
        })
      ).statusCode,
    ).toBe(202);
    const refused = await changeEmail(secondToken, 'sprayed3@example.com', ip);
    expect(refused.statusCode).toBe(429);
    expect(await outboxMails(t.database, 'sprayed3@example.com')).toEqual([]);
  });
});
