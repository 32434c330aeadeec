/**
 * Issue 4, signing out over real HTTP on SQLite and PostgreSQL: POST /logout and /logout/all reach unexpired
 * access tokens and refresh tokens at once, GET/DELETE /users/me/sessions never cross users, and a revocation
 * on one instance is refused at once by another instance sharing the database.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectAccessRefused, expectConversationOk, expectRefreshDead } from './support/assertions.ts';
import {
  BARE_BEARER_CHALLENGE,
  expectInvalidToken,
  expectNoStore,
  expectOAuthError,
  getWithToken,
  postForm,
  type Reply,
  registerUser,
  request,
} from './support/client.ts';
import { type Base, loginGrant, refreshRaw, toGrant } from './support/grants.ts';
import { DIALECTS, type RunningServer, startServer, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

async function post(on: Base, path: string, access?: string): Promise<Reply> {
  return await request(on.url(path), {
    method: 'POST',
    headers: access === undefined ? {} : { authorization: `Bearer ${access}` },
  });
}

async function del(on: Base, path: string, access: string): Promise<Reply> {
  return await request(on.url(path), { method: 'DELETE', headers: { authorization: `Bearer ${access}` } });
}

interface SessionView {
  id: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  user_agent: string | null;
  ip_address: string | null;
  current: boolean;
}

async function listSessions(on: Base, access: string): Promise<SessionView[]> {
  const r = await getWithToken(on.url('/users/me/sessions'), access);
  expect(r.status, r.text).toBe(200);
  expectNoStore(r);
  expect(Array.isArray(r.json?.sessions), r.text).toBe(true);
  return r.json.sessions as SessionView[];
}

describe.each(DIALECTS)('sessions: logout and session management (%s)', (dialect) => {
  const ctx = useServer(dialect);

  describe('POST /logout', () => {
    it('ends the current session: its unexpired access tokens are refused at once, its refresh token too', async () => {
      const u = await registerUser(ctx);
      const s1 = await loginGrant(ctx, u);
      const s1b = toGrant(ctx, await refreshRaw(ctx, s1.refresh), 'refresh s1');
      const s2 = await loginGrant(ctx, u);
      await expectConversationOk(ctx, s1.access, u.username, 'before logout'); // warm any verification cache
      await expectConversationOk(ctx, s1b.access, u.username, 'before logout');
      const r = await post(ctx, '/logout', s1b.access);
      expect(r.status, r.text).toBe(204);
      expect(r.text).toBe('');
      await expectAccessRefused(ctx, s1b.access, 'the token that logged out');
      await expectAccessRefused(ctx, s1.access, 'an older access token of the same session');
      await expectRefreshDead(ctx, s1b.refresh, 'live refresh token of the session');
      await expectRefreshDead(ctx, s1.refresh, 'spent refresh token of the session');
      // the other session is untouched
      await expectConversationOk(ctx, s2.access, u.username, 'other session');
      const s2b = toGrant(ctx, await refreshRaw(ctx, s2.refresh), 'refresh other session');
      expect(s2b.sid).toBe(s2.sid);
      // logging out again with the dead token: 401
      expectInvalidToken(await post(ctx, '/logout', s1b.access), 'second logout');
    });

    it('requires an access token: none → 401 Bearer; a refresh token, a garbage token, Basic → 401', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      const none = await post(ctx, '/logout');
      expect(none.status, none.text).toBe(401);
      expect(none.headers.get('www-authenticate') ?? '').toMatch(BARE_BEARER_CHALLENGE);
      expectInvalidToken(await post(ctx, '/logout', s.refresh), 'refresh token as Bearer');
      expectInvalidToken(await post(ctx, '/logout', 'abc.def.ghi'), 'garbage');
      const basic = await request(ctx.url('/logout'), {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${u.username}:${u.password}`).toString('base64')}` },
      });
      expect(basic.status, basic.text).toBe(401);
      // nothing of the above ended the session
      await expectConversationOk(ctx, s.access, u.username, 'after refused logouts');
      toGrant(ctx, await refreshRaw(ctx, s.refresh), 'refresh after refused logouts');
    });
  });

  describe('POST /logout/all', () => {
    it('ends every session of the user at once, access and refresh tokens alike; other users are untouched', async () => {
      const u = await registerUser(ctx);
      const other = await registerUser(ctx);
      const sessions = [await loginGrant(ctx, u), await loginGrant(ctx, u), await loginGrant(ctx, u)];
      const rotated = toGrant(ctx, await refreshRaw(ctx, sessions[2]!.refresh), 'rotate third');
      const o = await loginGrant(ctx, other);
      for (const s of sessions) await expectConversationOk(ctx, s.access, u.username, 'before logout/all');
      const r = await post(ctx, '/logout/all', sessions[1]!.access);
      expect(r.status, r.text).toBe(204);
      for (const [i, s] of sessions.entries()) {
        await expectAccessRefused(ctx, s.access, `session ${i} access token`);
      }
      await expectAccessRefused(ctx, rotated.access, 'rotated access token');
      await expectRefreshDead(ctx, sessions[0]!.refresh, 'session 0 refresh');
      await expectRefreshDead(ctx, sessions[1]!.refresh, 'session 1 refresh');
      await expectRefreshDead(ctx, rotated.refresh, 'session 2 live refresh');
      await expectConversationOk(ctx, o.access, other.username, 'another user');
      toGrant(ctx, await refreshRaw(ctx, o.refresh), 'another user refresh');
      // the user can sign in again, and sees only the new session
      const fresh = await loginGrant(ctx, u);
      const list = await listSessions(ctx, fresh.access);
      expect(list.map((s) => s.id)).toEqual([fresh.sid]);
    });

    it('without a token: 401; with a refresh token as Bearer: 401, nothing ended', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      const none = await post(ctx, '/logout/all');
      expect(none.status, none.text).toBe(401);
      expectInvalidToken(await post(ctx, '/logout/all', s.refresh), 'refresh token as Bearer');
      await expectConversationOk(ctx, s.access, u.username, 'after refused logout/all');
    });
  });

  describe('GET /users/me/sessions', () => {
    it('lists the live sessions with created, last used, expires, user agent, IP and current', async () => {
      const u = await registerUser(ctx);
      const a = await loginGrant(ctx, u, { 'user-agent': 'AgentA/1.0 (test)' });
      const b = await loginGrant(ctx, u, { 'user-agent': 'AgentB/2.0 (test)' });
      const list = await listSessions(ctx, a.access);
      expect(list.map((s) => s.id).sort()).toEqual([a.sid, b.sid].sort());
      for (const s of list) {
        for (const k of ['created_at', 'last_used_at', 'expires_at'] as const) {
          expect(Number.isNaN(Date.parse(s[k])), `${k}=${s[k]}`).toBe(false);
        }
        expect(Date.parse(s.expires_at)).toBeGreaterThan(Date.now());
        expect(Math.abs(Date.parse(s.created_at) - Date.now())).toBeLessThan(120_000);
        expect(s.ip_address ?? '').toMatch(/127\.0\.0\.1/);
      }
      const byId = new Map(list.map((s) => [s.id, s]));
      expect(byId.get(a.sid)?.user_agent).toBe('AgentA/1.0 (test)');
      expect(byId.get(b.sid)?.user_agent).toBe('AgentB/2.0 (test)');
      expect(byId.get(a.sid)?.current).toBe(true);
      expect(byId.get(b.sid)?.current).toBe(false);
      const fromB = await listSessions(ctx, b.access);
      expect(fromB.find((s) => s.current)?.id).toBe(b.sid);
      expect(fromB.filter((s) => s.current)).toHaveLength(1);
      // no secrets in the listing
      const text = JSON.stringify(fromB);
      for (const t of [a.refresh, b.refresh]) {
        expect(text).not.toContain(t.split('.')[1]);
      }
      expect(text).not.toContain(u.password);
    });

    it('never shows another user’s sessions, and drops ended ones', async () => {
      const u = await registerUser(ctx);
      const v = await registerUser(ctx);
      const a1 = await loginGrant(ctx, u);
      const a2 = await loginGrant(ctx, u);
      const b = await loginGrant(ctx, v);
      expect((await listSessions(ctx, b.access)).map((s) => s.id)).toEqual([b.sid]);
      expect((await post(ctx, '/logout', a2.access)).status).toBe(204);
      expect((await listSessions(ctx, a1.access)).map((s) => s.id)).toEqual([a1.sid]);
      expect((await postForm(ctx.url('/revoke'), { token: b.refresh })).status).toBe(200);
      await expectAccessRefused(ctx, b.access, 'revoked session of v');
    });

    it('last_used_at moves on refresh; expires_at is within the configured absolute lifetime', async () => {
      const u = await registerUser(ctx);
      const a = await loginGrant(ctx, u);
      const before = (await listSessions(ctx, a.access)).find((s) => s.id === a.sid)!;
      await new Promise((r) => setTimeout(r, 1100));
      const n = toGrant(ctx, await refreshRaw(ctx, a.refresh), 'refresh');
      const after = (await listSessions(ctx, n.access)).find((s) => s.id === a.sid)!;
      expect(after.created_at).toBe(before.created_at);
      expect(Date.parse(after.last_used_at)).toBeGreaterThan(Date.parse(before.last_used_at));
      // default absolute lifetime 30 days
      expect(Date.parse(after.expires_at) - Date.parse(after.created_at)).toBeLessThanOrEqual(
        30 * 86400_000 + 2000,
      );
    });
  });

  describe('DELETE /users/me/sessions/{id}', () => {
    it('ends one of the caller’s other sessions (204): its access and refresh tokens stop at once; 404 the second time', async () => {
      const u = await registerUser(ctx);
      const keep = await loginGrant(ctx, u);
      const end = await loginGrant(ctx, u);
      await expectConversationOk(ctx, end.access, u.username, 'before');
      const r = await del(ctx, `/users/me/sessions/${encodeURIComponent(end.sid)}`, keep.access);
      expect(r.status, r.text).toBe(204);
      await expectAccessRefused(ctx, end.access, 'ended session');
      await expectRefreshDead(ctx, end.refresh, 'ended session refresh');
      await expectConversationOk(ctx, keep.access, u.username, 'the caller’s session');
      expect((await listSessions(ctx, keep.access)).map((s) => s.id)).toEqual([keep.sid]);
      const again = await del(ctx, `/users/me/sessions/${encodeURIComponent(end.sid)}`, keep.access);
      expect(again.status, again.text).toBe(404);
    });

    it('ending the current session by id works like logout', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      const r = await del(ctx, `/users/me/sessions/${encodeURIComponent(s.sid)}`, s.access);
      expect(r.status, r.text).toBe(204);
      await expectAccessRefused(ctx, s.access, 'self-ended session');
      await expectRefreshDead(ctx, s.refresh, 'self-ended session refresh');
    });

    it('another user’s session id is 404 and that session keeps working', async () => {
      const u = await registerUser(ctx);
      const v = await registerUser(ctx);
      const mine = await loginGrant(ctx, u);
      const theirs = await loginGrant(ctx, v);
      const r = await del(ctx, `/users/me/sessions/${encodeURIComponent(theirs.sid)}`, mine.access);
      expect(r.status, r.text).toBe(404);
      expect(typeof r.json?.detail).toBe('string');
      await expectConversationOk(ctx, theirs.access, v.username, 'victim session');
      toGrant(ctx, await refreshRaw(ctx, theirs.refresh), 'victim refresh');
      // the 404 is the same as for an id that does not exist at all
      const none = await del(ctx, `/users/me/sessions/${'A'.repeat(22)}`, mine.access);
      expect(none.status, none.text).toBe(404);
      expect(none.json).toEqual(r.json);
    });

    it('odd ids give 404 (or 4xx), never 5xx, and end nothing', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      for (const id of [
        '0',
        '-1',
        "1' OR '1'='1",
        '%00',
        'x'.repeat(300),
        '..%2F..%2Fusers',
        encodeURIComponent(s.refresh),
        `${s.sid}%20`,
        `${s.sid}x`,
        ...[s.sid.toUpperCase(), s.sid.toLowerCase()].filter((v) => v !== s.sid),
      ]) {
        const r = await del(ctx, `/users/me/sessions/${id}`, s.access);
        expect(r.status, `${id.slice(0, 40)}: ${r.text}`).toBeGreaterThanOrEqual(400);
        expect(r.status, `${id.slice(0, 40)}: ${r.text}`).toBeLessThan(500);
      }
      await expectConversationOk(ctx, s.access, u.username, 'after odd deletions');
    });

    it('requires an access token', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      const r = await request(ctx.url(`/users/me/sessions/${s.sid}`), { method: 'DELETE' });
      expect(r.status, r.text).toBe(401);
      expectInvalidToken(await del(ctx, `/users/me/sessions/${s.sid}`, s.refresh), 'refresh token as Bearer');
      await expectConversationOk(ctx, s.access, u.username, 'after unauthenticated deletes');
    });
  });

  describe('two instances on one database', () => {
    let other: RunningServer | undefined;
    const b: Base = { url: (p: string) => other!.url(p) };
    beforeAll(async () => {
      other = await startServer({ databaseUrl: ctx.db.url });
    }, 60_000);
    afterAll(async () => {
      await other?.stop();
    }, 30_000);

    it('a logout on one instance is refused at once on the other (whose verification is warm)', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      const s2 = await loginGrant(ctx, u, {}, b); // a session opened on the second instance
      for (let i = 0; i < 3; i++) {
        await expectConversationOk(b, s.access, u.username, 'B accepts A’s token');
        await expectConversationOk(ctx, s2.access, u.username, 'A accepts B’s token');
      }
      expect((await post(ctx, '/logout', s.access)).status).toBe(204);
      await expectAccessRefused(b, s.access, 'B right after a logout on A');
      await expectRefreshDead(b, s.refresh, 'refresh on B after logout on A');
      await expectConversationOk(b, s2.access, u.username, 'other session still fine on B');
    });

    it('logout/all on B is refused at once on A', async () => {
      const u = await registerUser(ctx);
      const s1 = await loginGrant(ctx, u);
      const s2 = await loginGrant(ctx, u, {}, b);
      await expectConversationOk(ctx, s1.access, u.username, 'A warm');
      await expectConversationOk(ctx, s2.access, u.username, 'A warm');
      expect((await post(b, '/logout/all', s2.access)).status).toBe(204);
      await expectAccessRefused(ctx, s1.access, 'A after logout/all on B');
      await expectAccessRefused(ctx, s2.access, 'A after logout/all on B');
      await expectRefreshDead(ctx, s1.refresh, 'A refresh after logout/all on B');
    });

    it('revoke, session deletion and reuse detection on one instance reach the other at once', async () => {
      const u = await registerUser(ctx);
      const x = await loginGrant(ctx, u);
      const y = await loginGrant(ctx, u);
      const z = await loginGrant(ctx, u);
      for (const s of [x, y, z]) await expectConversationOk(b, s.access, u.username, 'B warm');
      expect((await postForm(ctx.url('/revoke'), { token: x.refresh })).status).toBe(200);
      await expectAccessRefused(b, x.access, 'B after /revoke on A');
      expect((await del(b, `/users/me/sessions/${y.sid}`, z.access)).status).toBe(204);
      await expectAccessRefused(ctx, y.access, 'A after DELETE session on B');
      await expectConversationOk(ctx, z.access, u.username, 'the remaining session on A');
      await expectConversationOk(b, z.access, u.username, 'the remaining session on B');
    });

    it('a refresh rotated on one instance continues on the other; a retry there gets the same successor', async () => {
      const u = await registerUser(ctx);
      const s = await loginGrant(ctx, u);
      const n1 = toGrant(ctx, await refreshRaw(ctx, s.refresh), 'rotate on A');
      const retry = await refreshRaw(b, s.refresh);
      expect(retry.status, retry.text).toBe(200);
      expect(retry.json.refresh_token).toBe(n1.refresh);
      const n2 = toGrant(ctx, await refreshRaw(b, n1.refresh), 'rotate on B');
      await expectConversationOk(ctx, n2.access, u.username, 'A accepts B’s rotated token');
      expectOAuthError(await refreshRaw(b, 'not.a-token'), 'invalid_grant');
    });
  });
});
