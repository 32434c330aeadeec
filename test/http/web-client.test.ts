import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTestApp,
  loginToken,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

// The account page's client: cookies instead of tokens in the JSON, and only from its own origin.
const WEB = { 'x-gatehouse-client': 'web', origin: 'http://localhost' };
const REFRESH = '__Host-gatehouse_refresh';
const DEVICE = '__Host-gatehouse_device';

interface SetCookie {
  name: string;
  value: string;
  attributes: Map<string, string>;
}

function setCookies(headers: Record<string, unknown>): SetCookie[] {
  const raw = headers['set-cookie'];
  const lines = raw === undefined ? [] : [raw].flat().map(String);
  return lines.map((line) => {
    const [pair = '', ...rest] = line.split(';').map((part) => part.trim());
    const at = pair.indexOf('=');
    const attributes = new Map(
      rest.map((part) => {
        const [key = '', value = ''] = part.split('=');
        return [key.toLowerCase(), value] as [string, string];
      }),
    );
    return { name: pair.slice(0, at), value: pair.slice(at + 1), attributes };
  });
}

const cookieNamed = (headers: Record<string, unknown>, name: string) =>
  setCookies(headers).find((cookie) => cookie.name === name);

describe.each(dialects)('the web client (cookie mode) on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { REFRESH_TOKEN_IDLE_TTL_SECONDS: '86400' } });
  });
  afterAll(async () => {
    await t.close();
  });

  let next = 0;
  const newUser = async () => {
    next += 1;
    const username = `web${next}`;
    await registerUser(t.app, { username, email: `${username}@example.com` });
    return username;
  };

  const webLogin = async (username: string, headers: Record<string, string> = WEB) =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      headers,
      payload: { grant_type: 'password', username, password: STRONG_PASSWORD },
    });

  const signIn = async (username: string) => {
    const response = await webLogin(username);
    expect(response.statusCode).toBe(200);
    const cookie = cookieNamed(response.headers, REFRESH);
    if (!cookie) throw new Error('no refresh cookie');
    return { accessToken: response.json().access_token as string, refresh: cookie.value };
  };

  const refreshWith = (cookie: string | undefined, headers: Record<string, string> = WEB, payload = {}) =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      headers: { ...headers, ...(cookie ? { cookie: `${REFRESH}=${cookie}` } : {}) },
      payload:
        headers['content-type'] === 'application/x-www-form-urlencoded'
          ? new URLSearchParams({ grant_type: 'refresh_token', ...payload }).toString()
          : { grant_type: 'refresh_token', ...payload },
    });

  it('puts the refresh token in an HttpOnly, Secure, SameSite=Strict __Host- cookie, never in the JSON', async () => {
    const response = await webLogin(await newUser());
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(typeof body.access_token).toBe('string');
    expect(body).not.toHaveProperty('refresh_token');
    expect(body).not.toHaveProperty('device_token');
    const cookie = cookieNamed(response.headers, REFRESH);
    expect(cookie?.value).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(cookie?.attributes.get('path')).toBe('/');
    expect(cookie?.attributes.has('httponly')).toBe(true);
    expect(cookie?.attributes.has('secure')).toBe(true);
    expect(cookie?.attributes.get('samesite')).toBe('Strict');
    expect(cookie?.attributes.get('max-age')).toBe('86400');
    expect(cookie?.attributes.has('domain')).toBe(false);
  });

  it('refreshes from the cookie alone and rotates it', async () => {
    const { refresh } = await signIn(await newUser());
    const response = await refreshWith(refresh);
    expect(response.statusCode).toBe(200);
    expect(response.json()).not.toHaveProperty('refresh_token');
    expect(typeof response.json().access_token).toBe('string');
    const rotated = cookieNamed(response.headers, REFRESH);
    expect(rotated?.value).toMatch(/\./);
    expect(rotated?.value).not.toBe(refresh);
    expect((await refreshWith(rotated?.value)).statusCode).toBe(200);
  });

  it('accepts Sec-Fetch-Site: same-origin in place of an Origin header', async () => {
    const { refresh } = await signIn(await newUser());
    const response = await refreshWith(refresh, {
      'x-gatehouse-client': 'web',
      'sec-fetch-site': 'same-origin',
    });
    expect(response.statusCode).toBe(200);
  });

  it('answers 400 invalid_request for the web client without a cookie', async () => {
    const response = await refreshWith(undefined);
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  // Found from outside: the body's token went unread while the cookie's was used, a parameter resolved silently where
  // every other duplicate (RFC 6749 §3.2) is refused.
  it('refuses a refresh token in the body beside the cookie: 400 invalid_request, and spends neither', async () => {
    const { refresh } = await signIn(await newUser());
    const other = await signIn(await newUser());
    const response = await refreshWith(refresh, WEB, { refresh_token: other.refresh });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
    expect(cookieNamed(response.headers, REFRESH)).toBeUndefined();
    expect((await refreshWith(refresh)).statusCode).toBe(200);
    expect((await refreshWith(other.refresh)).statusCode).toBe(200);
  });

  it('clears the cookie when the refresh token it holds is refused', async () => {
    const response = await refreshWith('unknown.token');
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_grant');
    expect(cookieNamed(response.headers, REFRESH)?.attributes.get('max-age')).toBe('0');
  });

  it('lets a GET with the header through without Origin (browsers send none on a same-origin GET)', async () => {
    const { accessToken } = await signIn(await newUser());
    const response = await t.app.inject({
      method: 'GET',
      url: '/users/me',
      headers: { authorization: `Bearer ${accessToken}`, 'x-gatehouse-client': 'web' },
    });
    expect(response.statusCode).toBe(200);
  });

  describe('refuses cross-site requests with 403 and changes nothing', () => {
    const refused = async (headers: Record<string, string>) => {
      const { refresh } = await signIn(await newUser());
      const response = await refreshWith(refresh, headers);
      expect(response.statusCode).toBe(403);
      expect(response.json().error).toBe('invalid_request');
      expect(response.headers['set-cookie']).toBeUndefined();
      // The token was not spent: the page's own next refresh rotates it (a spent one would end the session).
      const own = await refreshWith(refresh);
      expect(own.statusCode).toBe(200);
      expect(cookieNamed(own.headers, REFRESH)?.value).not.toBe(refresh);
    };

    it('another Origin with the header', () =>
      refused({ 'x-gatehouse-client': 'web', origin: 'https://evil.example' }));
    it('the right host under another scheme', () =>
      refused({ 'x-gatehouse-client': 'web', origin: 'https://localhost' }));
    it('an Origin of "null" (a sandboxed frame)', () =>
      refused({ 'x-gatehouse-client': 'web', origin: 'null' }));
    it('Sec-Fetch-Site: cross-site, whatever the Origin says', () =>
      refused({ ...WEB, 'sec-fetch-site': 'cross-site' }));
    it('Sec-Fetch-Site: same-site (a sibling subdomain)', () =>
      refused({ 'x-gatehouse-client': 'web', 'sec-fetch-site': 'same-site' }));
    it('neither Origin nor Sec-Fetch-Site', () => refused({ 'x-gatehouse-client': 'web' }));
    it('the cookie without the header (a cross-site form post)', () =>
      refused({ origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' }));
    it('the cookie without the header, even from the same origin', () =>
      refused({ origin: 'http://localhost' }));

    it('a sign-out (Bearer and header) from another origin: the session stays live', async () => {
      const { accessToken, refresh } = await signIn(await newUser());
      const response = await t.app.inject({
        method: 'POST',
        url: '/logout',
        headers: {
          authorization: `Bearer ${accessToken}`,
          'x-gatehouse-client': 'web',
          origin: 'https://evil.example',
          cookie: `${REFRESH}=${refresh}`,
        },
      });
      expect(response.statusCode).toBe(403);
      expect(response.json()).toEqual({ detail: 'Cross-site request refused' });
      expect(response.headers['set-cookie']).toBeUndefined();
      expect((await refreshWith(refresh)).statusCode).toBe(200);
    });

    it('a web sign-in from another origin sets no cookie and opens no session', async () => {
      const username = await newUser();
      const response = await webLogin(username, {
        'x-gatehouse-client': 'web',
        origin: 'https://evil.example',
      });
      expect(response.statusCode).toBe(403);
      expect(response.headers['set-cookie']).toBeUndefined();
      const accessToken = await loginToken(t.app, username);
      const sessions = await t.app.inject({
        method: 'GET',
        url: '/users/me/sessions',
        headers: { authorization: `Bearer ${accessToken}` },
      });
      expect(sessions.json().sessions).toHaveLength(1);
    });
  });

  describe('sign-out clears the cookie and ends the session', () => {
    const signOut = async (method: string, url: string, payload?: object) => {
      const { accessToken, refresh } = await signIn(await newUser());
      const response = await t.app.inject({
        method: method as 'POST',
        url,
        headers: { ...WEB, authorization: `Bearer ${accessToken}` },
        ...(payload ? { payload } : {}),
      });
      expect(response.statusCode).toBe(204);
      const cleared = cookieNamed(response.headers, REFRESH);
      expect(cleared?.value).toBe('');
      expect(cleared?.attributes.get('max-age')).toBe('0');
      expect(cleared?.attributes.get('path')).toBe('/');
      expect(cleared?.attributes.has('secure')).toBe(true);
      expect((await refreshWith(refresh)).statusCode).toBe(400);
      return response;
    };

    // Found from outside: a tab still showing the first account signed out after another tab had signed in a second,
    // and the cookie, the second's, went with it while its session lived on with nothing holding its token.
    it.each([
      ['POST', '/logout'],
      ['POST', '/logout/all'],
      ['DELETE', '/users/me'],
    ])(
      '%s %s keeps a cookie that another live session holds now, and ends only its own',
      async (method, url) => {
        const first = await signIn(await newUser());
        const second = await signIn(await newUser());
        const response = await t.app.inject({
          method: method as 'POST',
          url,
          headers: {
            ...WEB,
            authorization: `Bearer ${first.accessToken}`,
            cookie: `${REFRESH}=${second.refresh}`,
          },
          ...(method === 'DELETE' ? { payload: { password: STRONG_PASSWORD } } : {}),
        });
        expect(response.statusCode).toBe(204);
        expect(cookieNamed(response.headers, REFRESH)).toBeUndefined();
        const me = await t.app.inject({
          method: 'GET',
          url: '/users/me',
          headers: { authorization: `Bearer ${first.accessToken}` },
        });
        expect(me.statusCode).toBe(401);
        expect((await refreshWith(second.refresh)).statusCode).toBe(200);
      },
    );

    it('clears a cookie whose session the sign-out ended, or that names none', async () => {
      const { accessToken, refresh } = await signIn(await newUser());
      const own = await t.app.inject({
        method: 'POST',
        url: '/logout',
        headers: { ...WEB, authorization: `Bearer ${accessToken}`, cookie: `${REFRESH}=${refresh}` },
      });
      expect(cookieNamed(own.headers, REFRESH)?.attributes.get('max-age')).toBe('0');
      const other = await signIn(await newUser());
      const stale = await t.app.inject({
        method: 'POST',
        url: '/logout',
        headers: { ...WEB, authorization: `Bearer ${other.accessToken}`, cookie: `${REFRESH}=${refresh}` },
      });
      expect(cookieNamed(stale.headers, REFRESH)?.attributes.get('max-age')).toBe('0');
    });

    it('POST /logout', () => signOut('POST', '/logout'));
    it('POST /logout/all', () => signOut('POST', '/logout/all'));
    it('DELETE /users/me clears the device cookie too', async () => {
      const response = await signOut('DELETE', '/users/me', { password: STRONG_PASSWORD });
      expect(cookieNamed(response.headers, DEVICE)?.attributes.get('max-age')).toBe('0');
    });
  });

  describe('API clients keep the JSON token flow', () => {
    it('gets refresh_token in the JSON and no cookie without the header', async () => {
      const username = await newUser();
      const response = await t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { username, password: STRONG_PASSWORD },
      });
      expect(response.statusCode).toBe(200);
      expect(typeof response.json().refresh_token).toBe('string');
      expect(response.headers['set-cookie']).toBeUndefined();
    });

    it('refreshes with refresh_token in the body, a stray cookie notwithstanding', async () => {
      const username = await newUser();
      const login = await t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { username, password: STRONG_PASSWORD },
      });
      const response = await t.app.inject({
        method: 'POST',
        url: '/token',
        headers: { cookie: `${REFRESH}=stray.value` },
        payload: { grant_type: 'refresh_token', refresh_token: login.json().refresh_token },
      });
      expect(response.statusCode).toBe(200);
      expect(typeof response.json().refresh_token).toBe('string');
      expect(response.headers['set-cookie']).toBeUndefined();
    });

    it('signs out with a Bearer token and no header, no cookie touched', async () => {
      const accessToken = await loginToken(t.app, await newUser());
      const response = await t.app.inject({
        method: 'POST',
        url: '/logout',
        headers: { authorization: `Bearer ${accessToken}` },
      });
      expect(response.statusCode).toBe(204);
      expect(response.headers['set-cookie']).toBeUndefined();
    });
  });
});

describe('the cookie names and flags follow the scheme and host', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp('sqlite', { env: { TRUST_PROXY: 'loopback' } });
    await registerUser(t.app, { username: 'host', email: 'host@example.com' });
  });
  afterAll(async () => {
    await t.close();
  });

  const login = (headers: Record<string, string>, remoteAddress = '192.0.2.10') =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress,
      headers: { 'x-gatehouse-client': 'web', ...headers },
      payload: { username: 'host', password: STRONG_PASSWORD },
    });

  it('over plain HTTP on another host: gatehouse_refresh without Secure (browsers refuse Secure there)', async () => {
    const response = await login({
      host: 'gatehouse.internal:3000',
      origin: 'http://gatehouse.internal:3000',
    });
    expect(response.statusCode).toBe(200);
    expect(cookieNamed(response.headers, REFRESH)).toBeUndefined();
    const cookie = cookieNamed(response.headers, 'gatehouse_refresh');
    expect(cookie?.attributes.has('secure')).toBe(false);
    expect(cookie?.attributes.has('httponly')).toBe(true);
    expect(cookie?.attributes.get('samesite')).toBe('Strict');
    const refreshed = await t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: '192.0.2.10',
      headers: {
        'x-gatehouse-client': 'web',
        host: 'gatehouse.internal:3000',
        origin: 'http://gatehouse.internal:3000',
        cookie: `gatehouse_refresh=${cookie?.value}`,
      },
      payload: { grant_type: 'refresh_token' },
    });
    expect(refreshed.statusCode).toBe(200);
  });

  it('warns once when an untrusted peer says X-Forwarded-Proto: the proxy is missing from TRUST_PROXY', async () => {
    const untrusted = () =>
      login({ host: 'auth.example', 'x-forwarded-proto': 'https', origin: 'http://auth.example' });
    expect((await untrusted()).statusCode).toBe(200);
    expect((await untrusted()).statusCode).toBe(200);
    const warnings = t.logs.filter((line) => line.includes('X-Forwarded-Proto came from a peer TRUST_PROXY'));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0] as string).level).toBe(40);
  });

  it('over HTTPS (a trusted proxy says so): the __Host- cookie, Secure', async () => {
    const response = await login(
      { host: 'auth.example', 'x-forwarded-proto': 'https', origin: 'https://auth.example' },
      '127.0.0.1',
    );
    expect(response.statusCode).toBe(200);
    expect(cookieNamed(response.headers, REFRESH)?.attributes.has('secure')).toBe(true);
  });

  it('over HTTPS, reads no unprefixed cookie (one a sibling host could have planted)', async () => {
    const first = await login({ host: 'gatehouse.internal', origin: 'http://gatehouse.internal' });
    const planted = cookieNamed(first.headers, 'gatehouse_refresh')?.value;
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: '127.0.0.1',
      headers: {
        'x-gatehouse-client': 'web',
        host: 'auth.example',
        'x-forwarded-proto': 'https',
        origin: 'https://auth.example',
        cookie: `gatehouse_refresh=${planted}`,
      },
      payload: { grant_type: 'refresh_token' },
    });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  it('on 127.0.0.1 and [::1] (loopback, as browsers treat localhost): the __Host- cookie', async () => {
    for (const host of ['127.0.0.1:8000', '[::1]:8000', 'app.localhost']) {
      const response = await login({ host, origin: `http://${host}` });
      expect(response.statusCode, host).toBe(200);
      expect(cookieNamed(response.headers, REFRESH)?.attributes.has('secure'), host).toBe(true);
    }
  });
});

describe('the device token of throttling, for the web client', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp('sqlite', { env: { RATE_LIMITS: 'on', DEVICE_TOKEN_TTL_DAYS: '90' } });
    await registerUser(t.app, { username: 'device', email: 'device@example.com' });
  });
  afterAll(async () => {
    await t.close();
  });

  const login = (cookie?: string) =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      headers: { ...WEB, ...(cookie ? { cookie: `${DEVICE}=${cookie}` } : {}) },
      payload: { username: 'device', password: STRONG_PASSWORD },
    });

  it('lives in an HttpOnly __Host- cookie, and the next login sends it back and keeps the device', async () => {
    const first = await login();
    expect(first.statusCode).toBe(200);
    expect(first.json()).not.toHaveProperty('device_token');
    const device = cookieNamed(first.headers, DEVICE);
    expect(device?.value).toMatch(/^[A-Za-z0-9_-]{22}\.\d+\.[A-Za-z0-9_-]{43}$/);
    expect(device?.attributes.has('httponly')).toBe(true);
    expect(device?.attributes.has('secure')).toBe(true);
    expect(device?.attributes.get('samesite')).toBe('Strict');
    expect(device?.attributes.get('path')).toBe('/');
    expect(device?.attributes.get('max-age')).toBe(String(90 * 86400));

    const second = await login(device?.value);
    expect(second.statusCode).toBe(200);
    const renewed = cookieNamed(second.headers, DEVICE);
    expect(renewed?.value.split('.')[0]).toBe(device?.value.split('.')[0]);
  });

  it('is kept when the user signs out: the browser stays a known client', async () => {
    const signedIn = await login();
    const response = await t.app.inject({
      method: 'POST',
      url: '/logout',
      headers: { ...WEB, authorization: `Bearer ${signedIn.json().access_token}` },
    });
    expect(response.statusCode).toBe(204);
    expect(cookieNamed(response.headers, DEVICE)).toBeUndefined();
  });
});
