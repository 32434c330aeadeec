import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderMailTemplate } from '../../src/services/mail-templates.ts';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { decodeToken } from '../support/forge-token.ts';
import { mailedToken, outboxMails } from '../support/outbox.ts';

const PUBLIC_URL = 'https://auth.example.test';

describe.each(dialects)('email verification on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { PUBLIC_URL } });
  });
  afterAll(async () => {
    await t.close();
  });

  let counter = 0;
  const freshUser = async () => {
    counter += 1;
    const username = `verifier${counter}`;
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    return user;
  };
  const login = async (username: string, password = STRONG_PASSWORD) => {
    const response = await t.app.inject({ method: 'POST', url: '/token', payload: { username, password } });
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { access_token: string; refresh_token: string };
  };
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const requestLink = (accessToken: string, headers: Record<string, string> = {}) =>
    t.app.inject({
      method: 'POST',
      url: '/users/me/email/verification',
      headers: { ...bearer(accessToken), ...headers },
    });
  const verify = (token: string) =>
    t.app.inject({ method: 'POST', url: '/email/verify', payload: { token } });
  const resend = (email: string) =>
    t.app.inject({ method: 'POST', url: '/email/verification/resend', payload: { email } });
  const me = (accessToken: string) =>
    t.app.inject({ method: 'GET', url: '/users/me', headers: bearer(accessToken) });
  const linkFor = async (username: string) => {
    const tokens = await login(username);
    expect((await requestLink(tokens.access_token)).statusCode).toBe(202);
    return mailedToken(t.database, `${username}@example.com`, 'verify_email');
  };
  const eventsOf = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .select(['event', 'detail'])
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows;
  };

  it('shows a new account unverified, without a pending address, at GET /users/me and in its access token', async () => {
    const user = await freshUser();
    const tokens = await login(user.username);
    expect((await me(tokens.access_token)).json()).toEqual({
      ...user,
      email_verified: false,
      pending_email: null,
    });
    expect(decodeToken(tokens.access_token).payload.email_verified).toBe(false);
  });

  it('mails a verify_email link built from PUBLIC_URL, never from the Host header, and answers 202 {}', async () => {
    const user = await freshUser();
    const tokens = await login(user.username);
    const response = await requestLink(tokens.access_token, {
      host: 'evil.test',
      'x-forwarded-host': 'evil.test',
    });
    expect(response.statusCode).toBe(202);
    expect(response.json()).toEqual({});
    const mails = await outboxMails(t.database, user.email);
    expect(mails).toHaveLength(1);
    expect(mails[0]).toMatchObject({
      userId: user.id,
      template: 'verify_email',
      values: { username: user.username },
    });
    expect(mails[0]?.values.link).toMatch(
      /^https:\/\/auth\.example\.test\/account\/verify-email#token=[A-Za-z0-9_-]{43}$/,
    );
    // The payload is sealed: the stored row does not hold the link.
    const stored = await t.database.db
      .selectFrom('email_outbox')
      .select('payload')
      .where('recipient', '=', user.email)
      .execute();
    expect(JSON.stringify(stored)).not.toContain(mails[0]?.values.link?.split('#token=')[1]);
  });

  it('tells the holder of a never-verified address how to take the account over instead of clicking', async () => {
    const user = await freshUser();
    const tokens = await login(user.username);
    expect((await requestLink(tokens.access_token)).statusCode).toBe(202);
    const [mail] = await outboxMails(t.database, user.email);
    expect(mail?.values).toMatchObject({ signInUrl: `${PUBLIC_URL}/` });
    const rendered = renderMailTemplate('verify_email', mail!.values);
    for (const body of [rendered.text, rendered.html]) {
      expect(body).toContain('If you did not create this account, do not open the link');
      expect(body).toContain('If the reset asks for a second factor you never set up');
      expect(body).toContain('Forgot your password?');
      expect(body).toContain(`${PUBLIC_URL}/`);
    }
    // A verification mailed for an email change is no sign-up: the plain wording stays.
    const change = renderMailTemplate('verify_email', {
      username: 'x',
      link: `${PUBLIC_URL}/account/verify-email#token=t`,
    });
    expect(change.text).not.toContain('did not create this account');
  });

  it('verifies with the token: 200 with the address, email_verified at GET /users/me and in later tokens', async () => {
    const user = await freshUser();
    const token = await linkFor(user.username);
    const response = await verify(token);
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ email: user.email, email_verified: true });
    const tokens = await login(user.username);
    expect((await me(tokens.access_token)).json()).toMatchObject({
      email_verified: true,
      pending_email: null,
    });
    expect(decodeToken(tokens.access_token).payload.email_verified).toBe(true);
    expect((await eventsOf(user.id)).map((row) => row.event)).toEqual(
      expect.arrayContaining(['email_verification_requested', 'email_verified']),
    );
    const stored = JSON.stringify(await eventsOf(user.id));
    expect(stored).not.toContain(token);
    expect(t.logs.join('\n')).not.toContain(token);
  });

  it('mails nothing to an address that is verified already, and still answers 202 {}', async () => {
    const user = await freshUser();
    await verify(await linkFor(user.username));
    const before = (await outboxMails(t.database, user.email)).length;
    const tokens = await login(user.username);
    const response = await requestLink(tokens.access_token);
    expect(response.statusCode).toBe(202);
    expect(response.json()).toEqual({});
    expect(await outboxMails(t.database, user.email)).toHaveLength(before);
  });

  it('answers 400 invalid_token to a reused token, in the OAuth shape with detail', async () => {
    const user = await freshUser();
    const token = await linkFor(user.username);
    expect((await verify(token)).statusCode).toBe(200);
    const reused = await verify(token);
    expect(reused.statusCode).toBe(400);
    expect(reused.json()).toEqual({
      error: 'invalid_token',
      error_description: 'The link is invalid, expired or already used',
      detail: 'The link is invalid, expired or already used',
    });
    expect(reused.headers['www-authenticate']).toBeUndefined();
    const another = `${token.slice(0, 42)}${token.endsWith('A') ? 'E' : 'A'}`;
    for (const bad of ['', 'x', another, 'a'.repeat(43), `${token}A`]) {
      expect((await verify(bad)).statusCode, bad).toBe(400);
    }
  });

  it('lets exactly one of 10 parallel verifications with one token succeed', async () => {
    const user = await freshUser();
    const token = await linkFor(user.username);
    const answers = await Promise.all(Array.from({ length: 10 }, () => verify(token)));
    expect(answers.map((answer) => answer.statusCode).sort()).toEqual([200, ...Array(9).fill(400)]);
  });

  it('accepts a token one second before its 24 hours are up, and refuses it one second after', async () => {
    const early = await freshUser();
    const late = await freshUser();
    const earlyToken = await linkFor(early.username);
    const lateToken = await linkFor(late.username);
    t.clock.advanceSeconds(86400 - 1);
    expect((await verify(earlyToken)).statusCode).toBe(200);
    t.clock.advanceSeconds(2);
    expect((await verify(lateToken)).statusCode).toBe(400);
  });

  it('voids the older link when a new one is mailed', async () => {
    const user = await freshUser();
    const older = await linkFor(user.username);
    const newer = await linkFor(user.username);
    expect(newer).not.toBe(older);
    expect((await verify(older)).statusCode).toBe(400);
    expect((await verify(newer)).statusCode).toBe(200);
  });

  it('ends every session of the account and signs nobody in: the pre-hijacker loses access', async () => {
    // The attacker registers the victim's address first and keeps a session.
    const attacker = await registerUser(t.app, { username: 'squatter', email: 'victim@example.com' });
    const squatted = await login(attacker.username);
    expect((await me(squatted.access_token)).statusCode).toBe(200);
    // The victim asks for a link to their address and uses it.
    expect((await resend('victim@example.com')).statusCode).toBe(202);
    await t.app.backgroundWork.settled();
    const response = await verify(await mailedToken(t.database, 'victim@example.com', 'verify_email'));
    expect(response.statusCode).toBe(200);
    expect(response.headers['set-cookie']).toBeUndefined();
    expect(Object.keys(response.json()).sort()).toEqual(['email', 'email_verified']);
    expect((await me(squatted.access_token)).statusCode).toBe(401);
    const refreshed = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: squatted.refresh_token },
    });
    expect(refreshed.statusCode).toBe(400);
    expect(refreshed.json().error).toBe('invalid_grant');
    const ended = (await eventsOf(attacker.id)).find((row) => row.event === 'email_verified');
    expect(JSON.parse(ended?.detail ?? '{}')).toEqual({ ended: 1 });
  });

  it('reflects the current verification in a refreshed access token', async () => {
    const user = await freshUser();
    const tokens = await login(user.username);
    expect(decodeToken(tokens.access_token).payload.email_verified).toBe(false);
    await t.database.db
      .updateTable('users')
      .set({ email_verified_at_ms: t.clock.now().getTime() })
      .where('id', '=', user.id)
      .execute();
    const refreshed = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token },
    });
    expect(refreshed.statusCode).toBe(200);
    expect(decodeToken(refreshed.json().access_token).payload.email_verified).toBe(true);
  });

  it('answers resend 202 {} for any address, and mails only an unverified account', async () => {
    const unverified = await freshUser();
    const verified = await freshUser();
    await verify(await linkFor(verified.username));
    const mailsBefore = (await outboxMails(t.database)).length;
    const answers = await Promise.all(
      [unverified.email.toUpperCase(), verified.email, 'nobody@example.com', 'a@b.co'].map(resend),
    );
    for (const answer of answers) {
      expect(answer.statusCode).toBe(202);
      expect(answer.json()).toEqual({});
      expect(answer.body).toBe('{}');
    }
    await t.app.backgroundWork.settled();
    const mails = (await outboxMails(t.database)).slice(mailsBefore);
    expect(mails.map((mail) => [mail.recipient, mail.template])).toEqual([
      [unverified.email, 'verify_email'],
    ]);
    expect((await resend('not an address')).statusCode).toBe(422);
  });
});

describe.each(dialects)('REQUIRE_VERIFIED_EMAIL=true on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { REQUIRE_VERIFIED_EMAIL: 'true' } });
  });
  afterAll(async () => {
    await t.close();
  });
  const token = (username: string, password: string) =>
    t.app.inject({ method: 'POST', url: '/token', payload: { username, password } });

  it('refuses an unverified account with invalid_grant "Email not verified" only once its password matched', async () => {
    const user = await registerUser(t.app, { username: 'strict', email: 'strict@example.com' });
    const wrong = await token(user.username, 'not the password at all');
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json()).toMatchObject({
      error: 'invalid_grant',
      error_description: 'Incorrect username or password',
    });
    const unknown = await token('nobody-here', STRONG_PASSWORD);
    expect(unknown.json().error_description).toBe('Incorrect username or password');
    const right = await token(user.username, STRONG_PASSWORD);
    expect(right.statusCode).toBe(400);
    expect(right.json()).toEqual({
      error: 'invalid_grant',
      error_description: 'Email not verified',
      detail: 'Email not verified',
    });
    await t.app.inject({ method: 'POST', url: '/email/verification/resend', payload: { email: user.email } });
    await t.app.backgroundWork.settled();
    const verified = await t.app.inject({
      method: 'POST',
      url: '/email/verify',
      payload: { token: await mailedToken(t.database, user.email, 'verify_email') },
    });
    expect(verified.statusCode).toBe(200);
    const granted = await token(user.username, STRONG_PASSWORD);
    expect(granted.statusCode).toBe(200);
    expect(decodeToken(granted.json().access_token).payload.email_verified).toBe(true);
  });
});
