import { createLocalJWKSet, jwtVerify } from 'jose';
import { describe, expect, it, vi } from 'vitest';
import {
  expectJsonContentType,
  expectLogsFreeOf,
  expectNoStore,
  expectOAuthError,
  login,
  nowSeconds,
  postForm,
  postJson,
  type Reply,
  rawHead,
  rawHttp,
  registerUser,
  request,
  splitToken,
  strongPassword,
  uniqueName,
} from './support/client.ts';
import { DIALECTS, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const DEFAULT_ISSUER = 'http://localhost:8000';
const DEFAULT_AUDIENCE = 'gatehouse';

function expectTokenSuccess(r: Reply): void {
  expect(r.status, r.text).toBe(200);
  expectJsonContentType(r);
  expectNoStore(r);
  expect(typeof r.json.access_token).toBe('string');
  expect(r.json.token_type).toBe('bearer');
  expect(Number.isInteger(r.json.expires_in)).toBe(true);
  expect(r.json.expires_in).toBeGreaterThan(0);
}

describe.each(DIALECTS)('POST /token (%s)', (dialect) => {
  const ctx = useServer(dialect);

  describe('password grant, form and JSON', () => {
    it('issues a token for form-encoded credentials without grant_type (FastAPI OAuth2PasswordRequestForm)', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), { username: u.username, password: u.password });
      expectTokenSuccess(r);
      ctx.track(r.json.access_token);
    });

    it('issues a token for grant_type=password with the fields Swagger UI and OAuth2 libraries send', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), {
        grant_type: 'password',
        username: u.username,
        password: u.password,
        scope: '',
        client_id: '',
        client_secret: '',
      });
      expectTokenSuccess(r);
      ctx.track(r.json.access_token);
    });

    it('issues a token for JSON {username, password}', async () => {
      const u = await registerUser(ctx);
      const r = await postJson(ctx.url('/token'), { username: u.username, password: u.password });
      expectTokenSuccess(r);
      ctx.track(r.json.access_token);
    });

    it('accepts a form content type with charset', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(
        ctx.url('/token'),
        { username: u.username, password: u.password },
        { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' },
      );
      expectTokenSuccess(r);
      ctx.track(r.json.access_token);
    });

    it('ignores unknown parameters (RFC 6749 §3.2)', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), {
        grant_type: 'password',
        username: u.username,
        password: u.password,
        foo: 'bar',
        client_id: 'x',
      });
      expectTokenSuccess(r);
      ctx.track(r.json.access_token);
    });

    it('ignores HTTP Basic client authentication as requests-oauthlib and Authlib send it (checklist 41)', async () => {
      const u = await registerUser(ctx);
      for (const client of ['gatehouse:', 'swagger-ui:', 'client:secret']) {
        const r = await postForm(
          ctx.url('/token'),
          { grant_type: 'password', username: u.username, password: u.password },
          { authorization: `Basic ${Buffer.from(client).toString('base64')}` },
        );
        expectTokenSuccess(r);
        ctx.track(r.json.access_token);
      }
    });

    it('decodes form passwords with spaces, +, &, =, % and non-ASCII correctly', async () => {
      for (const pw of [
        `correct horse battery ${uniqueName('s')}`,
        `a+b&c=d%25e;${uniqueName('p')}`,
        `пароль ü 密码 ${uniqueName('u')}`,
      ]) {
        const u = await registerUser(ctx, { password: pw });
        expectTokenSuccess(await postForm(ctx.url('/token'), { username: u.username, password: pw }));
        const pct = `username=${encodeURIComponent(u.username)}&password=${encodeURIComponent(pw)}`;
        const r = await postForm(ctx.url('/token'), pct);
        expectTokenSuccess(r);
        ctx.track(r.json.access_token);
      }
    });

    it('ignores parameters named like Object.prototype members (form and JSON)', async () => {
      const u = await registerUser(ctx);
      const enc = encodeURIComponent;
      const raw = `__proto__=1&constructor=2&toString=3&hasOwnProperty=4&valueOf=5&username=${enc(u.username)}&password=${enc(u.password)}`;
      const f = await postForm(ctx.url('/token'), raw);
      expectTokenSuccess(f);
      ctx.track(f.json.access_token);
      const j = await postJson(
        ctx.url('/token'),
        `{"constructor":1,"hasOwnProperty":"x","toString":"y","username":${JSON.stringify(u.username)},"password":${JSON.stringify(u.password)}}`,
      );
      expectTokenSuccess(j);
      ctx.track(j.json.access_token);
      // a JSON __proto__ key may be refused outright (checklist 13: 4xx or ignored)
      const withProto = await postJson(
        ctx.url('/token'),
        `{"__proto__":{"username":"x"},"username":${JSON.stringify(u.username)},"password":${JSON.stringify(u.password)}}`,
      );
      if (withProto.status === 200) ctx.track(withProto.json.access_token);
      else expectOAuthError(withProto, 'invalid_request');
      const onlyProto = await postJson(
        ctx.url('/token'),
        `{"__proto__":{"username":${JSON.stringify(u.username)},"password":${JSON.stringify(u.password)}}}`,
      );
      expect(onlyProto.status).toBe(400);
      expect(onlyProto.json).not.toHaveProperty('access_token');
    });

    it('sends Pragma: no-cache with the token (RFC 6749 §5.1)', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), { username: u.username, password: u.password });
      expect(r.status).toBe(200);
      ctx.track(r.json.access_token);
      expect(r.headers.get('pragma')).toBe('no-cache');
    });

    it('logs in with any case of the username and reports the name as registered', async () => {
      const name = `Bob${uniqueName('').replace(/_/g, '')}`;
      const u = await registerUser(ctx, { username: name });
      for (const variant of [name, name.toLowerCase(), name.toUpperCase()]) {
        const t = await login(ctx, variant, u.password);
        expect(splitToken(t).payload.preferred_username).toBe(name);
        expect(splitToken(t).payload.sub).toBe(String(u.id));
        const c = await request(ctx.url('/conversation'), { headers: { authorization: `Bearer ${t}` } });
        expect(c.status).toBe(200);
        expect(c.json.current_user).toBe(name);
      }
    });

    it('logs in with a non-ASCII username in another case', async () => {
      const name = `Ådne${uniqueName('').replace(/_/g, '')}`;
      const u = await registerUser(ctx, { username: name });
      const t = await login(ctx, name.toUpperCase(), u.password);
      expect(splitToken(t).payload.preferred_username).toBe(name);
    });

    it('answers an over-long or huge username with 400 quickly', async () => {
      for (const username of ['x'.repeat(33), 'y'.repeat(10_000)]) {
        const t0 = performance.now();
        const r = await postForm(ctx.url('/token'), { username, password: 'Whatever-123' });
        expect(r.status).toBe(400);
        expect(['invalid_grant', 'invalid_request']).toContain(r.json.error);
        expect(performance.now() - t0).toBeLessThan(2000);
      }
    });

    it('logs in with the fullwidth (NFKC-equivalent) form of the username', async () => {
      const name = `fw${uniqueName('').replace(/_/g, '')}`;
      const u = await registerUser(ctx, { username: name });
      const fullwidth = [...name].map((c) => String.fromCodePoint(c.codePointAt(0)! + 0xfee0)).join('');
      await login(ctx, fullwidth, u.password);
    });

    it('does not log in with the email address as username', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), { username: u.email, password: u.password });
      expectOAuthError(r, 'invalid_grant');
    });

    it('issues a new token with a new jti on each login (checklist 75)', async () => {
      const u = await registerUser(ctx);
      const a = await login(ctx, u.username, u.password);
      const b = await login(ctx, u.username, u.password);
      expect(a).not.toBe(b);
      expect(splitToken(a).payload.jti).not.toBe(splitToken(b).payload.jti);
    });
  });

  describe('issued JWT (RFC 9068)', () => {
    it('has header alg EdDSA, typ at+jwt and a kid that is in the JWKS', async () => {
      const u = await registerUser(ctx);
      const t = await login(ctx, u.username, u.password);
      const { header, parts } = splitToken(t);
      expect(parts).toHaveLength(3);
      for (const p of parts) expect(p).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(header.alg).toBe('EdDSA');
      expect(header.typ).toBe('at+jwt');
      expect(typeof header.kid).toBe('string');
      expect(header.kid.length).toBeGreaterThan(0);
      for (const k of ['jku', 'x5u', 'jwk', 'x5c', 'crit']) expect(header).not.toHaveProperty(k);
      const jwks = await request(ctx.url('/.well-known/jwks.json'));
      expect(jwks.status).toBe(200);
      expect((jwks.json.keys as { kid: string }[]).map((k) => k.kid)).toContain(header.kid);
    });

    it('has iss, aud, sub (user id as string), preferred_username, iat, exp, jti, scope', async () => {
      const u = await registerUser(ctx);
      const before = nowSeconds();
      const r = await postForm(ctx.url('/token'), { username: u.username, password: u.password });
      expect(r.status).toBe(200);
      const t = ctx.track(r.json.access_token as string);
      const { payload } = splitToken(t);
      expect(payload.iss).toBe(DEFAULT_ISSUER);
      expect(Array.isArray(payload.aud) ? payload.aud : [payload.aud]).toContain(DEFAULT_AUDIENCE);
      expect(payload.sub).toBe(String(u.id));
      expect(typeof payload.sub).toBe('string');
      expect(payload.preferred_username).toBe(u.username);
      expect(Number.isInteger(payload.iat)).toBe(true);
      expect(Number.isInteger(payload.exp)).toBe(true);
      expect(payload.iat).toBeGreaterThanOrEqual(before - 5);
      expect(payload.iat).toBeLessThanOrEqual(nowSeconds() + 5);
      expect(payload.exp - payload.iat).toBe(900);
      expect(r.json.expires_in).toBe(payload.exp - payload.iat);
      expect(typeof payload.jti).toBe('string');
      expect(payload.jti.length).toBeGreaterThanOrEqual(16);
      expect(typeof payload.scope).toBe('string');
      // no PII or secrets beyond need
      const text = JSON.stringify(payload);
      expect(text).not.toContain(u.email);
      expect(text).not.toContain(u.password);
      expect(text).not.toMatch(/\$argon2|password|hash/i);
    });

    it('verifies with jose against the JWKS with pinned alg, issuer, audience and typ', async () => {
      const u = await registerUser(ctx);
      const t = await login(ctx, u.username, u.password);
      const jwks = await request(ctx.url('/.well-known/jwks.json'));
      const { payload, protectedHeader } = await jwtVerify(t, createLocalJWKSet(jwks.json), {
        algorithms: ['EdDSA'],
        issuer: DEFAULT_ISSUER,
        audience: DEFAULT_AUDIENCE,
        typ: 'at+jwt',
      });
      expect(payload.sub).toBe(String(u.id));
      expect(protectedHeader.typ).toBe('at+jwt');
    });

    it('gives unique jti values across 10 logins', async () => {
      const u = await registerUser(ctx);
      const tokens = await Promise.all(
        Array.from({ length: 10 }, () =>
          postForm(ctx.url('/token'), { username: u.username, password: u.password }),
        ),
      );
      const jtis = tokens.map((r) => {
        expect(r.status).toBe(200);
        ctx.track(r.json.access_token);
        return splitToken(r.json.access_token).payload.jti;
      });
      expect(new Set(jtis).size).toBe(10);
    });
  });

  describe('failures (RFC 6749 §5.2)', () => {
    it('answers the same 400 invalid_grant for a wrong password and an unknown user', async () => {
      const u = await registerUser(ctx);
      const wrong = await postForm(ctx.url('/token'), { username: u.username, password: strongPassword() });
      const unknown = await postForm(ctx.url('/token'), {
        username: uniqueName('nobody'),
        password: strongPassword(),
      });
      for (const r of [wrong, unknown]) {
        expectOAuthError(r, 'invalid_grant');
        expect(r.json.detail).toBe('Incorrect username or password');
        expect(typeof r.json.error_description).toBe('string');
        expect(r.json.error_description).toMatch(/^[\x20\x21\x23-\x5B\x5D-\x7E]+$/);
        expect(Object.keys(r.json).sort()).toEqual(['detail', 'error', 'error_description']);
        expect(r.headers.get('www-authenticate')).toBeNull(); // 400, not a 401 challenge
      }
      expect(wrong.text).toBe(unknown.text);
      const strip = (h: Headers) =>
        [...h.entries()].filter(([k]) => !['date', 'x-request-id', 'request-id', 'keep-alive'].includes(k));
      expect(strip(wrong.headers)).toEqual(strip(unknown.headers));
    });

    it('answers the same for a JSON body', async () => {
      const u = await registerUser(ctx);
      const wrong = await postJson(ctx.url('/token'), { username: u.username, password: strongPassword() });
      const unknown = await postJson(ctx.url('/token'), {
        username: uniqueName('nobody'),
        password: 'whatever1',
      });
      for (const r of [wrong, unknown]) {
        expectOAuthError(r, 'invalid_grant');
        expect(r.json.detail).toBe('Incorrect username or password');
      }
      expect(wrong.text).toBe(unknown.text);
    });

    it('sends Pragma: no-cache on failures too (RFC 6749 §5.1/§5.2)', async () => {
      const r = await postForm(ctx.url('/token'), { username: 'nobody-here', password: 'Whatever-123' });
      expect(r.status).toBe(400);
      expect(r.headers.get('pragma')).toBe('no-cache');
    });

    it('does not issue a token for grant_type=refresh_token carrying only a username and password', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), {
        grant_type: 'refresh_token',
        username: u.username,
        password: u.password,
      });
      expect(r.status, r.text).toBe(400);
      expectNoStore(r);
      expect(['invalid_request', 'invalid_grant', 'unsupported_grant_type']).toContain(r.json.error);
      expect(r.json).not.toHaveProperty('access_token');
    });

    it.each(['client_credentials', 'authorization_code', 'implicit', 'foo', 'PASSWORD'])(
      'answers 400 unsupported_grant_type for grant_type=%s',
      async (grant) => {
        const u = await registerUser(ctx);
        const r = await postForm(ctx.url('/token'), {
          grant_type: grant,
          username: u.username,
          password: u.password,
        });
        expectOAuthError(r, 'unsupported_grant_type');
        expect(r.json).not.toHaveProperty('access_token');
      },
    );

    it.each([
      ['missing username', { password: 'Whatever-123' }],
      ['missing password', { username: 'someone' }],
      ['empty username', { username: '', password: 'Whatever-123' }],
      ['whitespace-only username', { username: '   ', password: 'Whatever-123' }],
      ['nothing at all', {}],
    ])('answers 400 invalid_request for a form with %s', async (_n, fields) => {
      const r = await postForm(ctx.url('/token'), fields as Record<string, string>);
      expectOAuthError(r, 'invalid_request');
    });

    it('answers 400 (invalid_request or invalid_grant) for an empty password, never a token', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), { username: u.username, password: '' });
      expect(r.status).toBe(400);
      expectNoStore(r);
      expect(['invalid_request', 'invalid_grant']).toContain(r.json.error);
    });

    it.each([
      ['array', '[]'],
      ['string', '"x"'],
      ['null', 'null'],
      ['invalid JSON', '{"username":'],
      ['number username', '{"username":123,"password":"Whatever-123"}'],
      ['object password', '{"username":"abc","password":{"$ne":""}}'],
      ['missing password', '{"username":"abc"}'],
      ['empty body', ''],
    ])('answers 400 invalid_request for a JSON %s', async (_n, raw) => {
      const r = await request(ctx.url('/token'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: raw,
      });
      expectOAuthError(r, 'invalid_request');
    });

    it('answers 400 invalid_request when a parameter is repeated (RFC 6749 §3.2, checklist 14)', async () => {
      const u = await registerUser(ctx);
      const enc = encodeURIComponent;
      for (const raw of [
        `username=${enc(u.username)}&username=${enc(u.username)}&password=${enc(u.password)}`,
        `username=${enc(u.username)}&password=${enc(u.password)}&password=${enc(u.password)}`,
        `grant_type=password&grant_type=password&username=${enc(u.username)}&password=${enc(u.password)}`,
      ]) {
        const r = await postForm(ctx.url('/token'), raw);
        expectOAuthError(r, 'invalid_request');
      }
    });

    it('answers 400 invalid_request for credentials in both the query and the body (checklist 14)', async () => {
      const u = await registerUser(ctx);
      const q = new URLSearchParams({ password: u.password }).toString();
      const r = await postForm(ctx.url(`/token?${q}`), { username: u.username, password: u.password });
      expectOAuthError(r, 'invalid_request');
    });

    it('never logs a password sent in the query string', async () => {
      const pw = ctx.track(strongPassword());
      await postForm(ctx.url(`/token?password=${encodeURIComponent(pw)}&username=someone`), {});
      await request(ctx.url(`/conversation?access_token=${encodeURIComponent(pw)}`));
      await new Promise((r) => setTimeout(r, 100));
      expect(ctx.server.output()).not.toContain(pw);
    });

    it('grants the same scope whatever the level (level is a proficiency, never a privilege)', async () => {
      const scopes = new Set<string>();
      for (const level of ['beginner', 'intermediate', 'advanced']) {
        const u = await registerUser(ctx, { level });
        const t = await login(ctx, u.username, u.password);
        const { payload } = splitToken(t);
        scopes.add(String(payload.scope));
        expect(JSON.stringify(payload)).not.toMatch(/beginner|intermediate|advanced|admin|role/);
      }
      expect(scopes.size).toBe(1);
    });

    it('never takes credentials from the query string (checklist 6)', async () => {
      const u = await registerUser(ctx);
      const q = new URLSearchParams({ username: u.username, password: u.password }).toString();
      const r = await request(ctx.url(`/token?${q}`), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: '',
      });
      expect(r.status).toBe(400);
      expect(r.json).not.toHaveProperty('access_token');
      expectNoStore(r);
    });

    it.each(['text', 'invalid/@@##', 'text/[html]', 'text/plain'])(
      'answers 400 invalid_request (or 415) for the content type %j (checklist 8)',
      async (ct) => {
        const u = await registerUser(ctx);
        const r = await request(ctx.url('/token'), {
          method: 'POST',
          headers: { 'content-type': ct },
          body: `username=${u.username}&password=${encodeURIComponent(u.password)}`,
        });
        if (ct === 'text/plain') {
          expect([400, 415], r.text).toContain(r.status);
          if (r.status === 400) expectOAuthError(r, 'invalid_request');
        } else {
          expectOAuthError(r, 'invalid_request');
        }
        expect(r.json).not.toHaveProperty('access_token');
      },
    );

    it('answers 400 invalid_request (or 415) for a body without a content type', async () => {
      const raw = 'username=abc&password=Whatever-123';
      const r = await rawHttp(ctx.server.port, rawHead('POST', '/token', [], raw.length), raw);
      expect([400, 415]).toContain(r.status);
      if (r.status === 400) expect(JSON.parse(r.body).error).toBe('invalid_request');
    });

    it('answers 413 for a body over 16 KiB, with a 2 MiB password quickly', async () => {
      const t0 = performance.now();
      const r = await postForm(ctx.url('/token'), { username: 'abc', password: 'x'.repeat(2 * 1024 * 1024) });
      expect(r.status).toBe(413);
      expect(performance.now() - t0).toBeLessThan(3000);
      const j = await postJson(ctx.url('/token'), { username: 'abc', password: 'x'.repeat(17 * 1024) });
      expect(j.status).toBe(413);
    });

    it('does not issue tokens for default accounts (checklist 20)', async () => {
      for (const username of ['admin', 'root', 'test', 'johndoe']) {
        for (const password of ['admin', 'password', 'secret', 'changethis']) {
          const r = await postForm(ctx.url('/token'), { username, password });
          expect(r.status).toBe(400);
          expect(r.json).not.toHaveProperty('access_token');
        }
      }
    });

    it('answers 400 (never 5xx) for NUL bytes and lone surrogates in credentials', async () => {
      const u = await registerUser(ctx);
      const cases: Record<string, string>[] = [
        { username: 'abc\u0000def', password: 'Whatever-123' },
        { username: `${u.username}\u0000`, password: u.password },
        { username: u.username, password: `${u.password}\u0000` },
        { username: u.username, password: 'a\u0000b\u0000c\u0000d' },
      ];
      for (const fields of cases) {
        const f = await postForm(ctx.url('/token'), fields);
        expect(f.status, `form ${JSON.stringify(fields)}: ${f.text}`).toBe(400);
        const j = await postJson(ctx.url('/token'), fields);
        expect(j.status, `json ${JSON.stringify(fields)}: ${j.text}`).toBe(400);
      }
      const raw = '{"username":"\\ud800abc","password":"\\udfffxyz12345"}';
      const r = await postJson(ctx.url('/token'), raw);
      expect(r.status, r.text).toBe(400);
    });

    it('does not grant a scope just because the client asked for it (RFC 6749 §3.3, §5.1)', async () => {
      const u = await registerUser(ctx);
      const r = await postForm(ctx.url('/token'), {
        grant_type: 'password',
        username: u.username,
        password: u.password,
        scope: 'admin superuser',
      });
      expect([200, 400]).toContain(r.status);
      if (r.status === 400) {
        expect(r.json.error).toBe('invalid_scope');
        return;
      }
      ctx.track(r.json.access_token);
      const granted = String(splitToken(r.json.access_token).payload.scope ?? '');
      expect(granted.split(' ')).not.toContain('admin');
      expect(granted.split(' ')).not.toContain('superuser');
      // §5.1: scope is REQUIRED in the response when it differs from the requested one
      if (granted !== 'admin superuser') expect(r.json.scope).toBe(granted);
    });

    it('failure bodies never contain the submitted password', async () => {
      const u = await registerUser(ctx);
      const pw = ctx.track(strongPassword());
      const r = await postForm(ctx.url('/token'), { username: u.username, password: pw });
      expect(r.text).not.toContain(pw);
    });

    it('stays correct under 20 parallel logins (no 5xx, all tokens valid)', async () => {
      const u = await registerUser(ctx);
      const rs = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          postForm(ctx.url('/token'), {
            username: u.username,
            password: i % 4 === 0 ? 'Wrong-pass-1' : u.password,
          }),
        ),
      );
      for (const [i, r] of rs.entries()) {
        if (i % 4 === 0) expect(r.status).toBe(400);
        else {
          expect(r.status).toBe(200);
          ctx.track(r.json.access_token);
        }
      }
    });
  });

  describe('methods', () => {
    it('answers 405 with Allow: POST for GET /token (RFC 6749 §3.2)', async () => {
      const r = await request(ctx.url('/token'));
      expect(r.status).toBe(405);
      expect(r.headers.get('allow') ?? '').toMatch(/POST/);
      expect(r.json).not.toHaveProperty('access_token');
    });

    it('does not issue a token through GET with query credentials', async () => {
      const u = await registerUser(ctx);
      const q = new URLSearchParams({ username: u.username, password: u.password, grant_type: 'password' });
      const r = await request(ctx.url(`/token?${q}`));
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
      expect(r.text).not.toContain('access_token');
    });
  });

  it('tokens expire after ACCESS_TOKEN_TTL_SECONDS (exp - iat), checked in the claims', async () => {
    const u = await registerUser(ctx);
    const t = await login(ctx, u.username, u.password);
    const { payload } = splitToken(t);
    expect(payload.exp).toBeGreaterThan(nowSeconds());
    expect(payload.exp - payload.iat).toBeLessThanOrEqual(3600);
  });

  it('never writes the passwords or tokens it saw to the logs', () => {
    expectLogsFreeOf(ctx);
  });
});
