import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, loginToken, registerUser, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

const APP = 'https://app.example.com';
const OTHER = 'https://evil.example.net';

const corsHeadersOf = (headers: Record<string, unknown>) =>
  Object.keys(headers).filter((name) => name.startsWith('access-control-'));

const preflight = (origin: string, method = 'POST', requestHeaders = 'content-type') => ({
  method: 'OPTIONS' as const,
  url: '/token',
  headers: {
    origin,
    'access-control-request-method': method,
    'access-control-request-headers': requestHeaders,
  },
});

describe.each(dialects)('CORS switched off (the default) on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  it('sends no CORS header to any origin', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/healthz', headers: { origin: APP } });
    expect(response.statusCode).toBe(200);
    expect(corsHeadersOf(response.headers)).toEqual([]);
  });

  it('answers a preflight as an OPTIONS request on a path without it: 405, no CORS header', async () => {
    const response = await t.app.inject(preflight(APP));
    expect(response.statusCode).toBe(405);
    expect(corsHeadersOf(response.headers)).toEqual([]);
    expect(response.json()).toEqual({ detail: 'Method Not Allowed' });
    // RFC 6749 §5.1: whatever answers on the token endpoint.
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers.pragma).toBe('no-cache');
  });
});

describe.each(dialects)('CORS for listed origins on %s', (dialect) => {
  let t: TestApp;
  let token: string;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { CORS_ORIGINS: `${APP},http://localhost:5173` } });
    await registerUser(t.app);
    token = await loginToken(t.app);
  });
  afterAll(async () => {
    await t.close();
  });

  it('lets a listed origin read a response, without credentials, and says the answer varies by origin', async () => {
    const response = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { origin: APP, authorization: `Bearer ${token}` },
    });
    expect(response.statusCode).toBe(200);
    expect(response.headers['access-control-allow-origin']).toBe(APP);
    expect(response.headers['access-control-allow-credentials']).toBeUndefined();
    expect(String(response.headers.vary)).toMatch(/\bOrigin\b/i);
  });

  it('lets a listed origin read error answers and the headers a client needs to act on them', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/conversation', headers: { origin: APP } });
    expect(response.statusCode).toBe(401);
    expect(response.headers['access-control-allow-origin']).toBe(APP);
    const exposed = String(response.headers['access-control-expose-headers']).toLowerCase().split(/,\s*/);
    expect(exposed).toEqual(expect.arrayContaining(['www-authenticate', 'retry-after', 'x-request-id']));
  });

  it('sends no CORS header to an origin that is not listed, nor to one that differs by scheme or port', async () => {
    for (const origin of [OTHER, 'http://app.example.com', 'https://app.example.com:8443', 'null']) {
      const response = await t.app.inject({ method: 'GET', url: '/healthz', headers: { origin } });
      expect(response.statusCode, origin).toBe(200);
      expect(corsHeadersOf(response.headers), origin).toEqual([]);
      expect(String(response.headers.vary), origin).toMatch(/\bOrigin\b/i);
    }
  });

  it('answers a preflight from a listed origin with 204, the methods, and only Authorization and Content-Type', async () => {
    const response = await t.app.inject(preflight(APP, 'POST', 'authorization, content-type'));
    expect(response.statusCode).toBe(204);
    expect(response.body).toBe('');
    expect(response.headers['access-control-allow-origin']).toBe(APP);
    expect(response.headers['access-control-allow-credentials']).toBeUndefined();
    const methods = String(response.headers['access-control-allow-methods']).split(/,\s*/);
    expect(methods.sort()).toEqual(['DELETE', 'GET', 'PATCH', 'POST']);
    expect(String(response.headers['access-control-allow-headers']).toLowerCase()).toBe(
      'authorization, content-type',
    );
    expect(Number(response.headers['access-control-max-age'])).toBeGreaterThan(0);
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    // RFC 6749 §5.1: whatever answers on the token endpoint.
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers.pragma).toBe('no-cache');
  });

  it('answers a preflight from an origin that is not listed without any CORS header', async () => {
    const response = await t.app.inject(preflight(OTHER));
    expect(response.statusCode).toBe(405);
    expect(corsHeadersOf(response.headers)).toEqual([]);
    expect(response.headers.pragma).toBe('no-cache');
  });

  it('answers a plain OPTIONS request (no preflight headers) as before: 405 with Allow, in the error shape', async () => {
    const response = await t.app.inject({ method: 'OPTIONS', url: '/register/', headers: { origin: APP } });
    expect(response.statusCode).toBe(405);
    expect(response.headers.allow).toBe('POST');
    expect(response.json()).toEqual({ detail: 'Method Not Allowed' });
  });

  it('still answers an unknown path 404 and a wrong method 405 without OPTIONS in Allow', async () => {
    const unknown = await t.app.inject({ method: 'GET', url: '/nowhere', headers: { origin: APP } });
    expect(unknown.statusCode).toBe(404);
    const wrong = await t.app.inject({ method: 'PUT', url: '/register/' });
    expect(wrong.statusCode).toBe(405);
    expect(wrong.headers.allow).toBe('POST');
  });
});
