/**
 * Issue 4, account self-service over real HTTP on SQLite and PostgreSQL: GET/PATCH /users/me (the registration
 * rules and 409s), POST /users/me/password (other sessions end, the current one stays), DELETE /users/me
 * (password required; afterwards every token is refused, login fails, the name is free again).
 */
import { describe, expect, it, vi } from 'vitest';
import { expectAccessRefused, expectConversationOk, expectRefreshDead } from './support/assertions.ts';
import {
  BARE_BEARER_CHALLENGE,
  expect422,
  expectInvalidToken,
  expectJsonContentType,
  expectNoStore,
  getWithToken,
  postForm,
  postJson,
  type RegisteredUser,
  type Reply,
  registerUser,
  request,
  strongPassword,
  uniqueName,
} from './support/client.ts';
import { loginGrant, refreshRaw, toGrant } from './support/grants.ts';
import { DIALECTS, randomId, type ServerContext, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

async function loginRaw(ctx: ServerContext, username: string, password: string): Promise<Reply> {
  return await postForm(ctx.url('/token'), { grant_type: 'password', username, password });
}

async function send(
  ctx: ServerContext,
  method: string,
  path: string,
  access: string | undefined,
  body?: unknown,
): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (access !== undefined) headers.authorization = `Bearer ${access}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return await request(ctx.url(path), {
    method,
    headers,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
}

// Registration's fields (the seed's), and the state of the email (issue 13).
function publicFields(u: RegisteredUser) {
  return {
    id: u.id,
    username: u.username,
    email: u.email,
    age: u.age,
    level: u.level,
    email_verified: false,
    pending_email: null,
  };
}

describe.each(DIALECTS)('sessions: account self-service (%s)', (dialect) => {
  const ctx = useServer(dialect);

  describe('GET /users/me', () => {
    it('returns exactly the public fields of the seed, and the state of the email', async () => {
      const u = await registerUser(ctx, { age: 41, level: 'advanced' });
      const g = await loginGrant(ctx, u);
      const r = await getWithToken(ctx.url('/users/me'), g.access);
      expect(r.status, r.text).toBe(200);
      expectJsonContentType(r);
      expectNoStore(r);
      expect(r.json).toEqual(publicFields(u));
      expect(Object.keys(r.json).sort()).toEqual([
        'age',
        'email',
        'email_verified',
        'id',
        'level',
        'pending_email',
        'username',
      ]);
      expect(r.text).not.toMatch(/password|hash|argon/i);
    });

    it('without a token: 401 with a bare Bearer challenge; a refresh token is not accepted', async () => {
      const r = await request(ctx.url('/users/me'));
      expect(r.status, r.text).toBe(401);
      expect(r.headers.get('www-authenticate') ?? '').toMatch(BARE_BEARER_CHALLENGE);
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      expectInvalidToken(await getWithToken(ctx.url('/users/me'), g.refresh), 'refresh token as Bearer');
    });
  });

  describe('PATCH /users/me', () => {
    it('changes age and level and asks for the new email; the change is visible in GET and to later logins', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const email = `new-${randomId(4)}@Example.org`;
      const r = await send(ctx, 'PATCH', '/users/me', g.access, {
        email,
        current_password: u.password,
        age: 55,
        level: 'intermediate',
      });
      expect(r.status, r.text).toBe(200);
      // The email itself changes once the link mailed to the new address is used.
      expect(r.json).toEqual({ ...publicFields(u), pending_email: email, age: 55, level: 'intermediate' });
      const again = await getWithToken(ctx.url('/users/me'), g.access);
      expect(again.json).toEqual(r.json);
      const g2 = await loginGrant(ctx, u);
      expect((await getWithToken(ctx.url('/users/me'), g2.access)).json).toEqual(r.json);
      // a partial update leaves the rest alone
      const p = await send(ctx, 'PATCH', '/users/me', g.access, { level: 'beginner' });
      expect(p.status, p.text).toBe(200);
      expect(p.json).toEqual({ ...r.json, level: 'beginner' });
    });

    it('takes a digit-string age as registration does ("42" → 42)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await send(ctx, 'PATCH', '/users/me', g.access, { age: '42' });
      expect(r.status, r.text).toBe(200);
      expect(r.json.age).toBe(42);
    });

    it.each([
      ['age', 151],
      ['age', -1],
      ['age', 42.5],
      ['age', true],
      ['age', 'forty'],
      ['age', 1e30],
      ['age', null],
      ['level', 'admin'],
      ['level', 'BEGINNER'],
      ['level', ''],
      ['email', 'not-an-email'],
      ['email', ''],
      ['email', `${'a'.repeat(245)}@example.com`],
      ['email', 42],
    ])('refuses %s=%j with a FastAPI-shaped 422 and changes nothing', async (field, value) => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await send(ctx, 'PATCH', '/users/me', g.access, { [field]: value });
      expect422(r, field);
      expect((await getWithToken(ctx.url('/users/me'), g.access)).json).toEqual(publicFields(u));
    });

    it('refuses a valid change combined with an invalid one atomically', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await send(ctx, 'PATCH', '/users/me', g.access, { level: 'advanced', age: 200 });
      expect422(r, 'age');
      expect((await getWithToken(ctx.url('/users/me'), g.access)).json).toEqual(publicFields(u));
    });

    it('refuses a non-JSON or non-object body without a 5xx', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      for (const body of ['not json', '[1,2]', '"x"', 'null']) {
        const r = await send(ctx, 'PATCH', '/users/me', g.access, body);
        expect([400, 415, 422], `${body}: ${r.status} ${r.text}`).toContain(r.status);
      }
      const form = await request(ctx.url('/users/me'), {
        method: 'PATCH',
        headers: { authorization: `Bearer ${g.access}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'level=advanced',
      });
      expect(form.status, form.text).toBeGreaterThanOrEqual(400);
      expect(form.status, form.text).toBeLessThan(500);
      expect((await getWithToken(ctx.url('/users/me'), g.access)).json).toEqual(publicFields(u));
    });

    it('ignores username, id, password and unknown fields: they never reach the database', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await send(ctx, 'PATCH', '/users/me', g.access, {
        username: `hijack${randomId(3)}`,
        id: 1,
        password: strongPassword(),
        password_hash: 'x',
        is_admin: true,
        age: 33,
      });
      expect([200, 422], r.text).toContain(r.status);
      const me = (await getWithToken(ctx.url('/users/me'), g.access)).json;
      expect(me.username).toBe(u.username);
      expect(me.id).toBe(u.id);
      // the password did not change
      expect((await loginRaw(ctx, u.username, u.password)).status).toBe(200);
    });

    it('409 email_taken for another user’s email in any letter case; one’s own email (recased) is fine', async () => {
      const a = await registerUser(ctx);
      const b = await registerUser(ctx);
      const gb = await loginGrant(ctx, b);
      const r = await send(ctx, 'PATCH', '/users/me', gb.access, {
        email: a.email.toUpperCase(),
        current_password: b.password,
      });
      expect(r.status, r.text).toBe(409);
      expectJsonContentType(r);
      expect(r.json.code).toBe('email_taken');
      expect(r.json.detail).toMatch(/email/i);
      expect(Object.keys(r.json).sort()).toEqual(['code', 'detail']);
      expect((await getWithToken(ctx.url('/users/me'), gb.access)).json.email).toBe(b.email);
      const own = await send(ctx, 'PATCH', '/users/me', gb.access, { email: b.email.toUpperCase() });
      expect(own.status, `own email recased: ${own.text}`).toBe(200);
    });

    it('keeps the old email until the new one is verified: registration still sees the old one taken, the new one free', async () => {
      const a = await registerUser(ctx);
      const g = await loginGrant(ctx, a);
      const newEmail = `moved-${randomId(4)}@example.com`;
      const patched = await send(ctx, 'PATCH', '/users/me', g.access, {
        email: newEmail,
        current_password: a.password,
      });
      expect(patched.status, patched.text).toBe(200);
      expect(patched.json.email).toBe(a.email);
      expect(patched.json.pending_email).toBe(newEmail);
      const old = await postJson(ctx.url('/register/'), {
        username: uniqueName('r'),
        email: a.email.toUpperCase(),
        password: strongPassword(),
        age: 20,
        level: 'beginner',
      });
      expect(old.status, old.text).toBe(409);
      expect(old.json.code).toBe('email_taken');
      // A pending address is no claim: whoever proves it first gets it (409 at verification for the other).
      await registerUser(ctx, { email: newEmail });
    });

    it('users racing to ask for one new email: one mail per address a minute (R9), 429 for the rest, no 5xx', async () => {
      const users = await Promise.all(Array.from({ length: 6 }, () => registerUser(ctx)));
      const grants = await Promise.all(users.map((u) => loginGrant(ctx, u)));
      const email = `race-${randomId(5)}@example.com`;
      const replies = await Promise.all(
        grants.map((g, i) =>
          send(ctx, 'PATCH', '/users/me', g.access, {
            email: i % 2 ? email.toUpperCase() : email,
            current_password: users[i]?.password,
          }),
        ),
      );
      const statuses = replies.map((r) => r.status).sort();
      // A pending address is no claim, so no 409 here: verification decides who gets it (409 email_taken there).
      expect(statuses, replies.map((r) => r.text).join('\n')).toEqual([200, 429, 429, 429, 429, 429]);
      for (const [i, r] of replies.entries()) {
        if (r.status === 200)
          expect(r.json).toMatchObject({ email: users[i]?.email, pending_email: r.json.pending_email });
        else expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(60);
      }
    });

    it('requires an access token', async () => {
      const r = await send(ctx, 'PATCH', '/users/me', undefined, { age: 20 });
      expect(r.status, r.text).toBe(401);
    });
  });

  describe('POST /users/me/password', () => {
    it('a wrong current password is a 4xx and changes nothing (no session ends)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const other = await loginGrant(ctx, u);
      const r = await send(ctx, 'POST', '/users/me/password', g.access, {
        current_password: `${u.password}x`,
        new_password: strongPassword(),
      });
      expect(r.status, r.text).toBeGreaterThanOrEqual(400);
      expect(r.status, r.text).toBeLessThan(500);
      expect(r.status, r.text).not.toBe(401); // a wrong password must not look like a dead session
      expect((await loginRaw(ctx, u.username, u.password)).status).toBe(200);
      await expectConversationOk(ctx, g.access, u.username, 'current session');
      await expectConversationOk(ctx, other.access, u.username, 'other session');
    });

    it('a weak or too short new password is a 422 with the reason; missing fields are 422', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      for (const newPassword of ['password123', 'short', u.username, '']) {
        const r = await send(ctx, 'POST', '/users/me/password', g.access, {
          current_password: u.password,
          new_password: newPassword,
        });
        expect422(r);
      }
      expect422(await send(ctx, 'POST', '/users/me/password', g.access, { new_password: strongPassword() }));
      expect422(await send(ctx, 'POST', '/users/me/password', g.access, { current_password: u.password }));
      expect((await loginRaw(ctx, u.username, u.password)).status).toBe(200);
    });

    it('success: 204, every other session ends at once, the current one goes on; old password refused', async () => {
      const u = await registerUser(ctx);
      const current = await loginGrant(ctx, u);
      const o1 = await loginGrant(ctx, u);
      const o2 = await loginGrant(ctx, u);
      const o2b = toGrant(ctx, await refreshRaw(ctx, o2.refresh), 'rotate o2');
      await expectConversationOk(ctx, o1.access, u.username, 'warm');
      const newPassword = ctx.track(strongPassword());
      const r = await send(ctx, 'POST', '/users/me/password', current.access, {
        current_password: u.password,
        new_password: newPassword,
      });
      expect(r.status, r.text).toBe(204);
      // the other sessions: access and refresh tokens dead at once
      await expectAccessRefused(ctx, o1.access, 'other session 1');
      await expectAccessRefused(ctx, o2.access, 'other session 2');
      await expectAccessRefused(ctx, o2b.access, 'other session 2, rotated');
      await expectRefreshDead(ctx, o1.refresh, 'other session 1 refresh');
      await expectRefreshDead(ctx, o2b.refresh, 'other session 2 refresh');
      // the current session: access and refresh token alive
      await expectConversationOk(ctx, current.access, u.username, 'current session');
      const next = toGrant(ctx, await refreshRaw(ctx, current.refresh), 'refresh the current session');
      expect(next.sid).toBe(current.sid);
      await expectConversationOk(ctx, next.access, u.username, 'current session, rotated');
      const list = await getWithToken(ctx.url('/users/me/sessions'), next.access);
      expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([current.sid]);
      // passwords
      const old = await loginRaw(ctx, u.username, u.password);
      expect(old.status, old.text).toBe(400);
      expect(old.json.error).toBe('invalid_grant');
      expect((await loginRaw(ctx, u.username.toUpperCase(), newPassword)).status).toBe(200);
    });

    it('the old password no longer changes the password (a replay of the same request fails)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const p2 = ctx.track(strongPassword());
      const body = { current_password: u.password, new_password: p2 };
      expect((await send(ctx, 'POST', '/users/me/password', g.access, body)).status).toBe(204);
      const replay = await send(ctx, 'POST', '/users/me/password', g.access, {
        current_password: u.password,
        new_password: strongPassword(),
      });
      expect(replay.status, replay.text).toBeGreaterThanOrEqual(400);
      expect(replay.status, replay.text).toBeLessThan(500);
      expect((await loginRaw(ctx, u.username, p2)).status).toBe(200);
    });

    it('requires an access token (a refresh token is not one)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const body = { current_password: u.password, new_password: strongPassword() };
      expect((await send(ctx, 'POST', '/users/me/password', undefined, body)).status).toBe(401);
      expectInvalidToken(await send(ctx, 'POST', '/users/me/password', g.refresh, body), 'refresh as Bearer');
      expect((await loginRaw(ctx, u.username, u.password)).status).toBe(200);
    });
  });

  describe('DELETE /users/me', () => {
    it('requires the password: missing → 422 (or 400), wrong → 4xx; the account survives both', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const missing = await send(ctx, 'DELETE', '/users/me', g.access, {});
      expect([400, 422], missing.text).toContain(missing.status);
      const noBody = await send(ctx, 'DELETE', '/users/me', g.access);
      expect(noBody.status, noBody.text).toBeGreaterThanOrEqual(400);
      expect(noBody.status, noBody.text).toBeLessThan(500);
      const wrong = await send(ctx, 'DELETE', '/users/me', g.access, { password: `${u.password}!` });
      expect(wrong.status, wrong.text).toBeGreaterThanOrEqual(400);
      expect(wrong.status, wrong.text).toBeLessThan(500);
      expect(wrong.status, wrong.text).not.toBe(401);
      await expectConversationOk(ctx, g.access, u.username, 'after refused deletions');
      expect((await loginRaw(ctx, u.username, u.password)).status).toBe(200);
    });

    it('deletes the user: every token refused, refresh dead, login fails, the name and email are free again', async () => {
      const u = await registerUser(ctx, { username: uniqueName('Del') });
      const g1 = await loginGrant(ctx, u);
      const g2 = await loginGrant(ctx, u);
      const g2b = toGrant(ctx, await refreshRaw(ctx, g2.refresh), 'rotate');
      await expectConversationOk(ctx, g2.access, u.username, 'warm');
      const r = await send(ctx, 'DELETE', '/users/me', g1.access, { password: u.password });
      expect(r.status, r.text).toBe(204);
      for (const [what, a] of [
        ['deleting session', g1.access],
        ['other session', g2.access],
        ['other session rotated', g2b.access],
      ] as const) {
        await expectAccessRefused(ctx, a, what);
      }
      await expectRefreshDead(ctx, g1.refresh, 'deleting session refresh');
      await expectRefreshDead(ctx, g2b.refresh, 'other session refresh');
      const login = await loginRaw(ctx, u.username, u.password);
      expect(login.status, login.text).toBe(400);
      expect(login.json.error).toBe('invalid_grant');
      // deleting again with the dead token: 401
      expectInvalidToken(
        await send(ctx, 'DELETE', '/users/me', g1.access, { password: u.password }),
        'delete again',
      );
      // the username (any case) and the email can be registered again: a new account
      const again = await registerUser(ctx, {
        username: u.username.toLowerCase(),
        email: u.email.toUpperCase(),
      });
      expect(again.username).toBe(u.username.toLowerCase());
      const fresh = await loginGrant(ctx, again);
      await expectConversationOk(ctx, fresh.access, again.username, 'the new account');
      // the old tokens stay dead even though a user of that name exists again (and maybe with the same id)
      for (const a of [g1.access, g2.access, g2b.access])
        await expectAccessRefused(ctx, a, 'old token after re-registration');
      await expectRefreshDead(ctx, g2b.refresh, 'old refresh after re-registration');
      // the new account starts with its own sessions only
      const list = await getWithToken(ctx.url('/users/me/sessions'), fresh.access);
      expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([fresh.sid]);
      // and a fresh conversation (the welcome message)
      const conv = await getWithToken(ctx.url('/conversation'), fresh.access);
      expect(typeof conv.json.conversation).toBe('string');
    });

    it('requires an access token (a refresh token is not one)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      expect((await send(ctx, 'DELETE', '/users/me', undefined, { password: u.password })).status).toBe(401);
      expectInvalidToken(
        await send(ctx, 'DELETE', '/users/me', g.refresh, { password: u.password }),
        'refresh',
      );
      await expectConversationOk(ctx, g.access, u.username, 'still there');
    });

    it('deleting one user leaves another untouched', async () => {
      const a = await registerUser(ctx);
      const b = await registerUser(ctx);
      const ga = await loginGrant(ctx, a);
      const gb = await loginGrant(ctx, b);
      expect((await send(ctx, 'DELETE', '/users/me', ga.access, { password: a.password })).status).toBe(204);
      await expectConversationOk(ctx, gb.access, b.username, 'other user');
      expect((await getWithToken(ctx.url('/users/me'), gb.access)).json).toEqual(publicFields(b));
      toGrant(ctx, await refreshRaw(ctx, gb.refresh), 'other user refresh');
    });
  });
});
