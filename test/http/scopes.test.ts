import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUsersRepository } from '../../src/db/users.ts';
import type { Scope } from '../../src/domain/scope.ts';
import {
  bearerRequest,
  buildTestApp,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { decodeToken, hmacSign } from '../support/forge-token.ts';

const JWT_SECRET = 'Vq8mZ2rT5wY1xB4nC7kL0pS3dF6gH9jQ2eR5tU8iO1aS4dF7';
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const DEFAULT_SCOPE = 'conversation:read conversation:write';
const insufficient = (scope: string) => `Bearer error="insufficient_scope", scope="${scope}"`;

describe.each(dialects)('scopes on %s', (dialect) => {
  let t: TestApp;
  let admin: { id: number };
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { JWT_ALGORITHM: 'HS256', JWT_SECRET } });
    await registerUser(t.app, { username: 'alice', email: 'alice@example.com' });
    admin = await registerUser(t.app, { username: 'root-ann', email: 'ann@example.com' });
    await createUsersRepository(t.database.db).setUserRoles(admin.id, ['admin']);
  });
  afterAll(async () => {
    await t.close();
  });

  const token = (fields: Record<string, string>) =>
    t.app.inject({ method: 'POST', url: '/token', headers: FORM, payload: form(fields) });
  const login = (username: string, scope?: string) =>
    token({ username, password: STRONG_PASSWORD, ...(scope === undefined ? {} : { scope }) });
  const refresh = (refreshToken: string, scope?: string) =>
    token({
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      ...(scope === undefined ? {} : { scope }),
    });
  const call = (method: 'GET' | 'POST', url: string, accessToken: string, payload?: object) =>
    bearerRequest(t.app, method, url, accessToken, payload);
  const readConversation = (accessToken: string) => call('GET', '/conversation', accessToken);
  const readMessages = (accessToken: string) => call('GET', '/conversation/messages', accessToken);
  const postMessage = (accessToken: string) =>
    call('POST', '/conversation/messages', accessToken, { text: 'scoped hello' });

  it('grants conversation:read conversation:write by default, in the response and in the token', async () => {
    const response = await login('alice');
    expect(response.statusCode).toBe(200);
    expect(response.json().scope).toBe(DEFAULT_SCOPE);
    expect(decodeToken(response.json().access_token).payload.scope).toBe(DEFAULT_SCOPE);
  });

  it('treats an empty scope parameter, as Swagger UI sends it, as the default', async () => {
    expect((await login('alice', '')).json().scope).toBe(DEFAULT_SCOPE);
  });

  it('grants a narrower scope when asked, and the token can do only that', async () => {
    const response = await login('alice', 'conversation:read');
    expect(response.json().scope).toBe('conversation:read');
    const reader = response.json().access_token;
    expect((await readConversation(reader)).statusCode).toBe(200);
    expect((await readMessages(reader)).statusCode).toBe(200);
    const refused = await postMessage(reader);
    expect(refused.statusCode).toBe(403);
    expect(refused.headers['www-authenticate']).toBe(insufficient('conversation:write'));
    expect(refused.json()).toEqual({ detail: 'Not enough permissions' });
  });

  it('answers 403 insufficient_scope naming conversation:read to a write-only token on every read', async () => {
    const writer = (await login('alice', 'conversation:write')).json().access_token;
    for (const response of [await readConversation(writer), await readMessages(writer)]) {
      expect(response.statusCode).toBe(403);
      expect(response.headers['www-authenticate']).toBe(insufficient('conversation:read'));
    }
    expect((await postMessage(writer)).statusCode).toBe(201);
  });

  it('checks the scope before the body: a write-only refusal does not depend on what was sent', async () => {
    const reader = (await login('alice', 'conversation:read')).json().access_token;
    const response = await call('POST', '/conversation/messages', reader, { text: '' });
    expect(response.statusCode).toBe(403);
  });

  it('answers 401, never 403, for a missing or invalid token on a scoped route', async () => {
    const missing = await t.app.inject({
      method: 'POST',
      url: '/conversation/messages',
      payload: { text: 'x' },
    });
    expect(missing.statusCode).toBe(401);
    expect(missing.headers['www-authenticate']).toBe('Bearer');
    const invalid = await postMessage('garbage');
    expect(invalid.statusCode).toBe(401);
    expect(invalid.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
  });

  // RFC 6750 §3.1: 403 only for a valid token. A token's signed scopes say nothing of whether its session still
  // lives, so a token that lacks the scope and whose session ended is 401 invalid_token, as it would be with the scope.
  it('answers 401 invalid_token, not 403, to a token without the scope whose session ended or account was disabled', async () => {
    const ended = (await login('alice', 'conversation:write')).json().access_token;
    expect((await call('POST', '/logout', ended)).statusCode).toBe(204);
    const bob = await registerUser(t.app, { username: 'bob-scoped', email: 'bob-scoped@example.com' });
    const disabled = (await login('bob-scoped', 'conversation:write')).json().access_token;
    await createUsersRepository(t.database.db).setUserDisabled(bob.id, new Date());
    for (const accessToken of [ended, disabled]) {
      for (const response of [await readConversation(accessToken), await readMessages(accessToken)]) {
        expect(response.statusCode).toBe(401);
        expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
      }
    }
  });

  it('answers an unknown or malformed scope 400 invalid_scope, with a detail as the other OAuth errors', async () => {
    for (const scope of ['superuser', 'conversation:read superuser', 'CONVERSATION:READ']) {
      const response = await login('alice', scope);
      expect(response.statusCode, scope).toBe(400);
      expect(response.json().error).toBe('invalid_scope');
      expect(response.json().detail).toBe(response.json().error_description);
      expect(response.headers['cache-control']).toBe('no-store');
    }
  });

  it('refuses admin to a user without the admin role, and says nothing of the account before the password', async () => {
    const refused = await login('alice', 'admin');
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toBe('invalid_scope');
    // The README's audit table: login_failed names the attempted username, this refusal too (found from outside).
    const failed = t.logs
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.event === 'login_failed' && line.reason === 'invalid_scope');
    expect(failed.at(-1)).toMatchObject({ username: 'alice' });
    const wrongPassword = await token({
      username: 'alice',
      password: 'not the password at all',
      scope: 'admin',
    });
    const plainWrongPassword = await token({ username: 'alice', password: 'not the password at all' });
    expect(wrongPassword.statusCode).toBe(400);
    expect(wrongPassword.json()).toEqual(plainWrongPassword.json());
    expect(wrongPassword.json().error).toBe('invalid_grant');
  });

  it('never puts admin in a token by default, even for an admin; an admin gets it when asking', async () => {
    expect((await login('root-ann')).json().scope).toBe(DEFAULT_SCOPE);
    const asked = await login('root-ann', 'admin');
    expect(asked.statusCode).toBe(200);
    expect(asked.json().scope).toBe('admin');
    expect(decodeToken(asked.json().access_token).payload.scope).toBe('admin');
    const adminOnly = asked.json().access_token;
    const response = await readConversation(adminOnly);
    expect(response.statusCode).toBe(403);
    expect(response.headers['www-authenticate']).toBe(insufficient('conversation:read'));
    // The account routes are the caller's own whatever the token's scope: an admin token can sign itself out.
    expect((await call('GET', '/users/me', adminOnly)).statusCode).toBe(200);
    const both = await login('root-ann', 'conversation:read admin conversation:write');
    expect(both.json().scope).toBe('conversation:read conversation:write admin');
  });

  it('stores the granted scope on the session', async () => {
    const response = await login('alice', 'conversation:read');
    const sid = decodeToken(response.json().access_token).payload.sid as string;
    const row = await t.database.db
      .selectFrom('sessions')
      .select('scope')
      .where('id', '=', sid)
      .executeTakeFirstOrThrow();
    expect(row.scope).toBe('conversation:read');
  });

  it('keeps the login grant through refreshes, lets a refresh narrow it and never widen it (RFC 6749 §6)', async () => {
    const first = (await login('alice', 'conversation:read')).json();
    const kept = await refresh(first.refresh_token);
    expect(kept.statusCode).toBe(200);
    expect(kept.json().scope).toBe('conversation:read');
    const widened = await refresh(kept.json().refresh_token, DEFAULT_SCOPE);
    expect(widened.statusCode).toBe(400);
    expect(widened.json().error).toBe('invalid_scope');

    const full = (await login('alice')).json();
    const narrowed = await refresh(full.refresh_token, 'conversation:read');
    expect(narrowed.json().scope).toBe('conversation:read');
    expect(decodeToken(narrowed.json().access_token).payload.scope).toBe('conversation:read');
    // Narrowing one refresh does not shrink the session: the next refresh may ask for the original grant again.
    const restored = await refresh(narrowed.json().refresh_token);
    expect(restored.json().scope).toBe(DEFAULT_SCOPE);
    expect((await refresh(restored.json().refresh_token, 'superuser')).json().error).toBe('invalid_scope');
  });

  it.each([
    ['a scope it may not have', 'admin'],
    ['a scope it may have', 'conversation:read'],
  ])(
    'ends the family when a spent refresh token is replayed asking for %s, as any replay',
    async (_what, scope) => {
      // An unknown scope name is refused before the token is looked up, whatever the token: that answer tells nothing.
      const first = (await login('alice')).json();
      const second = (await refresh(first.refresh_token)).json();
      t.clock.advanceSeconds(11);
      const replay = await refresh(first.refresh_token, scope);
      expect(replay.statusCode).toBe(400);
      expect(replay.json().error).toBe('invalid_grant');
      expect((await refresh(second.refresh_token)).json().error).toBe('invalid_grant');
      expect((await readConversation(second.access_token)).statusCode).toBe(401);
    },
  );

  it('refuses a refresh asking for admin when the session was not granted it, even for an admin', async () => {
    const plain = (await login('root-ann')).json();
    const response = await refresh(plain.refresh_token, 'admin');
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_scope');
  });

  it('takes admin out of refreshes once the role is revoked', async () => {
    const user = await registerUser(t.app, { username: 'root-bea', email: 'bea@example.com' });
    const users = createUsersRepository(t.database.db);
    await users.setUserRoles(user.id, ['admin']);
    const mixed = (await login('root-bea', 'admin conversation:read')).json();
    const adminOnly = (await login('root-bea', 'admin')).json();
    await users.setUserRoles(user.id, []);
    const kept = await refresh(mixed.refresh_token);
    expect(kept.statusCode).toBe(200);
    expect(kept.json().scope).toBe('conversation:read');
    expect((await refresh(kept.json().refresh_token, 'admin')).json().error).toBe('invalid_scope');
    const nothingLeft = await refresh(adminOnly.refresh_token);
    expect(nothingLeft.statusCode).toBe(400);
    expect(nothingLeft.json().error).toBe('invalid_scope');
  });

  it('accepts tokens issued with the former scope "conversation" as both conversation scopes until they expire', async () => {
    const current = decodeToken((await login('alice')).json().access_token);
    const legacy = hmacSign(current.header, { ...current.payload, scope: 'conversation' }, JWT_SECRET);
    expect((await readConversation(legacy)).statusCode).toBe(200);
    expect((await readMessages(legacy)).statusCode).toBe(200);
    expect((await postMessage(legacy)).statusCode).toBe(201);
    const unscoped = hmacSign(current.header, { ...current.payload, scope: undefined }, JWT_SECRET);
    expect((await readConversation(unscoped)).statusCode).toBe(403);
  });

  it('accepts "conversation" in a request as both conversation scopes, for clients that echo the former scope', async () => {
    expect((await login('alice', 'conversation')).json().scope).toBe(DEFAULT_SCOPE);
  });
});

describe('requireScope', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    const Fastify = (await import('fastify')).default;
    const { requireScope } = await import('../../src/http/authenticate.ts');
    const { errorHandler } = await import('../../src/http/error-handler.ts');
    app = Fastify();
    app.setErrorHandler(errorHandler);
    const scopesOf = (request: { headers: Record<string, unknown> }) =>
      new Set(String(request.headers['x-scopes'] ?? '').split(' ')) as ReadonlySet<Scope>;
    await app.register(async (scope) => {
      scope.decorateRequest('auth', undefined);
      scope.addHook('onRequest', async (request) => {
        request.auth = {
          user: {} as never,
          sessionId: 's',
          scopes: scopesOf(request),
          login: { amr: ['pwd'], authTime: new Date() },
        };
      });
      scope.get('/route-level', { onRequest: requireScope('admin') }, async () => ({ ok: true }));
      await scope.register(async (admin) => {
        admin.addHook('onRequest', requireScope('admin'));
        admin.get('/scope-level', async () => ({ ok: true }));
      });
    });
    await app.register(async (scope) => {
      scope.decorateRequest('claim', undefined);
      scope.addHook('onRequest', async (request) => {
        request.claim = { sessionId: 's', userId: 1, scopes: scopesOf(request) };
      });
      scope.get('/claimed', { onRequest: requireScope('conversation:read') }, async () => ({ ok: true }));
    });
    app.get('/unauthenticated', { onRequest: requireScope('admin') }, async () => ({ ok: true }));
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
  });

  const get = (url: string, scopes: string) =>
    app.inject({ method: 'GET', url, headers: { 'x-scopes': scopes } });

  it('lets a token with the scope through, per route and for a whole scope', async () => {
    expect((await get('/route-level', 'admin')).statusCode).toBe(200);
    expect((await get('/scope-level', 'conversation:read admin')).statusCode).toBe(200);
    expect((await get('/claimed', 'conversation:read')).statusCode).toBe(200);
  });

  it('answers 403 insufficient_scope naming the scope to a token without it', async () => {
    for (const url of ['/route-level', '/scope-level']) {
      const response = await get(url, 'conversation:read conversation:write');
      expect(response.statusCode).toBe(403);
      expect(response.headers['www-authenticate']).toBe(insufficient('admin'));
    }
    expect((await get('/claimed', 'conversation:write')).headers['www-authenticate']).toBe(
      insufficient('conversation:read'),
    );
  });

  it('refuses, never allows, where no Bearer hook ran before it', async () => {
    const response = await get('/unauthenticated', 'admin');
    expect(response.statusCode).toBeGreaterThanOrEqual(400);
    expect(response.statusCode).not.toBe(200);
  });
});
