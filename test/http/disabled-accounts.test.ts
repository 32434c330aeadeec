import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createUsersRepository } from '../../src/db/users.ts';
import { discoverBearerRoutes, routeName } from '../support/bearer-routes.ts';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { mailedToken, outboxMails } from '../support/outbox.ts';

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const INVALID_GRANT = {
  error: 'invalid_grant',
  error_description: 'Incorrect username or password',
  detail: 'Incorrect username or password',
};
const DISABLED = {
  error: 'invalid_grant',
  error_description: 'Account disabled',
  detail: 'Account disabled',
};

const events = (t: TestApp, event: string) =>
  t.logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.event === event);

describe.each(dialects)('disabled accounts on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const token = (fields: Record<string, string>) =>
    t.app.inject({ method: 'POST', url: '/token', headers: FORM, payload: form(fields) });
  const login = (username: string, password = STRONG_PASSWORD) => token({ username, password });
  const disable = (id: number) => createUsersRepository(t.database.db).setUserDisabled(id, t.clock.now());
  const enable = (id: number) => createUsersRepository(t.database.db).setUserDisabled(id, null);
  const newAccount = async (username: string) => {
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    return {
      user,
      tokens: (await login(username)).json() as { access_token: string; refresh_token: string },
    };
  };

  it('answers a wrong password for a disabled account exactly as for an enabled one', async () => {
    const { user } = await newAccount('dora');
    const enabled = await login('dora', 'not her password at all');
    await disable(user.id);
    const disabled = await login('dora', 'not her password at all');
    const unknown = await login('nobody-at-all', 'not her password at all');
    for (const response of [enabled, disabled, unknown]) {
      expect(response.statusCode).toBe(400);
      expect(response.json()).toEqual(INVALID_GRANT);
    }
    expect(disabled.headers['cache-control']).toBe(enabled.headers['cache-control']);
  });

  it('answers the right password for a disabled account 400 invalid_grant "Account disabled", without tokens', async () => {
    const { user } = await newAccount('dmitri');
    await disable(user.id);
    const response = await login('dmitri');
    expect(response.statusCode).toBe(400);
    expect(response.json()).toEqual(DISABLED);
    const sessions = await t.database.db
      .selectFrom('sessions')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    expect(sessions).toHaveLength(1);
    expect(events(t, 'login_failed').at(-1)).toMatchObject({ reason: 'account_disabled', userId: user.id });
  });

  it('refuses the refresh grant of a disabled account with invalid_grant', async () => {
    const { user, tokens } = await newAccount('dana');
    await disable(user.id);
    const response = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_grant');
  });

  it('stops the live access tokens of a disabled account at once on every Bearer route, 401 invalid_token', async () => {
    const { user, tokens } = await newAccount('delia');
    const routes = await discoverBearerRoutes(t.app);
    expect(routes.map(routeName)).toContain('GET /conversation');
    expect(routes.map(routeName)).toContain('POST /conversation/messages');
    const call = (route: { method: string; path: string }) =>
      t.app.inject({
        method: route.method as 'GET',
        url: route.path.replace(/\{[^}]+\}/g, 'x'),
        headers: { authorization: `Bearer ${tokens.access_token}` },
        ...(route.method === 'GET' ? {} : { payload: {} }),
      });
    const conversation = routes.find((route) => routeName(route) === 'GET /conversation')!;
    expect((await call(conversation)).statusCode).toBe(200);
    await disable(user.id);
    for (const route of routes) {
      const response = await call(route);
      expect(response.statusCode, routeName(route)).toBe(401);
      expect(response.headers['www-authenticate'], routeName(route)).toBe('Bearer error="invalid_token"');
    }
  });

  const forgot = (email: string) =>
    t.app.inject({ method: 'POST', url: '/password/forgot', payload: { email } });
  const reset = (resetToken: string) =>
    t.app.inject({
      method: 'POST',
      url: '/password/reset',
      payload: { token: resetToken, new_password: 'a brand new passphrase here' },
    });

  it('answers a reset request for a disabled account 202 as for any address, and mails nothing', async () => {
    const { user } = await newAccount('dagny');
    await disable(user.id);
    const before = (await outboxMails(t.database)).length;
    const response = await forgot(user.email);
    await t.app.backgroundWork.settled();
    expect(response.statusCode).toBe(202);
    expect((await outboxMails(t.database)).slice(before)).toEqual([]);
  });

  // Found from outside: the resend mailed a disabled account a verification link, where a reset request mails nothing.
  it('answers a verification resend for a disabled account 202 as for any address, and mails nothing', async () => {
    const { user } = await newAccount('dobromir');
    await disable(user.id);
    const before = (await outboxMails(t.database)).length;
    const response = await t.app.inject({
      method: 'POST',
      url: '/email/verification/resend',
      payload: { email: user.email },
    });
    await t.app.backgroundWork.settled();
    expect(response.statusCode).toBe(202);
    expect((await outboxMails(t.database)).slice(before)).toEqual([]);
  });

  it('refuses a reset link mailed before the account was disabled: 400 invalid_token, the password unchanged', async () => {
    const { user } = await newAccount('dalia');
    expect((await forgot(user.email)).statusCode).toBe(202);
    await t.app.backgroundWork.settled();
    const link = await mailedToken(t.database, user.email, 'password_reset');
    await disable(user.id);
    const response = await reset(link);
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_token');
    await enable(user.id);
    expect((await login('dalia')).statusCode).toBe(200);
  });

  // Found from outside: an operator who disables a compromised account must not be raced by the email change its
  // thief had already asked for, which would then receive the account's next reset link.
  it('refuses an email-change link mailed before the account was disabled, and cancels the change: enabled, still refused', async () => {
    const { user, tokens } = await newAccount('dorian');
    const changed = await t.app.inject({
      method: 'POST',
      url: '/users/me/email',
      headers: { authorization: `Bearer ${tokens.access_token}` },
      payload: { new_email: 'dorian@thief.example.com', password: STRONG_PASSWORD },
    });
    expect(changed.statusCode, changed.body).toBe(200);
    const link = await mailedToken(t.database, 'dorian@thief.example.com', 'verify_email');
    await disable(user.id);
    const verify = () => t.app.inject({ method: 'POST', url: '/email/verify', payload: { token: link } });
    const refused = await verify();
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toBe('invalid_token');
    const stored = await createUsersRepository(t.database.db).findUserById(user.id);
    expect(stored?.email).toBe(user.email);
    expect(stored?.pendingEmail).toBeNull();
    await enable(user.id);
    expect((await verify()).statusCode).toBe(400);
    expect((await createUsersRepository(t.database.db).findUserById(user.id))?.email).toBe(user.email);
  });

  it('refuses a verification link for the own address while the account is disabled, without spending it', async () => {
    const { user, tokens } = await newAccount('dorothea');
    const asked = await t.app.inject({
      method: 'POST',
      url: '/users/me/email/verification',
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    expect(asked.statusCode, asked.body).toBe(202);
    const link = await mailedToken(t.database, user.email, 'verify_email');
    await disable(user.id);
    const verify = () => t.app.inject({ method: 'POST', url: '/email/verify', payload: { token: link } });
    const refused = await verify();
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toBe('invalid_token');
    expect((await createUsersRepository(t.database.db).findUserById(user.id))?.emailVerifiedAt).toBeNull();
    await enable(user.id);
    expect((await verify()).statusCode).toBe(200);
  });

  it('lets an enabled account log in again', async () => {
    const { user } = await newAccount('dario');
    await disable(user.id);
    expect((await login('dario')).statusCode).toBe(400);
    await enable(user.id);
    expect((await login('dario')).statusCode).toBe(200);
  });
});

describe.each(dialects)('disabled accounts under login throttling on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    t = await buildTestApp(dialect, { env: { RATE_LIMITS: 'on', IP_FAILS_PER_MIN: '1000' } });
  });
  afterAll(async () => {
    vi.useRealTimers();
    await t.close();
  });
  afterEach(() => {
    vi.setSystemTime(Date.now() + 3600_000);
  });

  const login = (username: string, password: string, from: string) =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: from,
      headers: FORM,
      payload: form({ username, password }),
    });
  const lockAfter = async (username: string, password: string, from: string) => {
    for (let attempt = 1; attempt <= 20; attempt += 1) {
      if ((await login(username, password, from)).statusCode === 429) return attempt;
    }
    return undefined;
  };

  it('counts wrong passwords against a disabled account as against an enabled one', async () => {
    const enabled = await registerUser(t.app, { username: 'erna', email: 'erna@example.com' });
    const disabled = await registerUser(t.app, { username: 'ezra', email: 'ezra@example.com' });
    await createUsersRepository(t.database.db).setUserDisabled(disabled.id, new Date());
    const enabledLock = await lockAfter(enabled.username, 'wrong password here', '203.0.113.1');
    const disabledLock = await lockAfter(disabled.username, 'wrong password here', '203.0.113.2');
    expect(enabledLock).toBeDefined();
    expect(disabledLock).toBe(enabledLock);
  });

  it('counts the right password of a disabled account as a failure, so that it cannot be tried without limit', async () => {
    const reference = await registerUser(t.app, { username: 'fritz', email: 'fritz@example.com' });
    const disabled = await registerUser(t.app, { username: 'frida', email: 'frida@example.com' });
    await createUsersRepository(t.database.db).setUserDisabled(disabled.id, new Date());
    const wrongLock = await lockAfter(reference.username, 'wrong password here', '203.0.113.3');
    const rightLock = await lockAfter(disabled.username, STRONG_PASSWORD, '203.0.113.4');
    expect(rightLock).toBe(wrongLock);
  });
});
