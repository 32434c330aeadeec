import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { mailedToken, outboxMails } from '../support/outbox.ts';

const NEW_PASSWORD = 'a brand new passphrase here';

describe.each(dialects)('password reset on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { PUBLIC_URL: 'https://auth.example.test/' } });
  });
  afterAll(async () => {
    await t.close();
  });

  let counter = 0;
  const freshUser = () => {
    counter += 1;
    const username = `resetter${counter}`;
    return registerUser(t.app, { username, email: `${username}@example.com` });
  };
  const token = (payload: Record<string, string>) => t.app.inject({ method: 'POST', url: '/token', payload });
  const login = async (username: string, password = STRONG_PASSWORD) => {
    const response = await token({ username, password });
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { access_token: string; refresh_token: string };
  };
  const forgot = (email: string, headers: Record<string, string> = {}) =>
    t.app.inject({ method: 'POST', url: '/password/forgot', payload: { email }, headers });
  const reset = (resetToken: string, newPassword = NEW_PASSWORD) =>
    t.app.inject({
      method: 'POST',
      url: '/password/reset',
      payload: { token: resetToken, new_password: newPassword },
    });
  const linkFor = async (email: string) => {
    expect((await forgot(email)).statusCode).toBe(202);
    await t.app.backgroundWork.settled();
    return mailedToken(t.database, email.toLowerCase(), 'password_reset');
  };
  const me = (accessToken: string) =>
    t.app.inject({ method: 'GET', url: '/users/me', headers: { authorization: `Bearer ${accessToken}` } });
  const eventNames = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows;
  };

  it('answers forgot 202 {} alike for a known and an unknown address, and mails only the known one', async () => {
    const user = await freshUser();
    const before = (await outboxMails(t.database)).length;
    const known = await forgot(user.email);
    const unknown = await forgot('nobody-at-all@example.com');
    for (const answer of [known, unknown]) {
      expect(answer.statusCode).toBe(202);
      expect(answer.body).toBe('{}');
      expect(answer.headers['content-type']).toBe(unknown.headers['content-type']);
    }
    expect(Object.keys(known.headers).sort()).toEqual(Object.keys(unknown.headers).sort());
    await t.app.backgroundWork.settled();
    const mails = (await outboxMails(t.database)).slice(before);
    expect(mails.map((mail) => [mail.recipient, mail.template, mail.userId])).toEqual([
      [user.email, 'password_reset', user.id],
    ]);
    expect(mails[0]?.values.link).toMatch(
      /^https:\/\/auth\.example\.test\/account\/reset-password#token=[A-Za-z0-9_-]{43}$/,
    );
    const events = await eventNames(user.id);
    expect(events.map((row) => row.event)).toContain('password_reset_requested');
    const unknownEvents = await t.database.db
      .selectFrom('audit_events')
      .select('event')
      .where('event', '=', 'password_reset_requested')
      .execute();
    expect(unknownEvents).toHaveLength(1);
  });

  it('builds the link from PUBLIC_URL whatever Host the request names', async () => {
    const user = await freshUser();
    await forgot(user.email, { host: 'evil.test', 'x-forwarded-host': 'evil.test' });
    await t.app.backgroundWork.settled();
    const [mail] = await outboxMails(t.database, user.email);
    expect(mail?.values.link?.startsWith('https://auth.example.test/account/reset-password#token=')).toBe(
      true,
    );
    expect(JSON.stringify(mail)).not.toContain('evil.test');
  });

  it('resets in one go: 204, every session ended at once, the old refresh token invalid_grant, a password_changed mail', async () => {
    const user = await freshUser();
    const here = await login(user.username);
    const elsewhere = await login(user.username);
    const resetToken = await linkFor(user.email);
    const response = await reset(resetToken);
    expect(response.statusCode).toBe(204);
    expect(response.body).toBe('');
    expect(response.headers['set-cookie']).toBeUndefined();
    for (const tokens of [here, elsewhere]) {
      expect((await me(tokens.access_token)).statusCode).toBe(401);
      const refreshed = await token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
      expect(refreshed.statusCode).toBe(400);
      expect(refreshed.json().error).toBe('invalid_grant');
    }
    expect((await token({ username: user.username, password: STRONG_PASSWORD })).statusCode).toBe(400);
    const fresh = await login(user.username, NEW_PASSWORD);
    expect((await me(fresh.access_token)).json()).toMatchObject({ email_verified: true });
    const mails = await outboxMails(t.database, user.email);
    expect(mails.map((mail) => mail.template)).toEqual(['password_reset', 'password_changed']);
    expect(mails[1]?.values).toEqual({ username: user.username });
    const events = await eventNames(user.id);
    const resetEvent = events.find((row) => row.event === 'password_reset');
    expect(JSON.parse(resetEvent?.detail ?? '{}')).toEqual({ ended: 2 });
    expect(JSON.stringify(events)).not.toContain(resetToken);
    expect(t.logs.join('\n')).not.toContain(resetToken);
  });

  it('answers 400 invalid_token to a reused, unknown or malformed token', async () => {
    const user = await freshUser();
    const resetToken = await linkFor(user.email);
    expect((await reset(resetToken)).statusCode).toBe(204);
    const reused = await reset(resetToken, 'yet another passphrase here');
    expect(reused.statusCode).toBe(400);
    expect(reused.json()).toMatchObject({
      error: 'invalid_token',
      detail: 'The link is invalid, expired or already used',
    });
    for (const bad of ['', 'nope', 'A'.repeat(43)]) expect((await reset(bad)).statusCode, bad).toBe(400);
    await login(user.username, NEW_PASSWORD);
  });

  it('refuses a weak new password with 422 as registration does, and leaves the token usable', async () => {
    const user = await freshUser();
    const resetToken = await linkFor(user.email);
    for (const weak of ['short', 'password123456789', user.username]) {
      const response = await reset(resetToken, weak);
      expect(response.statusCode, weak).toBe(422);
      expect(response.json().detail[0].loc).toEqual(['body', 'new_password']);
    }
    expect((await reset(resetToken)).statusCode).toBe(204);
  });

  it('lets exactly one of 10 parallel resets with one token succeed', async () => {
    const user = await freshUser();
    const resetToken = await linkFor(user.email);
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => reset(resetToken, `parallel passphrase number ${i}`)),
    );
    expect(answers.map((answer) => answer.statusCode).sort()).toEqual([204, ...Array(9).fill(400)]);
  });

  it('accepts a token one second before its hour is up, and refuses it one second after', async () => {
    const early = await freshUser();
    const late = await freshUser();
    const earlyToken = await linkFor(early.email);
    const lateToken = await linkFor(late.email);
    t.clock.advanceSeconds(3600 - 1);
    expect((await reset(earlyToken)).statusCode).toBe(204);
    t.clock.advanceSeconds(2);
    expect((await reset(lateToken)).statusCode).toBe(400);
  });

  it('voids the older link when a new one is mailed, and a verify_email token resets nothing', async () => {
    const user = await freshUser();
    const older = await linkFor(user.email);
    const newer = await linkFor(user.email);
    expect((await reset(older)).statusCode).toBe(400);
    const tokens = await login(user.username);
    await t.app.inject({
      method: 'POST',
      url: '/users/me/email/verification',
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    const verifyToken = await mailedToken(t.database, user.email, 'verify_email');
    expect((await reset(verifyToken)).statusCode).toBe(400);
    expect((await reset(newer)).statusCode).toBe(204);
  });

  it('refuses a reset link mailed to an address the account has since left', async () => {
    const user = await freshUser();
    const resetToken = await linkFor(user.email);
    await t.database.db
      .updateTable('users')
      .set({ email: 'moved@example.com', email_canonical: 'moved@example.com' })
      .where('id', '=', user.id)
      .execute();
    expect((await reset(resetToken)).statusCode).toBe(400);
    await login(user.username);
  });

  it('audits a refused token with its purpose, never the token, and the user only when the token was theirs', async () => {
    const user = await freshUser();
    const resetToken = await linkFor(user.email);
    expect((await reset(resetToken)).statusCode).toBe(204);
    const bogus = 'C'.repeat(43);
    expect((await reset(resetToken, 'yet another fine passphrase')).statusCode).toBe(400);
    expect((await reset(bogus)).statusCode).toBe(400);
    expect(
      (await t.app.inject({ method: 'POST', url: '/email/verify', payload: { token: bogus } })).statusCode,
    ).toBe(400);
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('event', '=', 'one_time_token_refused')
      .orderBy('id', 'desc')
      .limit(3)
      .execute();
    expect(
      rows
        .reverse()
        .map((row) => [row.user_id === null ? null : Number(row.user_id), JSON.parse(row.detail ?? '{}')]),
    ).toEqual([
      [user.id, { purpose: 'reset_password' }],
      [null, { purpose: 'reset_password' }],
      [null, { purpose: 'verify_email' }],
    ]);
    for (const row of rows) {
      expect(JSON.stringify(row)).not.toContain(resetToken);
      expect(JSON.stringify(row)).not.toContain(bogus);
    }
  });
});

describe.each(dialects)('email limits on %s (RATE_LIMITS=on)', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { RATE_LIMITS: 'on', REGISTER_PER_IP: '1000/10s' } });
  });
  afterAll(async () => {
    await t.close();
  });
  const from = (ip: string) => ({ remoteAddress: ip });
  const post = (url: string, payload: object, ip: string) =>
    t.app.inject({ method: 'POST', url, payload, ...from(ip) });

  it('allows one mail per address a minute, for known and unknown addresses alike, answered 429 with Retry-After', async () => {
    await registerUser(t.app, { username: 'limited', email: 'limited@example.com' });
    for (const email of ['limited@example.com', 'never-registered@example.com']) {
      expect((await post('/password/forgot', { email }, '203.0.113.1')).statusCode).toBe(202);
      const again = await post('/email/verification/resend', { email: email.toUpperCase() }, '198.51.100.1');
      expect(again.statusCode).toBe(429);
      expect(again.headers['retry-after']).toBe('60');
      expect(again.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    }
    await t.app.backgroundWork.settled();
    expect(await outboxMails(t.database, 'limited@example.com')).toHaveLength(1);
    t.clock.advanceSeconds(61);
  });

  it('allows 30 mail requests an hour from one client address, then 429', async () => {
    for (let i = 0; i < 30; i += 1) {
      expect(
        (await post('/password/forgot', { email: `spray${i}@example.com` }, '203.0.113.9')).statusCode,
      ).toBe(202);
    }
    const refused = await post(
      '/email/verification/resend',
      { email: 'spray-last@example.com' },
      '203.0.113.9',
    );
    expect(refused.statusCode).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(3000);
    expect((await post('/password/forgot', { email: 'other@example.com' }, '203.0.113.10')).statusCode).toBe(
      202,
    );
  });

  it('allows 10 token submissions in 5 minutes from one client address, then 429', async () => {
    const bogus = 'B'.repeat(43);
    for (let i = 0; i < 5; i += 1) {
      expect((await post('/email/verify', { token: bogus }, '203.0.113.20')).statusCode).toBe(400);
      expect(
        (await post('/password/reset', { token: bogus, new_password: 'whatever passphrase' }, '203.0.113.20'))
          .statusCode,
      ).toBe(400);
    }
    const refused = await post('/email/verify', { token: bogus }, '203.0.113.20');
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['retry-after']).toBe('300');
    expect((await post('/email/verify', { token: bogus }, '203.0.113.21')).statusCode).toBe(400);
  });

  it("clears the account's login throttling when a reset succeeds", async () => {
    await registerUser(t.app, { username: 'lockedout', email: 'lockedout@example.com' });
    const attempt = (password: string, ip: string) =>
      t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { username: 'lockedout', password },
        ...from(ip),
      });
    // R2: ten failures from untrusted clients lock the account for them all.
    for (let i = 0; i < 10; i += 1) await attempt('wrong password guess', `192.0.2.${i + 1}`);
    expect((await attempt(STRONG_PASSWORD, '192.0.2.200')).statusCode).toBe(429);
    expect(
      (await post('/password/forgot', { email: 'lockedout@example.com' }, '192.0.2.201')).statusCode,
    ).toBe(202);
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, 'lockedout@example.com', 'password_reset');
    const reset = await post(
      '/password/reset',
      { token: resetToken, new_password: NEW_PASSWORD },
      '192.0.2.201',
    );
    expect(reset.statusCode).toBe(204);
    expect((await attempt(NEW_PASSWORD, '192.0.2.202')).statusCode).toBe(200);
  });

  // Found from outside (THROTTLING.md §8: "A password reset clears R1–R3"): a user who reset after five typos on their
  // own device was still refused there with the new password, for as long as R1's lock (up to an hour) ran.
  it('clears the R1 lock of the address the reset came from', async () => {
    await registerUser(t.app, { username: 'typist', email: 'typist@example.com' });
    const attempt = (password: string) =>
      t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { username: 'typist', password },
        ...from('192.0.2.150'),
      });
    for (let i = 0; i < 5; i += 1) expect((await attempt(`typo ${i}`)).statusCode).toBe(400);
    expect((await attempt(STRONG_PASSWORD)).statusCode).toBe(429);
    expect((await post('/password/forgot', { email: 'typist@example.com' }, '192.0.2.150')).statusCode).toBe(
      202,
    );
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, 'typist@example.com', 'password_reset');
    const reset = await post(
      '/password/reset',
      { token: resetToken, new_password: NEW_PASSWORD },
      '192.0.2.150',
    );
    expect(reset.statusCode).toBe(204);
    expect((await attempt(NEW_PASSWORD)).statusCode).toBe(200);
  });
});

describe.each(dialects)('email limits on %s (RATE_LIMITS=off)', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  it('limits nothing', async () => {
    for (let i = 0; i < 12; i += 1) {
      const response = await t.app.inject({
        method: 'POST',
        url: '/password/forgot',
        payload: { email: 'same@example.com' },
      });
      expect(response.statusCode).toBe(202);
      const verify = await t.app.inject({
        method: 'POST',
        url: '/email/verify',
        payload: { token: 'B'.repeat(43) },
      });
      expect(verify.statusCode).toBe(400);
    }
  });
});

describe.each(dialects)('closing the app on %s', (dialect) => {
  it('waits for the work a forgotten password left running, and stores its mail and audit event', async () => {
    const t = await buildTestApp(dialect);
    const database = t.database;
    try {
      const user = await registerUser(t.app, { username: 'closer', email: 'closer@example.com' });
      const response = await t.app.inject({
        method: 'POST',
        url: '/password/forgot',
        payload: { email: user.email },
      });
      expect(response.statusCode).toBe(202);
      await t.app.close();
      expect((await outboxMails(database, user.email)).map((mail) => mail.template)).toEqual([
        'password_reset',
      ]);
      const events = await database.db
        .selectFrom('audit_events')
        .select('event')
        .where('user_id', '=', user.id)
        .execute();
      expect(events.map((row) => row.event)).toContain('password_reset_requested');
    } finally {
      await database.destroy();
    }
  });
});
