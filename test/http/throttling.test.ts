import type { LightMyRequestResponse } from 'fastify';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AppError } from '../../src/errors.ts';
import { createPasswordHasher, type PasswordHasher } from '../../src/security/passwords.ts';
import {
  buildTestApp,
  FAST_ARGON2,
  registration,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

// rate-limiter-flexible reads Date.now(): faking Date alone moves its windows without sleeping.
const advanceSeconds = (seconds: number) => vi.setSystemTime(Date.now() + seconds * 1000);

const TOO_MANY = {
  error: 'temporarily_unavailable',
  error_description: 'Too many attempts; retry later.',
  detail: 'Too many attempts; retry later.',
};
const INVALID_GRANT = {
  error: 'invalid_grant',
  error_description: 'Incorrect username or password',
  detail: 'Incorrect username or password',
};
const NEW_PASSWORD = 'a brand new passphrase for alice';

/** The production hasher at its minimum cost, counting every verification (real or dummy). */
function countingHasher(): PasswordHasher & { verifications(): number; shedNext(count: number): void } {
  const real = createPasswordHasher(FAST_ARGON2);
  let verifications = 0;
  let toShed = 0;
  // As the bounded hash queue does when it is full: the verification never runs.
  const shed = () => {
    if (toShed === 0) return false;
    toShed -= 1;
    return true;
  };
  const overloaded = () =>
    Promise.reject(new AppError('overloaded', 'The server is busy; retry in a second.'));
  return {
    ...real,
    verify: (storedHash, password) => {
      if (shed()) return overloaded();
      verifications += 1;
      return real.verify(storedHash, password);
    },
    verifyDummy: (password) => {
      if (shed()) return overloaded();
      verifications += 1;
      return real.verifyDummy(password);
    },
    verifications: () => verifications,
    shedNext: (count) => {
      toShed = count;
    },
  };
}

const events = (t: TestApp, event: string) =>
  t.logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.event === event);

describe.each(dialects)('login throttling over HTTP on %s', (dialect) => {
  let t: TestApp;
  let hasher: ReturnType<typeof countingHasher>;
  const register = (username: string, from: string) =>
    t.app.inject({
      method: 'POST',
      url: '/register/',
      remoteAddress: from,
      payload: registration({ username, email: `${username}@example.com` }),
    });
  const start = async (env: Record<string, string> = {}) => {
    hasher = countingHasher();
    t = await buildTestApp(dialect, { env: { RATE_LIMITS: 'on', ...env }, passwords: hasher });
    expect((await register('alice', '192.0.2.250')).statusCode).toBe(200);
  };
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
  });
  afterEach(async () => {
    vi.useRealTimers();
    await t?.close();
  });

  const token = (
    from: string,
    fields: Record<string, string>,
    asJson = false,
  ): Promise<LightMyRequestResponse> =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: from,
      ...(asJson
        ? { payload: fields }
        : {
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            payload: new URLSearchParams(fields).toString(),
          }),
    });
  const login = (from: string, password: string, extra: Record<string, string> = {}, username = 'alice') =>
    token(from, { username, password, ...extra });
  const loginOk = async (from: string, password = STRONG_PASSWORD, extra: Record<string, string> = {}) => {
    const response = await login(from, password, extra);
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { access_token: string; refresh_token: string; device_token: string };
  };
  const expectThrottled = (response: LightMyRequestResponse, retryAfterSeconds?: number) => {
    expect(response.statusCode, response.body).toBe(429);
    expect(response.json()).toEqual(TOO_MANY);
    expect(response.headers['cache-control']).toBe('no-store');
    const retryAfter = Number(response.headers['retry-after']);
    expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true);
    if (retryAfterSeconds !== undefined) expect(retryAfter).toBe(retryAfterSeconds);
    return retryAfter;
  };
  /** Fails `count` times, answering 400 each time. */
  const failTimes = async (from: string, count: number, username = 'alice') => {
    for (let i = 0; i < count; i += 1) {
      const response = await login(from, `wrong password ${i}`, {}, username);
      expect(response.statusCode, `failure ${i + 1}: ${response.body}`).toBe(400);
    }
  };

  // THROTTLING.md §8, test 1. The user's own address is known (she logged in from it before), so that R1 alone
  // decides, and the per-address limit (R4, 10 a minute) is raised out of the way.
  it('locks a client for 30 s after 5 wrong passwords without hashing, then for 60 s after 5 more; a success clears it', async () => {
    await start({ IP_FAILS_PER_MIN: '1000' });
    await loginOk('203.0.113.10');
    await failTimes('203.0.113.10', 5);
    const hashed = hasher.verifications();
    expectThrottled(await login('203.0.113.10', 'sixth wrong'), 30);
    expect(hasher.verifications()).toBe(hashed);
    advanceSeconds(29);
    expectThrottled(await login('203.0.113.10', 'still locked'), 1);
    advanceSeconds(1);
    await failTimes('203.0.113.10', 5);
    expectThrottled(await login('203.0.113.10', 'locked again'), 60);
    advanceSeconds(60);
    await failTimes('203.0.113.10', 4);
    await loginOk('203.0.113.10');
    // Both the failures and the count of locks are gone: 5 free failures again, then 30 s.
    await failTimes('203.0.113.10', 5);
    expectThrottled(await login('203.0.113.10', 'after the success'), 30);
  });

  it('counts no failure for attempts whose hash was shed: the right password still logs in after a flood', async () => {
    await start();
    hasher.shedNext(8);
    for (let i = 0; i < 8; i += 1) {
      expect((await login('203.0.113.40', STRONG_PASSWORD)).statusCode).toBe(503);
    }
    await loginOk('203.0.113.40');
    // And the five free failures are all still there.
    await failTimes('203.0.113.40', 5);
    expectThrottled(await login('203.0.113.40', 'sixth wrong'));
  });

  it('throttles and audits the password checks of the account endpoints like logins of the account', async () => {
    await start();
    const { access_token: accessToken } = await loginOk('203.0.113.50');
    const check = (currentPassword: string) =>
      t.app.inject({
        method: 'POST',
        url: '/users/me/password',
        remoteAddress: '198.51.100.50',
        headers: { authorization: `Bearer ${accessToken}` },
        payload: { current_password: currentPassword, new_password: 'a brand new passphrase here' },
      });
    for (let i = 0; i < 5; i += 1) {
      const response = await check(`guess ${i}`);
      expect(response.statusCode, response.body).toBe(400);
      expect(response.json().code).toBe('invalid_password');
    }
    const hashed = hasher.verifications();
    const refused = await check(STRONG_PASSWORD);
    expect(refused.statusCode, refused.body).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    expect(hasher.verifications()).toBe(hashed);
    expect(events(t, 'password_check_failed')).toHaveLength(5);
    expect(events(t, 'password_check_throttled')).toEqual([expect.objectContaining({ rule: 'R1' })]);
    // The same user logging in from elsewhere is not locked out by it.
    await loginOk('203.0.113.51');
  });

  // Found from outside: the checks were counted per (account, address) only, so a stolen access token sent from a new
  // address each time guessed the password without end (110 of 110 answered 400, none counted by R2 or R3). The
  // client of such a check is the session, whichever address it comes from.
  it('counts the password checks of one session together, from whichever address they come', async () => {
    await start();
    const { access_token: accessToken } = await loginOk('203.0.113.52');
    const check = (address: string, currentPassword: string) =>
      t.app.inject({
        method: 'POST',
        url: '/users/me/password',
        remoteAddress: address,
        headers: { authorization: `Bearer ${accessToken}` },
        payload: { current_password: currentPassword, new_password: 'a brand new passphrase here' },
      });
    for (let i = 0; i < 5; i += 1) {
      expect((await check(`198.51.100.${60 + i}`, `guess ${i}`)).statusCode).toBe(400);
    }
    const hashed = hasher.verifications();
    const refused = await check('198.51.100.70', STRONG_PASSWORD);
    expect(refused.statusCode, refused.body).toBe(429);
    expect(hasher.verifications()).toBe(hashed);
    // Another session of the same user is another client: its own check is not refused for the first one's guesses.
    const { access_token: other } = await loginOk('203.0.113.53');
    const own = await t.app.inject({
      method: 'POST',
      url: '/users/me/password',
      remoteAddress: '203.0.113.53',
      headers: { authorization: `Bearer ${other}` },
      payload: { current_password: STRONG_PASSWORD, new_password: 'a brand new passphrase here' },
    });
    expect(own.statusCode, own.body).toBe(204);
  });

  it('answers the correct password during a lock exactly like a wrong one, with no token and no hash (test 2)', async () => {
    await start();
    await failTimes('203.0.113.20', 5);
    const hashed = hasher.verifications();
    const wrong = await login('203.0.113.20', 'wrong again');
    const right = await login('203.0.113.20', STRONG_PASSWORD);
    expectThrottled(wrong, 30);
    expectThrottled(right, 30);
    expect(right.body).toBe(wrong.body);
    expect(right.body).not.toContain('access_token');
    expect(hasher.verifications()).toBe(hashed);
  });

  it('counts and answers an unknown username exactly like an existing one (test 3)', async () => {
    await start();
    const sequence = async (from: string, username: string) => {
      const answers = [];
      for (let i = 0; i < 8; i += 1) {
        const response = await login(from, `wrong ${i}`, {}, username);
        answers.push({
          status: response.statusCode,
          body: response.json(),
          retryAfter: response.headers['retry-after'],
        });
      }
      return answers;
    };
    const known = await sequence('203.0.113.30', 'alice');
    const unknown = await sequence('203.0.113.31', 'nobody-by-that-name');
    expect(unknown).toEqual(known);
    expect(known.map((answer) => answer.status)).toEqual([400, 400, 400, 400, 400, 429, 429, 429]);
    expect(known[0]?.body).toEqual(INVALID_GRANT);
  });

  it('reserves before hashing: 50 concurrent wrong passwords are 50 attempts, and exactly 5 are verified (test 4)', async () => {
    await start({
      TOKEN_PASSWORD_PER_IP: '1000/60s',
      IP_FAILS_PER_MIN: '1000',
      ACCOUNT_UNTRUSTED_FAILS: '1000',
    });
    const hashed = hasher.verifications();
    const responses = await Promise.all(
      Array.from({ length: 50 }, (_, i) => login('203.0.113.40', `parallel wrong ${i}`)),
    );
    expect(hasher.verifications() - hashed).toBe(5);
    expect(responses.filter((response) => response.statusCode === 400)).toHaveLength(5);
    expect(responses.filter((response) => response.statusCode === 429)).toHaveLength(45);
    expect(events(t, 'login_throttled').filter((line) => line.rule === 'R1')).toHaveLength(45);
  });

  it('forgets trusted devices and addresses after a password change and after signing out everywhere', async () => {
    await start({ IP_FAILS_PER_MIN: '1000', IP_FAILS_PER_DAY: '100000' });
    /** Ten untrusted failures from fresh addresses: the account is locked for untrusted clients (R2). */
    const lockAccount = async (round: number) => {
      for (let i = 0; i < 10; i += 1) {
        expect((await login(`192.0.${round}.${i + 1}`, `guess ${round}-${i}`)).statusCode).toBe(400);
      }
      expectThrottled(await login(`192.0.${round}.99`, STRONG_PASSWORD));
    };
    const stolen = await loginOk('198.51.100.9');
    const bearer = { authorization: `Bearer ${stolen.access_token}` };

    // Trusted before: the device token and the address both get in while the account is locked.
    await lockAccount(10);
    await loginOk('192.0.2.150', STRONG_PASSWORD, { device_token: stolen.device_token });
    await lockAccount(11);
    await loginOk('198.51.100.9');

    const changed = await t.app.inject({
      method: 'POST',
      url: '/users/me/password',
      remoteAddress: '198.51.100.9',
      headers: bearer,
      payload: { current_password: STRONG_PASSWORD, new_password: 'a brand new passphrase here' },
    });
    expect(changed.statusCode, changed.body).toBe(204);
    const fresh = await loginOk('203.0.113.77', 'a brand new passphrase here');
    await lockAccount(12);
    const newPassword = 'a brand new passphrase here';
    expectThrottled(await login('192.0.2.151', newPassword, { device_token: stolen.device_token }));
    expectThrottled(await login('198.51.100.9', newPassword));
    // The device that logged in after the change keeps its trust.
    await loginOk('192.0.2.152', newPassword, { device_token: fresh.device_token });

    const everywhere = await t.app.inject({
      method: 'POST',
      url: '/logout/all',
      remoteAddress: '203.0.113.77',
      headers: { authorization: `Bearer ${fresh.access_token}` },
    });
    expect(everywhere.statusCode).toBe(204);
    await lockAccount(13);
    expectThrottled(await login('192.0.2.153', newPassword, { device_token: fresh.device_token }));
    expectThrottled(await login('203.0.113.77', newPassword));
  });

  it('lets the victim in from a known device or address while an attacker is locked out, and after a password change (test 5)', async () => {
    await start();
    const phone = await loginOk('198.51.100.7');
    const laptop = await loginOk('203.0.113.50');
    expect(phone.device_token).toMatch(/^[A-Za-z0-9_-]{22}\.\d+\.[A-Za-z0-9_-]{43}$/);
    /** 200 attempts from one address, waiting out every lock shorter than an hour before the next. */
    const attack = async (from: string) => {
      let wait = 0;
      let verified = 0;
      for (let i = 0; i < 200; i += 1) {
        advanceSeconds(wait);
        wait = 0;
        const response = await login(from, `guess ${i}`);
        if (response.statusCode === 400) verified += 1;
        else {
          const retryAfter = expectThrottled(response);
          if (retryAfter <= 3600) wait = retryAfter;
        }
      }
      expect(verified).toBeGreaterThanOrEqual(10);
    };
    const lockedOut = async () => {
      const hashed = hasher.verifications();
      expectThrottled(await login('192.0.2.201', STRONG_PASSWORD));
      expectThrottled(await login('192.0.2.201', STRONG_PASSWORD, { device_token: 'not-a-device-token' }));
      expect(hasher.verifications()).toBe(hashed);
    };

    await attack('192.0.2.66');
    await lockedOut();
    // From yet another address, with the phone's device token: in at once, the token renewed for the same device.
    const withToken = await loginOk('192.0.2.200', STRONG_PASSWORD, { device_token: phone.device_token });
    expect(withToken.device_token.split('.')[0]).toBe(phone.device_token.split('.')[0]);

    // Its first address is now refused for the rest of the day (R4: 100 failures a day); it moves on to another.
    expectThrottled(await login('192.0.2.66', 'one more'));
    expect(events(t, 'login_throttled').at(-1)).toMatchObject({ rule: 'R4' });
    await attack('192.0.2.67');
    await lockedOut();
    // From the laptop's known address, without a token: in at once too.
    await loginOk('203.0.113.50');

    await attack('192.0.2.68');
    await lockedOut();
    const changed = await t.app.inject({
      method: 'POST',
      url: '/users/me/password',
      remoteAddress: '203.0.113.50',
      headers: { authorization: `Bearer ${laptop.access_token}` },
      payload: { current_password: STRONG_PASSWORD, new_password: NEW_PASSWORD },
    });
    expect(changed.statusCode, changed.body).toBe(204);
    await loginOk('192.0.2.201', NEW_PASSWORD);
  });

  it('keeps untrusted clients out after 100 failures once the locks have expired, until a trusted login (test 6)', async () => {
    await start();
    const phone = await loginOk('198.51.100.7');
    let verified = 0;
    for (let attempt = 0; verified < 100 && attempt < 2000; attempt += 1) {
      const response = await login(`192.0.2.${attempt % 200}`, `guess ${attempt}`);
      if (response.statusCode === 400) verified += 1;
      else advanceSeconds(Math.min(expectThrottled(response), 3600));
    }
    expect(verified).toBe(100);
    // Past R2's failure window too: R2, asked first, would otherwise answer with its own (shorter) lock.
    advanceSeconds(25 * 3600);
    const capped = await login('198.51.100.99', STRONG_PASSWORD);
    expect(expectThrottled(capped)).toBeGreaterThan(86400);
    expect(events(t, 'login_throttled').at(-1)).toMatchObject({ rule: 'R3', username: 'alice' });

    await loginOk('192.0.2.250', STRONG_PASSWORD, { device_token: phone.device_token });
    await loginOk('198.51.100.99');
  });

  it('refuses the 11th failure within a minute from one address across usernames, and no other address (test 7)', async () => {
    await start();
    for (let i = 0; i < 10; i += 1) {
      expect((await login('203.0.113.70', 'wrong', {}, `sprayed${i}`)).statusCode).toBe(400);
    }
    expectThrottled(await login('203.0.113.70', 'wrong', {}, 'sprayed10'), 600);
    expectThrottled(await login('203.0.113.70', STRONG_PASSWORD));
    expect((await login('203.0.113.71', 'wrong', {}, 'sprayed10')).statusCode).toBe(400);
    await loginOk('203.0.113.72');
    expect(events(t, 'login_throttled').at(-1)).toMatchObject({ rule: 'R4', ip: '203.0.113.70' });
  });

  it('counts the addresses of one IPv6 /64 as one client, and an IPv4-mapped address as its IPv4 address (test 8)', async () => {
    await start();
    for (let i = 1; i <= 5; i += 1) {
      expect((await login(`2001:db8:0:7::${i}`, 'wrong')).statusCode).toBe(400);
    }
    expectThrottled(await login('2001:db8:0:7:ffff:ffff:ffff:ffff', 'wrong'));
    expect((await login('2001:db8:0:8::1', 'wrong')).statusCode).toBe(400);
    await failTimes('203.0.113.80', 5, 'mallory');
    expectThrottled(await login('::ffff:203.0.113.80', 'wrong', {}, 'mallory'));
  });

  it('hands out a device token with each password login, takes it back as JSON too, and ignores a bad one', async () => {
    await start();
    const first = await loginOk('203.0.113.90');
    const again = await token(
      '203.0.113.91',
      {
        username: 'alice',
        password: STRONG_PASSWORD,
        device_token: first.device_token,
      },
      true,
    );
    expect(again.statusCode).toBe(200);
    expect(again.json().device_token.split('.')[0]).toBe(first.device_token.split('.')[0]);
    const forged = await loginOk('203.0.113.92', STRONG_PASSWORD, { device_token: `${first.device_token}x` });
    expect(forged.device_token.split('.')[0]).not.toBe(first.device_token.split('.')[0]);
    const refreshed = await token('203.0.113.90', {
      grant_type: 'refresh_token',
      refresh_token: first.refresh_token,
    });
    expect(refreshed.statusCode).toBe(200);
    expect(refreshed.json()).not.toHaveProperty('device_token');
    expect(t.logs.join('\n')).not.toContain(first.device_token);
  });

  it("refuses a device token issued to another user: bob's token does not trust bob's device for alice", async () => {
    await start();
    expect((await register('bob', '192.0.2.251')).statusCode).toBe(200);
    const bob = await token('203.0.113.95', { username: 'bob', password: STRONG_PASSWORD });
    const bobDevice = bob.json().device_token as string;
    // Ten failures for alice from ten addresses lock her account for untrusted clients.
    for (let i = 0; i < 10; i += 1) await failTimes(`198.51.100.${100 + i}`, 1);
    expectThrottled(await login('203.0.113.96', STRONG_PASSWORD, { device_token: bobDevice }), 900);
  });

  it('logs every refusal with its rule, username and address, and each failure with its reason', async () => {
    await start();
    await failTimes('203.0.113.100', 5);
    await login('203.0.113.100', 'locked', {}, 'alice');
    await login('203.0.113.101', 'wrong', {}, 'nobody-here');
    expect(events(t, 'login_throttled')).toEqual([
      expect.objectContaining({ rule: 'R1', username: 'alice', retryAfterSeconds: 30, ip: '203.0.113.100' }),
    ]);
    const failures = events(t, 'login_failed');
    const userId = failures[0]?.userId;
    expect(userId).toEqual(expect.any(Number));
    expect(failures.map(({ reason, userId: id }) => ({ reason, userId: id }))).toEqual([
      ...Array.from({ length: 5 }, () => ({ reason: 'wrong_password', userId })),
      { reason: 'locked', userId },
      { reason: 'unknown_user', userId: undefined },
    ]);
  });

  it('caps password grants per address at 30 a minute whatever their outcome (R5)', async () => {
    await start({ IP_FAILS_PER_MIN: '1000', LOGIN_FREE_FAILS: '1000', ACCOUNT_UNTRUSTED_FAILS: '1000' });
    for (let i = 0; i < 30; i += 1) expect((await login('203.0.113.110', `wrong ${i}`)).statusCode).toBe(400);
    const hashed = hasher.verifications();
    expectThrottled(await login('203.0.113.110', STRONG_PASSWORD), 60);
    expect(hasher.verifications()).toBe(hashed);
    expect(events(t, 'login_throttled').at(-1)).toMatchObject({ rule: 'R5', username: 'alice' });
    await loginOk('203.0.113.111');
  });

  it('refuses the 11th refresh of one session within a minute, and never counts refreshes as password grants (test 11)', async () => {
    await start({ TOKEN_PASSWORD_PER_IP: '2/60s' });
    const first = await loginOk('203.0.113.120');
    const other = await loginOk('203.0.113.120');
    expectThrottled(await login('203.0.113.120', STRONG_PASSWORD));
    let refreshToken = first.refresh_token;
    const refresh = (value: string) =>
      token('203.0.113.120', { grant_type: 'refresh_token', refresh_token: value });
    for (let i = 0; i < 10; i += 1) {
      const response = await refresh(refreshToken);
      expect(response.statusCode, response.body).toBe(200);
      refreshToken = response.json().refresh_token;
    }
    expectThrottled(await refresh(refreshToken), 60);
    expect((await refresh(other.refresh_token)).statusCode).toBe(200);
    advanceSeconds(60);
    expect((await refresh(refreshToken)).statusCode).toBe(200);
    expect(events(t, 'request_throttled')).toEqual([
      expect.objectContaining({ rule: 'R7', retryAfterSeconds: 60, ip: '203.0.113.120' }),
    ]);
  });

  it('caps refreshes per address apart from password grants (R7)', async () => {
    await start({ REFRESH_PER_IP: '3/300s' });
    const tokens = await Promise.all([1, 2, 3, 4].map(() => loginOk('203.0.113.130')));
    const refresh = (value: string, from = '203.0.113.131') =>
      token(from, { grant_type: 'refresh_token', refresh_token: value });
    for (const { refresh_token } of tokens.slice(0, 3))
      expect((await refresh(refresh_token)).statusCode).toBe(200);
    expectThrottled(await refresh(tokens[3]?.refresh_token ?? ''), 300);
    expect((await refresh(tokens[3]?.refresh_token ?? '', '203.0.113.132')).statusCode).toBe(200);
    await loginOk('203.0.113.131');
  });

  // A retry inside the reuse grace window mints nothing (it answers the family's live head), and a client told to
  // wait longer than the window would present a token spent past it: the family would be revoked as stolen.
  it('answers a retry inside the grace window past the per-session cap, with the live head, logging nothing throttled', async () => {
    await start();
    const first = await loginOk('203.0.113.150');
    const refresh = (value: string) =>
      token('203.0.113.150', { grant_type: 'refresh_token', refresh_token: value });
    let previous = first.refresh_token;
    let head = previous;
    for (let i = 0; i < 10; i += 1) {
      const response = await refresh(head);
      expect(response.statusCode, response.body).toBe(200);
      previous = head;
      head = response.json().refresh_token;
    }
    // The tenth answer was lost: the client sends its token again.
    const retry = await refresh(previous);
    expect(retry.statusCode, retry.body).toBe(200);
    expect(retry.json().refresh_token).toBe(head);
    expectThrottled(await refresh(head), 60);
    expect(events(t, 'request_throttled')).toHaveLength(1);
    advanceSeconds(60);
    expect((await refresh(head)).statusCode).toBe(200);
  });

  it('answers every one of 12 parallel refreshes of one token with one successor (none 429), round after round', async () => {
    await start();
    for (let round = 0; round < 3; round += 1) {
      const first = await loginOk('203.0.113.151');
      const answers = await Promise.all(
        Array.from({ length: 12 }, () =>
          token('203.0.113.151', { grant_type: 'refresh_token', refresh_token: first.refresh_token }),
        ),
      );
      expect(answers.map((answer) => answer.statusCode)).toEqual(Array(12).fill(200));
      expect(new Set(answers.map((answer) => answer.json().refresh_token)).size).toBe(1);
    }
    expect(events(t, 'request_throttled')).toEqual([]);
  });

  it('refuses past the per-address cap before the token is read: a spent token and a garbage one alike', async () => {
    await start({ REFRESH_PER_IP: '2/300s' });
    const first = await loginOk('203.0.113.152');
    const refresh = (value: string) =>
      token('203.0.113.152', { grant_type: 'refresh_token', refresh_token: value });
    const second = await refresh(first.refresh_token);
    expect(second.statusCode).toBe(200);
    const head = second.json().refresh_token;
    expect((await refresh(first.refresh_token)).json().refresh_token).toBe(head);
    expectThrottled(await refresh(first.refresh_token), 300);
    expectThrottled(await refresh('not a refresh token'), 300);
    advanceSeconds(300);
    expect((await refresh(head)).statusCode).toBe(200);
  });

  it('refuses the 4th registration from one address within 10 s with a FastAPI-shaped 429 (test 12)', async () => {
    await start();
    const newcomer = (n: number, from = '203.0.113.140') => register(`newcomer${n}`, from);
    for (let n = 1; n <= 3; n += 1) expect((await newcomer(n)).statusCode).toBe(200);
    const refused = await newcomer(4);
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    expect(refused.headers['retry-after']).toBe('10');
    expect(refused.headers['cache-control']).toBe('no-store');
    expect((await newcomer(5, '203.0.113.141')).statusCode).toBe(200);
    advanceSeconds(10);
    expect((await newcomer(6)).statusCode).toBe(200);
    expect(events(t, 'request_throttled')).toEqual([
      expect.objectContaining({ rule: 'R6', retryAfterSeconds: 10, ip: '203.0.113.140' }),
    ]);
  });

  // Checklist 21 / ASVS 6.3.8: a 409 tells that a username or email has an account. Besides R6 per address, the
  // sign-ups that met one taken identifier are capped per identifier (R15), from any address; free ones never are.
  it("answers 429 past R15's sign-ups an hour that met one taken username or email, from any address", async () => {
    await start({ REGISTER_PER_IP: '1000/10s', REGISTER_CONFLICTS_PER_IDENTIFIER: '5/3600s' });
    const signUp = (username: string, email: string, from: string) =>
      t.app.inject({
        method: 'POST',
        url: '/register/',
        remoteAddress: from,
        payload: registration({ username, email }),
      });
    for (let n = 1; n <= 5; n += 1) {
      const taken = await signUp(`prober${n}`, 'ALICE@example.com', `198.51.100.${n}`);
      expect(taken.statusCode).toBe(409);
      expect(taken.json().code).toBe('email_taken');
    }
    const refused = await signUp('prober6', 'alice@example.com', '198.51.100.6');
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(3000);
    expect(refused.headers['cache-control']).toBe('no-store');
    // The username is its own identifier: the address's cap does not touch it, and its own cap is the same. A
    // lookalike in another script is taken as the same name, and so counts as the same name: not five more.
    expect((await signUp('cope', 'cope@example.com', '192.0.2.251')).statusCode).toBe(200);
    for (let n = 7; n <= 11; n += 1) {
      expect((await signUp('COPE', `prober${n}@example.com`, `198.51.100.${n}`)).statusCode).toBe(409);
    }
    expect((await signUp('cope', 'prober12@example.com', '198.51.100.12')).statusCode).toBe(429);
    const cyrillic = '\u0441\u043e\u0440\u0435';
    expect((await signUp(cyrillic, 'prober13@example.com', '198.51.100.13')).statusCode).toBe(429);
    // A free identifier is never refused by it, from the same addresses.
    expect((await signUp('newcomer-free', 'free@example.com', '198.51.100.6')).statusCode).toBe(200);
    expect(events(t, 'request_throttled')).toEqual([
      expect.objectContaining({ rule: 'R15', ip: '198.51.100.6' }),
      expect.objectContaining({ rule: 'R15', ip: '198.51.100.12' }),
      expect.objectContaining({ rule: 'R15', ip: '198.51.100.13' }),
    ]);
    advanceSeconds(3600);
    expect((await signUp('prober14', 'alice@example.com', '198.51.100.14')).statusCode).toBe(409);
  });

  it('limits nothing and hands out no device token with RATE_LIMITS=off', async () => {
    await start({ RATE_LIMITS: 'off' });
    await failTimes('203.0.113.150', 20);
    const response = await loginOk('203.0.113.150');
    expect(response).not.toHaveProperty('device_token');
    for (let n = 0; n < 5; n += 1) expect((await register(`free${n}`, '203.0.113.150')).statusCode).toBe(200);
  });
});
