import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTestApp,
  loginToken,
  registerUser,
  registration,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { decodeToken } from '../support/forge-token.ts';

const DISABLED = {
  error: 'invalid_grant',
  error_description: 'Account disabled',
  detail: 'Account disabled',
};

/** Logs in asking for `scope`; the raw answer, since some tests expect a refusal. */
const loginWithScope = (t: TestApp, username: string, scope: string) =>
  t.app.inject({ method: 'POST', url: '/token', payload: { username, password: STRONG_PASSWORD, scope } });

/** An access token with the admin scope, asked of /token as any client would; the user must hold the role. */
const adminScopedToken = async (t: TestApp, username: string) => {
  const response = await loginWithScope(t, username, 'admin');
  if (response.statusCode !== 200)
    throw new Error(`admin login failed: ${response.statusCode} ${response.body}`);
  return (response.json() as { access_token: string }).access_token;
};

describe.each(dialects)('admin API on %s', (dialect) => {
  let t: TestApp;
  let count = 0;

  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const fresh = async (prefix = 'user') => {
    count += 1;
    const username = `${prefix}${count}`;
    return registerUser(t.app, registration({ username, email: `${username}@example.com` }));
  };
  const setRoles = (id: number, roles: string) =>
    t.database.db.updateTable('users').set({ roles }).where('id', '=', id).execute();

  const newAdmin = async () => {
    const user = await fresh('admin');
    await setRoles(user.id, 'admin');
    return { user, token: await adminScopedToken(t, user.username) };
  };
  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token?: string) =>
    t.app.inject({
      method,
      url,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'user-agent': 'admin-test' },
    });
  const storedEvents = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .select(['event', 'detail', 'user_agent'])
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows.map((row) => ({ event: row.event, detail: JSON.parse(row.detail ?? '{}') }));
  };

  const ROUTES: ['GET' | 'POST' | 'PUT' | 'DELETE', string][] = [
    ['GET', '/admin/users'],
    ['GET', '/admin/users/1'],
    ['POST', '/admin/users/1/disable'],
    ['POST', '/admin/users/1/enable'],
    ['POST', '/admin/users/1/unlock'],
    ['DELETE', '/admin/users/1'],
    ['PUT', '/admin/users/1/roles/admin'],
    ['DELETE', '/admin/users/1/roles/admin'],
    ['GET', '/admin/users/1/sessions'],
    ['DELETE', '/admin/users/1/sessions'],
    ['DELETE', '/admin/users/1/sessions/abc'],
    ['GET', '/admin/users/1/audit-events'],
  ];

  it('answers 401 without a token on every admin route', async () => {
    for (const [method, url] of ROUTES) {
      const response = await call(method, url);
      expect(response.statusCode, `${method} ${url}`).toBe(401);
      expect(response.headers['www-authenticate']).toBe('Bearer');
    }
  });

  // Found from outside: a path parameter over 100 characters was dropped by the router, and answered 404 before
  // authentication and validation.
  it('answers a path parameter over 100 characters as any malformed one: 401 without a token, 422 with one', async () => {
    const { token } = await newAdmin();
    for (const url of [`/admin/users/${'9'.repeat(101)}`, `/admin/users/1/sessions/${'x'.repeat(101)}`]) {
      const method = url.includes('sessions') ? 'DELETE' : 'GET';
      expect((await call(method, url)).statusCode, url).toBe(401);
      const malformed = await call(method, url, token);
      expect(malformed.statusCode, url).toBe(422);
      expect(malformed.json().detail[0].loc[0]).toBe('path');
    }
  });

  it('refuses the admin scope at /token to a user without the admin role (400 invalid_scope)', async () => {
    const user = await fresh();
    for (const scope of ['admin', 'admin conversation:read']) {
      const response = await loginWithScope(t, user.username, scope);
      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: 'invalid_scope' });
      expect(response.json()).not.toHaveProperty('access_token');
    }
  });

  it('answers 403 insufficient_scope with the admin scope named to a user without the admin role', async () => {
    const user = await fresh();
    const plain = await loginToken(t.app, user.username);
    for (const [method, url] of ROUTES) {
      const response = await call(method, url, plain);
      expect(response.statusCode, `${method} ${url}`).toBe(403);
      expect(response.json()).toEqual({ detail: 'Not enough permissions' });
      expect(response.headers['www-authenticate']).toBe('Bearer error="insufficient_scope", scope="admin"');
    }
    // Nothing was done on its behalf.
    expect((await t.database.db.selectFrom('users').select('id').where('id', '=', 1).execute()).length).toBe(
      1,
    );
  });

  it('answers 403 to an admin whose token was issued without the admin scope', async () => {
    const user = await fresh('admin');
    await setRoles(user.id, 'admin');
    const token = await loginToken(t.app, user.username);
    const response = await call('GET', '/admin/users', token);
    expect(response.statusCode).toBe(403);
    expect(response.headers['www-authenticate']).toContain('insufficient_scope');
  });

  it('stops an admin-scoped token at its next request once the admin role is revoked', async () => {
    const { user, token } = await newAdmin();
    expect((await call('GET', '/admin/users', token)).statusCode).toBe(200);
    await setRoles(user.id, '');
    expect((await call('GET', '/admin/users', token)).statusCode).toBe(403);
  });

  it('lists and searches users a page at a time', async () => {
    const { token } = await newAdmin();
    const first = await fresh('paged');
    const second = await fresh('paged');
    const page = await call('GET', '/admin/users?search=PAGED&limit=1', token);
    expect(page.statusCode).toBe(200);
    const body = page.json();
    expect(body.users).toEqual([
      {
        id: first.id,
        username: first.username,
        email: first.email,
        age: 30,
        level: 'beginner',
        roles: [],
        disabled_at: null,
        created_at: expect.any(String),
      },
    ]);
    const next = await call('GET', `/admin/users?search=paged&limit=1&cursor=${body.next}`, token);
    expect(next.json()).toMatchObject({ users: [{ id: second.id }], next: null });
    expect((await call('GET', '/admin/users?cursor=garbage!', token)).statusCode).toBe(422);
    expect((await call('GET', '/admin/users?limit=0', token)).statusCode).toBe(422);
    expect((await call('GET', '/admin/users?limit=101', token)).statusCode).toBe(422);
  });

  it('shows an account, and answers 404 for an unknown id and 422 for a malformed one', async () => {
    const { token } = await newAdmin();
    const user = await fresh();
    await loginToken(t.app, user.username);
    const shown = await call('GET', `/admin/users/${user.id}`, token);
    expect(shown.statusCode).toBe(200);
    expect(shown.json()).toMatchObject({ id: user.id, live_sessions: 1, last_login_at: expect.any(String) });
    // Ids past what the users table holds (PostgreSQL's integer) are as unknown as any other.
    for (const id of ['999999', '2147483648', '999999999999999']) {
      const missing = await call('GET', `/admin/users/${id}`, token);
      expect(missing.statusCode, id).toBe(404);
      expect(missing.json()).toEqual({ detail: 'Not Found' });
      expect((await call('POST', `/admin/users/${id}/disable`, token)).statusCode, id).toBe(404);
    }
    const malformed = await call('GET', '/admin/users/abc', token);
    expect(malformed.statusCode).toBe(422);
    // FastAPI's shape for a path parameter.
    expect(malformed.json()).toEqual({
      detail: [
        {
          loc: ['path', 'id'],
          msg: "String should match pattern '^[1-9][0-9]{0,14}$'",
          type: 'string_pattern_mismatch',
        },
      ],
    });
  });

  it("shows a user an operator's actions on their account without the operator's address, agent or id", async () => {
    const { user: acting, token } = await newAdmin();
    const user = await fresh();
    const userToken = await loginToken(t.app, user.username);
    expect((await call('GET', `/admin/users/${user.id}`, token)).statusCode).toBe(200);
    await t.app.auditTrail.flush();
    const own = await call('GET', '/users/me/activity', userToken);
    expect(own.statusCode).toBe(200);
    const viewed = own.json().events.find((event: { event: string }) => event.event === 'user_viewed');
    expect(viewed).toMatchObject({
      ip: null,
      user_agent: null,
      detail: { actor: 'operator', view: 'account' },
    });
    expect(JSON.stringify(own.json())).not.toContain('admin-test');
    expect(JSON.stringify(own.json())).not.toContain(`admin:${acting.id}`);
    // Operators still see who did what.
    const audit = await call('GET', `/admin/users/${user.id}/audit-events`, token);
    const seen = audit.json().events.find((event: { event: string }) => event.event === 'user_viewed');
    expect(seen).toMatchObject({ user_agent: 'admin-test', detail: { actor: `admin:${acting.id}` } });
  });

  it('refuses a cursor past the ids of users as malformed, and finds nobody for a search with a NUL', async () => {
    const { token } = await newAdmin();
    const cursor = Buffer.from('2147483648', 'latin1').toString('base64url');
    const refused = await call('GET', `/admin/users?cursor=${cursor}`, token);
    expect(refused.statusCode).toBe(422);
    expect(refused.json().detail[0].loc).toEqual(['query', 'cursor']);
    const nul = await call('GET', '/admin/users?search=%00', token);
    expect(nul.statusCode).toBe(200);
    expect(nul.json().users).toEqual([]);
  });

  it('disables an account (its token stops at once), enables it, and audits both with the acting admin', async () => {
    const { user: acting, token } = await newAdmin();
    const user = await fresh();
    const userToken = await loginToken(t.app, user.username);
    const disabled = await call('POST', `/admin/users/${user.id}/disable`, token);
    expect(disabled.statusCode).toBe(200);
    expect(disabled.json().disabled_at).toEqual(expect.any(String));
    expect((await call('GET', '/users/me', userToken)).statusCode).toBe(401);
    expect((await call('GET', '/conversation', userToken)).statusCode).toBe(401);
    const refused = await loginWithScope(t, user.username, 'conversation:read');
    expect(refused.statusCode).toBe(400);
    expect(refused.json()).toEqual(DISABLED);
    const enabled = await call('POST', `/admin/users/${user.id}/enable`, token);
    expect(enabled.json().disabled_at).toBeNull();
    await loginToken(t.app, user.username);
    expect((await storedEvents(user.id)).filter((event) => event.event.startsWith('user_'))).toEqual([
      { event: 'user_registered', detail: {} },
      {
        event: 'user_disabled',
        detail: { username: user.username, ended: 1, actor: `admin:${acting.id}`, actorUserId: acting.id },
      },
      {
        event: 'user_enabled',
        detail: { username: user.username, actor: `admin:${acting.id}`, actorUserId: acting.id },
      },
    ]);
  });

  it('grants and revokes the admin role', async () => {
    const { token } = await newAdmin();
    const user = await fresh();
    expect((await call('PUT', `/admin/users/${user.id}/roles/admin`, token)).json().roles).toEqual(['admin']);
    expect((await call('DELETE', `/admin/users/${user.id}/roles/admin`, token)).json().roles).toEqual([]);
    expect((await call('PUT', `/admin/users/${user.id}/roles/root`, token)).statusCode).toBe(422);
  });

  it("lists an account's sessions and ends one or all of them", async () => {
    const { token } = await newAdmin();
    const user = await fresh();
    const first = await loginToken(t.app, user.username);
    const second = await loginToken(t.app, user.username);
    const listed = await call('GET', `/admin/users/${user.id}/sessions`, token);
    expect(listed.json().sessions).toHaveLength(2);
    const sid = decodeToken(first).payload.sid as string;
    expect((await call('DELETE', `/admin/users/${user.id}/sessions/${sid}`, token)).statusCode).toBe(204);
    expect((await call('GET', '/users/me', first)).statusCode).toBe(401);
    expect((await call('DELETE', `/admin/users/${user.id}/sessions/${sid}`, token)).statusCode).toBe(404);
    const all = await call('DELETE', `/admin/users/${user.id}/sessions`, token);
    expect(all.json()).toEqual({ ended: 1 });
    expect((await call('GET', '/users/me', second)).statusCode).toBe(401);
  });

  it("never ends another account's session through an account's id", async () => {
    const { token } = await newAdmin();
    const owner = await fresh();
    const other = await fresh();
    const ownerToken = await loginToken(t.app, owner.username);
    const sid = decodeToken(ownerToken).payload.sid as string;
    expect((await call('DELETE', `/admin/users/${other.id}/sessions/${sid}`, token)).statusCode).toBe(404);
    expect((await call('GET', '/users/me', ownerToken)).statusCode).toBe(200);
  });

  it("pages through an account's audit events", async () => {
    const { token } = await newAdmin();
    const user = await fresh();
    await loginToken(t.app, user.username);
    const page = await call('GET', `/admin/users/${user.id}/audit-events?limit=1`, token);
    expect(page.statusCode).toBe(200);
    expect(page.json().events).toHaveLength(1);
    const rest = await call('GET', `/admin/users/${user.id}/audit-events?before=${page.json().next}`, token);
    expect(rest.json().events.map((event: { event: string }) => event.event)).toContain('user_registered');
  });

  it('deletes an account, after which it is not found and cannot log in', async () => {
    const { user: acting, token } = await newAdmin();
    const user = await fresh();
    expect((await call('DELETE', `/admin/users/${user.id}`, token)).statusCode).toBe(204);
    expect((await call('GET', `/admin/users/${user.id}`, token)).statusCode).toBe(404);
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: user.username, password: STRONG_PASSWORD },
    });
    expect(login.statusCode).toBe(400);
    expect((await storedEvents(user.id)).at(-1)).toEqual({
      event: 'user_deleted',
      detail: { username: user.username, actor: `admin:${acting.id}`, actorUserId: acting.id },
    });
  });

  it('answers unlock with unlocked false while login throttling is off', async () => {
    const { token } = await newAdmin();
    const user = await fresh();
    const response = await call('POST', `/admin/users/${user.id}/unlock`, token);
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ unlocked: false });
  });

  it('lists the admin routes in the OpenAPI document with the admin scope', async () => {
    const document = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(Object.keys(document.paths).filter((path) => path.startsWith('/admin/'))).toEqual(
      expect.arrayContaining(['/admin/users', '/admin/users/{id}', '/admin/users/{id}/audit-events']),
    );
    expect(document.paths['/admin/users'].get.security).toEqual([{ OAuth2PasswordBearer: ['admin'] }]);
  });
});

describe.each(dialects)('admin unlock with throttling on (%s)', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: { RATE_LIMITS: 'on', ACCOUNT_UNTRUSTED_FAILS: '2' },
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('forgets the failures that locked an account out for untrusted clients', async () => {
    const adminUser = await registerUser(
      t.app,
      registration({ username: 'boss', email: 'boss@example.com' }),
    );
    await t.database.db.updateTable('users').set({ roles: 'admin' }).where('id', '=', adminUser.id).execute();
    const token = await adminScopedToken(t, 'boss');
    const victim = await registerUser(
      t.app,
      registration({ username: 'victim', email: 'victim@example.com' }),
    );
    const attempt = (password: string, ip: string) =>
      t.app.inject({
        method: 'POST',
        url: '/token',
        remoteAddress: ip,
        payload: { username: 'victim', password },
      });
    expect((await attempt('wrong password one', '203.0.113.1')).statusCode).toBe(400);
    expect((await attempt('wrong password one', '203.0.113.2')).statusCode).toBe(400);
    expect((await attempt(STRONG_PASSWORD, '203.0.113.3')).statusCode).toBe(429);
    const unlocked = await t.app.inject({
      method: 'POST',
      url: `/admin/users/${victim.id}/unlock`,
      headers: { authorization: `Bearer ${token}` },
    });
    expect(unlocked.json()).toEqual({ unlocked: true });
    expect((await attempt(STRONG_PASSWORD, '203.0.113.3')).statusCode).toBe(200);
  });
});
