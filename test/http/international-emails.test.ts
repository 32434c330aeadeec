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

const NEW_PASSWORD = 'a brand new passphrase here';
/** Another spelling of the same address: its ASCII letters in capitals (the others keep their case). */
const asciiUpper = (text: string) => text.replace(/[a-z]/g, (letter) => letter.toUpperCase());

// Every flow that finds, compares or mails an address, with an address on an internationalised domain and a local
// part outside ASCII: the seed stores any string as an email, so its clients may hold such accounts.
describe.each(dialects)('internationalised email addresses on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { PUBLIC_URL: 'https://auth.example.test/' } });
  });
  afterAll(async () => {
    await t.close();
  });

  let counter = 0;
  const freshUser = (domain = 'bücher.de') => {
    counter += 1;
    return registerUser(t.app, { username: `idn${counter}`, email: `josé${counter}@${domain}` });
  };
  const login = async (username: string, password = STRONG_PASSWORD) => {
    const response = await t.app.inject({ method: 'POST', url: '/token', payload: { username, password } });
    expect(response.statusCode, response.body).toBe(200);
    return (response.json() as { access_token: string }).access_token;
  };
  const call = (method: 'GET' | 'PATCH' | 'POST', url: string, accessToken: string, payload?: object) =>
    bearerRequest(t.app, method, url, accessToken, payload);
  const post = (url: string, payload: object) => t.app.inject({ method: 'POST', url, payload });
  const settled = () => t.app.backgroundWork.settled();

  it('resets the password of an account on an IDN domain, the link asked for in another spelling', async () => {
    const user = await freshUser();
    const spelling = asciiUpper(user.email).replace('BüCHER.DE', 'xn--bcher-kva.de');
    expect((await post('/password/forgot', { email: spelling })).statusCode).toBe(202);
    await settled();
    const link = await mailedToken(t.database, user.email, 'password_reset');
    const reset = await post('/password/reset', { token: link, new_password: NEW_PASSWORD });
    expect(reset.statusCode, reset.body).toBe(204);
    await login(user.username, NEW_PASSWORD);
  });

  it('verifies the address of an account on an IDN domain', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    expect((await call('POST', '/users/me/email/verification', accessToken)).statusCode).toBe(202);
    await settled();
    const link = await mailedToken(t.database, user.email, 'verify_email');
    const verified = await post('/email/verify', { token: link });
    expect(verified.statusCode, verified.body).toBe(200);
    expect(verified.json()).toEqual({ email: user.email, email_verified: true });
  });

  it('resends a verification link when asked for in the A-label spelling', async () => {
    const user = await freshUser();
    const spelling = user.email.replace('bücher.de', 'XN--BCHER-KVA.DE');
    expect((await post('/email/verification/resend', { email: spelling })).statusCode).toBe(202);
    await settled();
    const link = await mailedToken(t.database, user.email, 'verify_email');
    expect((await post('/email/verify', { token: link })).statusCode).toBe(200);
  });

  it('changes the email to an IDN address, its canonical form stored beside it: its other spellings are then taken', async () => {
    const user = await freshUser('example.com');
    const accessToken = await login(user.username);
    const address = `Ünïcode${counter}@München.de`;
    const change = await call('PATCH', '/users/me', accessToken, {
      email: address,
      current_password: STRONG_PASSWORD,
    });
    expect(change.statusCode, change.body).toBe(200);
    expect(change.json().pending_email).toBe(address);
    await settled();
    const link = await mailedToken(t.database, address, 'verify_email');
    const verified = await post('/email/verify', { token: link });
    expect(verified.statusCode, verified.body).toBe(200);
    expect(verified.json()).toEqual({ email: address, email_verified: true });
    const row = await t.database.db
      .selectFrom('users')
      .select(['email', 'email_canonical'])
      .where('id', '=', user.id)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ email: address, email_canonical: `Ünïcode${counter}@xn--mnchen-3ya.de` });
    const taken = await post('/register/', {
      username: `idn_taker${counter}`,
      email: `ÜNïCODE${counter}@xn--mnchen-3ya.de`,
      password: STRONG_PASSWORD,
      age: 30,
      level: 'beginner',
    });
    expect(taken.statusCode, taken.body).toBe(409);
    expect(taken.json().code).toBe('email_taken');
    // The reset flow finds the account by the new address in another spelling, and its link works.
    expect((await post('/password/forgot', { email: `ÜNïCODE${counter}@MÜNCHEN.DE` })).statusCode).toBe(202);
    await settled();
    const resetLink = await mailedToken(t.database, address, 'password_reset');
    expect((await post('/password/reset', { token: resetLink, new_password: NEW_PASSWORD })).statusCode).toBe(
      204,
    );
  });

  it('abandons a pending IDN change when the current address comes back in another spelling: its link is refused', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    // A link for the current address, asked for before the change: abandoning the change must leave it working.
    expect((await call('POST', '/users/me/email/verification', accessToken)).statusCode).toBe(202);
    await settled();
    const current = await mailedToken(t.database, user.email, 'verify_email');
    const address = `wechsel${counter}@bücher.de`;
    expect(
      (await call('PATCH', '/users/me', accessToken, { email: address, current_password: STRONG_PASSWORD }))
        .statusCode,
    ).toBe(200);
    await settled();
    const link = await mailedToken(t.database, address, 'verify_email');
    const back = await call('PATCH', '/users/me', accessToken, {
      email: asciiUpper(user.email).replace('BüCHER.DE', 'xn--bcher-kva.de'),
    });
    expect(back.statusCode, back.body).toBe(200);
    expect(back.json().pending_email).toBeNull();
    expect((await post('/email/verify', { token: link })).statusCode).toBe(400);
    expect((await post('/email/verify', { token: current })).statusCode).toBe(200);
  });

  it('keeps a reset link for the current address working while a change to an IDN address is pending', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    expect((await post('/password/forgot', { email: user.email })).statusCode).toBe(202);
    await settled();
    const resetLink = await mailedToken(t.database, user.email, 'password_reset');
    const address = `neu${counter}@例え.テスト`;
    expect(
      (await call('PATCH', '/users/me', accessToken, { email: address, current_password: STRONG_PASSWORD }))
        .statusCode,
    ).toBe(200);
    expect((await post('/password/reset', { token: resetLink, new_password: NEW_PASSWORD })).statusCode).toBe(
      204,
    );
  });

  it('takes another case of a letter beyond ASCII for another address: a token alone cannot make that change', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const other = user.email.replace('é', 'É');
    const tokenOnly = await call('PATCH', '/users/me', accessToken, { email: other });
    expect(tokenOnly.statusCode, tokenOnly.body).toBe(422);
    const withPassword = await call('PATCH', '/users/me', accessToken, {
      email: other,
      current_password: STRONG_PASSWORD,
    });
    expect(withPassword.json()).toMatchObject({ email: user.email, pending_email: other });
    const letterCase = await call('PATCH', '/users/me', accessToken, { email: user.email.replace('j', 'J') });
    expect(letterCase.json()).toMatchObject({ email: user.email.replace('j', 'J'), pending_email: null });
  });

  it('lets the owner of a Georgian address register it when its capital spelling holds an account already', async () => {
    counter += 1;
    const payload = (username: string, email: string) => ({
      username,
      email,
      password: STRONG_PASSWORD,
      age: 30,
      level: 'beginner',
    });
    expect(
      (await post('/register/', payload(`mtavruli${counter}`, `ᲒᲘᲝᲠᲒᲘ${counter}@example.com`))).statusCode,
    ).toBe(200);
    const owner = await post('/register/', payload(`mkhedruli${counter}`, `გიორგი${counter}@example.com`));
    expect(owner.statusCode, owner.body).toBe(200);
    expect((await post('/password/forgot', { email: `გიორგი${counter}@example.com` })).statusCode).toBe(202);
    await settled();
    const mails = await outboxMails(t.database, `გიორგი${counter}@example.com`);
    expect(mails.map((mail) => mail.template)).toEqual(['password_reset']);
  });

  it('stores an address composed: a Kelvin sign, from a token alone, becomes the K it is', async () => {
    counter += 1;
    const user = await registerUser(t.app, {
      username: `kelvin${counter}`,
      email: `\u212aate${counter}@example.com`,
    });
    expect(user.email).toBe(`Kate${counter}@example.com`);
    const accessToken = await login(user.username);
    const response = await call('PATCH', '/users/me', accessToken, { email: `kate${counter}@example.com` });
    expect(response.json().email).toBe(`kate${counter}@example.com`);
    const back = await call('PATCH', '/users/me', accessToken, { email: `\u212aATE${counter}@example.com` });
    expect(back.json().email).toBe(`KATE${counter}@example.com`);
  });

  it('refuses compatibility characters before the @ (full-width, circled, mathematical letters): 422', async () => {
    for (const email of [
      'ｖictim@mail.example',
      'ⓑob@mail.example',
      '\u{1d41c}arl@mail.example',
      'ﬁsh@mail.example',
    ]) {
      const response = await post('/register/', {
        username: `compat${email.length}${counter}`,
        email,
        password: STRONG_PASSWORD,
        age: 30,
        level: 'beginner',
      });
      expect(response.statusCode, email).toBe(422);
    }
  });

  it('takes a new spelling of the domain at once: it names the same domain', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    const spelling = user.email.replace('bücher.de', 'XN--BCHER-KVA.de');
    const response = await call('PATCH', '/users/me', accessToken, { email: spelling });
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json().email).toBe(spelling);
  });

  it('spends a reset link once the email changes, so that it stays dead should the account come back to that address', async () => {
    const user = await freshUser();
    const accessToken = await login(user.username);
    expect((await post('/password/forgot', { email: user.email })).statusCode).toBe(202);
    await settled();
    const resetLink = await mailedToken(t.database, user.email, 'password_reset');
    const moveTo = async (address: string, bearer: string) => {
      const change = await call('PATCH', '/users/me', bearer, {
        email: address,
        current_password: STRONG_PASSWORD,
      });
      expect(change.statusCode, change.body).toBe(200);
      await settled();
      const link = await mailedToken(t.database, address, 'verify_email');
      expect((await post('/email/verify', { token: link })).statusCode).toBe(200);
    };
    await moveTo(`away${counter}@example.com`, accessToken);
    const back = asciiUpper(user.email).replace('BüCHER.DE', 'xn--bcher-kva.de');
    await moveTo(back, await login(user.username));
    const reset = await post('/password/reset', { token: resetLink, new_password: NEW_PASSWORD });
    expect(reset.statusCode).toBe(400);
    expect(reset.json().error).toBe('invalid_token');
  });

  it('mails the address as the user wrote it, and queues one mail per request whatever the spelling', async () => {
    const user = await freshUser();
    const before = (await outboxMails(t.database, user.email)).length;
    await post('/password/forgot', { email: user.email.replace('é', 'e\u0301') });
    await settled();
    const mails = await outboxMails(t.database, user.email);
    expect(mails.length - before).toBe(1);
    expect(mails.at(-1)?.recipient).toBe(user.email);
  });
});

describe.each(dialects)('limits on internationalised email addresses on %s (RATE_LIMITS=on)', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { RATE_LIMITS: 'on' } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('counts the mails asked for one address in all its spellings against one limit (R9)', async () => {
    const user = await registerUser(t.app, { username: 'idn_limited', email: 'josé.limited@bücher.de' });
    const ask = (url: string, email: string, remoteAddress: string) =>
      t.app.inject({ method: 'POST', url, payload: { email }, remoteAddress });
    expect((await ask('/password/forgot', user.email, '203.0.113.71')).statusCode).toBe(202);
    for (const spelling of ['jose\u0301.LIMITED@XN--BCHER-KVA.DE', 'JOSé.limited@Bücher.de']) {
      const again = await ask('/email/verification/resend', spelling, '198.51.100.71');
      expect(again.statusCode, spelling).toBe(429);
    }
  });
});
