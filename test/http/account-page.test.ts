import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../support/build-test-app.ts';

const API_POLICY = "default-src 'none';frame-ancestors 'none'";

function directivesOf(policy: string): Map<string, string[]> {
  return new Map(
    policy
      .split(';')
      .map((directive) => directive.trim().split(/\s+/))
      .filter(([name]) => name)
      .map(([name = '', ...sources]) => [name, sources]),
  );
}

describe('the account page at /', () => {
  let t: TestApp;
  let directory: string;
  beforeAll(async () => {
    directory = mkdtempSync(path.join(os.tmpdir(), 'gatehouse-page-'));
    mkdirSync(path.join(directory, 'assets'));
    writeFileSync(
      path.join(directory, 'index.html'),
      '<!doctype html><title>Gatehouse</title><script type="module" src="/assets/index-abc123.js"></script>',
    );
    writeFileSync(path.join(directory, 'assets', 'index-abc123.js'), 'console.log("page")');
    writeFileSync(path.join(directory, 'assets', 'index-def456.css'), 'body{}');
    mkdirSync(path.join(directory, 'account'));
    for (const name of ['verify-email', 'reset-password']) {
      writeFileSync(
        path.join(directory, 'account', `${name}.html`),
        `<!doctype html><title>${name} · Gatehouse</title><script type="module" src="/assets/${name}-abc123.js"></script>`,
      );
    }
    t = await buildTestApp('sqlite', { accountPageDirectory: directory });
  });
  afterAll(async () => {
    await t.close();
    rmSync(directory, { recursive: true, force: true });
  });

  it('serves index.html under a policy that allows no inline script, no inline style and no framing', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/html/);
    expect(response.body).toContain('<title>Gatehouse</title>');
    const policy = directivesOf(String(response.headers['content-security-policy']));
    expect(policy.get('default-src')).toEqual(["'none'"]);
    expect(policy.get('script-src')).toEqual(["'self'"]);
    expect(policy.get('script-src-attr')).toEqual(["'none'"]);
    expect(policy.get('style-src')).toEqual(["'self'"]);
    expect(policy.get('connect-src')).toEqual(["'self'"]);
    expect(policy.get('frame-ancestors')).toEqual(["'none'"]);
    expect(policy.get('base-uri')).toEqual(["'none'"]);
    expect(policy.get('form-action')).toEqual(["'self'"]);
    expect(policy.get('object-src')).toEqual(["'none'"]);
    expect(policy.get('require-trusted-types-for')).toEqual(["'script'"]);
    expect(response.headers['x-frame-options']).toBe('DENY');
    expect(response.headers['referrer-policy']).toBe('no-referrer');
    expect(response.headers['cache-control']).toBe('no-cache');
  });

  for (const name of ['verify-email', 'reset-password']) {
    it(`serves /account/${name} under the page policy, revalidated, never framed and never sending a referrer`, async () => {
      const response = await t.app.inject({ method: 'GET', url: `/account/${name}` });
      expect(response.statusCode).toBe(200);
      expect(response.headers['content-type']).toMatch(/^text\/html/);
      expect(response.body).toContain(`<title>${name} · Gatehouse</title>`);
      const policy = directivesOf(String(response.headers['content-security-policy']));
      expect(policy.get('default-src')).toEqual(["'none'"]);
      expect(policy.get('script-src')).toEqual(["'self'"]);
      expect(policy.get('style-src')).toEqual(["'self'"]);
      expect(policy.get('connect-src')).toEqual(["'self'"]);
      expect(policy.get('frame-ancestors')).toEqual(["'none'"]);
      expect(policy.get('form-action')).toEqual(["'self'"]);
      expect(policy.get('require-trusted-types-for')).toEqual(["'script'"]);
      expect(response.headers['x-frame-options']).toBe('DENY');
      expect(response.headers['x-content-type-options']).toBe('nosniff');
      // The page's own URL held a token until its script removed it: no request may carry it as a Referer.
      expect(response.headers['referrer-policy']).toBe('no-referrer');
      expect(response.headers['cache-control']).toBe('no-cache');
    });

    it(`answers HEAD /account/${name} like GET, without a body`, async () => {
      const response = await t.app.inject({ method: 'HEAD', url: `/account/${name}` });
      expect(response.statusCode).toBe(200);
      expect(response.headers['content-type']).toMatch(/^text\/html/);
      expect(response.headers['cache-control']).toBe('no-cache');
      expect(response.body).toBe('');
    });

    it(`serves /account/${name} only at that path: the built file's own name is the API's 404`, async () => {
      for (const url of [`/account/${name}.html`, `/${name}`, `/account/`]) {
        const response = await t.app.inject({ method: 'GET', url });
        expect(response.statusCode, url).toBe(404);
        expect(response.headers['content-security-policy'], url).toBe(API_POLICY);
      }
      // With a trailing slash, the page's own path (307, as Starlette answers; the fragment stays with the browser).
      const slashed = await t.app.inject({ method: 'GET', url: `/account/${name}/` });
      expect(slashed.statusCode).toBe(307);
      expect(slashed.headers.location).toBe(`/account/${name}`);
    });
  }

  it('ignores a query string on the pages, which carry their token in the fragment', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/account/reset-password?utm_source=mail' });
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain('<title>reset-password · Gatehouse</title>');
  });

  it('serves the hashed assets for a year, immutable, under the page policy', async () => {
    const script = await t.app.inject({ method: 'GET', url: '/assets/index-abc123.js' });
    expect(script.statusCode).toBe(200);
    expect(script.headers['content-type']).toMatch(/javascript/);
    expect(script.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(script.headers['x-content-type-options']).toBe('nosniff');
    const style = await t.app.inject({ method: 'GET', url: '/assets/index-def456.css' });
    expect(style.headers['content-type']).toMatch(/^text\/css/);
  });

  it('caches an asset asked for by a percent-encoded path as the same asset', async () => {
    const script = await t.app.inject({ method: 'GET', url: '/%61ssets/index-abc123.js' });
    expect(script.statusCode).toBe(200);
    expect(script.headers['cache-control']).toBe('public, max-age=31536000, immutable');
  });

  it('leaves every other path to the API: 404 in JSON under the API policy, no-store', async () => {
    for (const url of [
      '/assets/missing.js',
      '/nope',
      '/package.json',
      '/assets/..%2f..%2fpackage.json',
      '/%2e%2e/package.json',
    ]) {
      const response = await t.app.inject({ method: 'GET', url });
      expect(response.statusCode, url).toBe(404);
      expect(response.json(), url).toEqual({ detail: 'Not Found' });
      expect(response.headers['content-security-policy'], url).toBe(API_POLICY);
      expect(response.headers['cache-control'], url).toBe('no-store');
    }
  });

  // RFC 9110 §13.1.1 and §14.1.1: the page exists, so a failed precondition is 412 and an unsatisfiable range 416 with
  // the representation's length, not the 404 of a missing file.
  it('answers a failed precondition on / with 412 and an unsatisfiable range with 416 and Content-Range', async () => {
    const length = (await t.app.inject({ method: 'GET', url: '/' })).body.length;
    for (const headers of [
      { 'if-match': '"nope"' },
      { 'if-unmodified-since': 'Mon, 01 Jan 2001 00:00:00 GMT' },
    ]) {
      const response = await t.app.inject({ method: 'GET', url: '/', headers });
      expect(response.statusCode, JSON.stringify(headers)).toBe(412);
      expect(response.json()).toEqual({ detail: expect.stringMatching(/^Precondition Failed/) });
    }
    // Strong comparison (§13.1.1): the page's own tag is weak, so it does not match either.
    const etag = String((await t.app.inject({ method: 'GET', url: '/' })).headers.etag);
    expect(etag).toMatch(/^W\//);
    const own = await t.app.inject({ method: 'GET', url: '/', headers: { 'if-match': etag } });
    expect(own.statusCode).toBe(412);
    expect((await t.app.inject({ method: 'GET', url: '/', headers: { 'if-match': '*' } })).statusCode).toBe(
      200,
    );
    const range = await t.app.inject({ method: 'GET', url: '/', headers: { range: 'bytes=99999-' } });
    expect(range.statusCode).toBe(416);
    expect(range.headers['content-range']).toBe(`bytes */${length}`);
    expect(range.json()).toEqual({ detail: 'Range Not Satisfiable' });
  });

  it('answers 405 with Allow for a POST to /', async () => {
    const response = await t.app.inject({ method: 'POST', url: '/' });
    expect(response.statusCode).toBe(405);
    expect(String(response.headers.allow)).toContain('GET');
  });

  it('keeps the API routes and their policy', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/healthz' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-security-policy']).toBe(API_POLICY);
  });
});

describe('the account page before it is built', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp('sqlite', {
      accountPageDirectory: path.join(os.tmpdir(), 'gatehouse-no-such-build'),
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('answers / with how to build it, and the server runs', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/' });
    expect(response.statusCode).toBe(503);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    expect(response.body).toContain('npm run build:web');
    expect(t.logs.some((line) => line.includes('the account page is not built'))).toBe(true);
    expect((await t.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });

  it('answers the email pages with how to build them too', async () => {
    for (const url of ['/account/verify-email', '/account/reset-password']) {
      const response = await t.app.inject({ method: 'GET', url });
      expect(response.statusCode, url).toBe(503);
      expect(response.body, url).toContain('npm run build:web');
    }
  });
});
