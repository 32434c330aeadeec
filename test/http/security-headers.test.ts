import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, loginToken, registerUser, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { PARSER_REFUSALS, parseRawAnswer, rawExchange } from '../support/raw-exchange.ts';

const API_POLICY = "default-src 'none';frame-ancestors 'none'";

// Every response carries these, whatever answered it: a route, a hook, the error table, or the code that writes
// what Node's parser refuses straight to the socket.
const SECURITY_HEADERS = {
  'strict-transport-security': 'max-age=31536000',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'origin-agent-cluster': '?1',
  'x-dns-prefetch-control': 'off',
  'x-download-options': 'noopen',
  'x-permitted-cross-domain-policies': 'none',
  'x-xss-protection': '0',
};

type Headers = Record<string, unknown>;

function expectSecurityHeaders(headers: Headers, policy: string, what: string) {
  expect(headers, what).toMatchObject({ ...SECURITY_HEADERS, 'content-security-policy': policy });
  expect(headers['x-request-id'], what).toMatch(/^[0-9a-f-]{36}$/);
  expect(headers['x-powered-by'], what).toBeUndefined();
  expect(headers.server, what).toBeUndefined();
}

function directivesOf(policy: string): Map<string, string[]> {
  return new Map(
    policy
      .split(';')
      .map((directive) => directive.trim().split(/\s+/))
      .filter(([name]) => name)
      .map(([name = '', ...sources]) => [name, sources.sort()]),
  );
}

async function exchange(port: number, request: string) {
  const { statusLine, headers } = parseRawAnswer(await rawExchange(port, request));
  return { status: Number(statusLine.split(' ')[1]), headers };
}

describe.each(dialects)('security headers on %s', (dialect) => {
  let t: TestApp;
  let port: number;
  let token: string;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
    await registerUser(t.app);
    token = await loginToken(t.app);
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    port = (t.app.server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await t.close();
  });

  it('sends the strict API policy and the full header set on a 200 JSON answer', async () => {
    for (const url of ['/healthz', '/.well-known/jwks.json', '/openapi.json']) {
      const response = await t.app.inject({ method: 'GET', url });
      expect(response.statusCode, url).toBe(200);
      expectSecurityHeaders(response.headers, API_POLICY, url);
      // Public keys are meant to be cached; nothing else is.
      expect(response.headers['cache-control'], url).toBe(
        url === '/.well-known/jwks.json' ? 'public, max-age=300' : 'no-store',
      );
    }
    const conversation = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(conversation.statusCode).toBe(200);
    expectSecurityHeaders(conversation.headers, API_POLICY, 'GET /conversation');
    expect(conversation.headers['cache-control']).toBe('no-store');
  });

  it('sends the same headers on 401, 404, 405, 413 and 422 answers', async () => {
    const cases = [
      { method: 'GET', url: '/conversation', status: 401 },
      { method: 'GET', url: '/conversation', headers: { authorization: 'Bearer x.y.z' }, status: 401 },
      { method: 'GET', url: '/nowhere', status: 404 },
      { method: 'PUT', url: '/register/', status: 405 },
      { method: 'POST', url: '/register/', payload: { padding: 'x'.repeat(20_000) }, status: 413 },
      { method: 'POST', url: '/register/', payload: { username: 'a' }, status: 422 },
      { method: 'POST', url: '/token', payload: 'username=alice', status: 400 },
    ] as const;
    for (const { status, ...request } of cases) {
      const response = await t.app.inject(request);
      const what = `${request.method} ${request.url} → ${status}`;
      expect(response.statusCode, what).toBe(status);
      expectSecurityHeaders(response.headers, API_POLICY, what);
      expect(response.headers['cache-control'], what).toBe('no-store');
    }
  });

  it('sends the same headers on errors raised before routing (an undecodable path)', async () => {
    const response = await exchange(port, 'GET /%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(response.status).toBe(404);
    expectSecurityHeaders(response.headers, API_POLICY, '/%zz');
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('sends the same headers when the HTTP parser refuses the request and the answer is written by hand', async () => {
    for (const [request, status] of PARSER_REFUSALS) {
      const response = await exchange(port, request);
      expect(response.status, request.slice(0, 20)).toBe(status);
      expectSecurityHeaders(response.headers, API_POLICY, request.slice(0, 20));
      expect(response.headers['cache-control']).toBe('no-store');
    }
  });

  it('sends the same headers, with the documentation policy, on the /docs page and its assets', async () => {
    for (const url of ['/docs', '/docs/static/swagger-initializer.js', '/docs/static/swagger-ui-bundle.js']) {
      const response = await t.app.inject({ method: 'GET', url });
      expect(response.statusCode, url).toBe(200);
      const policy = String(response.headers['content-security-policy']);
      expectSecurityHeaders(response.headers, policy, url);
      const directives = directivesOf(policy);
      expect(directives.get('default-src'), url).toEqual(["'self'"]);
      expect(directives.get('script-src'), url).toEqual(["'self'"]);
      expect(directives.get('frame-ancestors'), url).toEqual(["'none'"]);
      expect(directives.get('object-src'), url).toEqual(["'none'"]);
      // Plain HTTP off localhost must still load the page, and no third party learns where the document lives.
      expect(directives.has('upgrade-insecure-requests'), url).toBe(false);
      expect(directives.get('img-src'), url).toEqual(["'self'", 'data:']);
    }
    const page = await t.app.inject({ method: 'GET', url: '/docs' });
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    const script = await t.app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
    expect(script.headers['content-type']).toMatch(/^application\/javascript/);
  });

  it('gives the OpenAPI document under /docs, as JSON and as YAML, the API policy: it is data, not a page', async () => {
    for (const url of ['/docs/json', '/docs/yaml']) {
      const response = await t.app.inject({ method: 'GET', url });
      expect(response.statusCode, url).toBe(200);
      expect(response.headers['content-type'], url).toMatch(/^application\/(json|x-yaml)/);
      expectSecurityHeaders(response.headers, API_POLICY, url);
    }
  });

  it('answers a missing documentation asset with the API policy, as any other 404', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/docs/static/missing.js' });
    expect(response.statusCode).toBe(404);
    expectSecurityHeaders(response.headers, API_POLICY, '/docs/static/missing.js');
    expect(response.headers['content-type']).toMatch(/^application\/json/);
  });
});
