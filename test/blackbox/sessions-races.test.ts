/**
 * Issue 4, adversarial races over real HTTP on SQLite and PostgreSQL: a revocation (logout, /revoke, password
 * change, account deletion) racing refreshes or followed by a retry inside the grace window must never leave or
 * resurrect a live token of the ended session; parallel refreshes split across two instances on one database
 * still give one successor.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  getWithToken,
  postForm,
  type Reply,
  registerUser,
  request,
  splitToken,
  strongPassword,
} from './support/client.ts';
import { type Base, type Grant, loginGrant, refreshRaw, toGrant } from './support/grants.ts';
import { DIALECTS, type RunningServer, startServer, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

async function call(on: Base, method: string, path: string, access: string, body?: unknown): Promise<Reply> {
  return await request(on.url(path), {
    method,
    headers: {
      authorization: `Bearer ${access}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/** Every access token refused and every refresh token (spent or live) refused: the session is over for good. */
async function expectAllDead(on: Base, accesses: string[], refreshes: string[], what: string) {
  const problems: string[] = [];
  for (const a of new Set(accesses)) {
    const r = await getWithToken(on.url('/conversation'), a);
    if (r.status !== 401) problems.push(`access …${a.slice(-8)} → ${r.status} ${r.text.slice(0, 80)}`);
  }
  for (const t of new Set(refreshes)) {
    const r = await refreshRaw(on, t);
    if (r.status !== 400 || r.json?.error !== 'invalid_grant')
      problems.push(`refresh …${t.slice(-8)} → ${r.status} ${r.text.slice(0, 80)}`);
  }
  expect(problems, what).toEqual([]);
}

function collect(replies: Reply[]) {
  const ok = replies.filter((r) => r.status === 200);
  return {
    statuses: replies.map((r) => r.status),
    accesses: ok.map((r) => r.json.access_token as string),
    refreshes: ok.map((r) => r.json.refresh_token as string),
  };
}

describe.each(DIALECTS)('sessions: races (%s)', (dialect) => {
  const ctx = useServer(dialect); // default 10 s grace window: every retry below is inside it

  describe('a retry inside the grace window never resurrects an ended session', () => {
    it('after POST /logout', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = toGrant(ctx, await refreshRaw(ctx, g1.refresh), 'rotate');
      expect((await call(ctx, 'POST', '/logout', g2.access)).status).toBe(204);
      const retry = await refreshRaw(ctx, g1.refresh);
      expect(retry.status, `retry of the spent token after logout: ${retry.text}`).toBe(400);
      expect(retry.json?.error).toBe('invalid_grant');
      await expectAllDead(ctx, [g1.access, g2.access], [g1.refresh, g2.refresh], 'after logout + retry');
    });

    it('after POST /revoke of the live token', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = toGrant(ctx, await refreshRaw(ctx, g1.refresh), 'rotate');
      expect((await postForm(ctx.url('/revoke'), { token: g2.refresh })).status).toBe(200);
      const retry = await refreshRaw(ctx, g1.refresh);
      expect(retry.status, `retry of the spent token after revoke: ${retry.text}`).toBe(400);
      await expectAllDead(ctx, [g1.access, g2.access], [g1.refresh, g2.refresh], 'after revoke + retry');
    });

    it('after POST /revoke of the spent token', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = toGrant(ctx, await refreshRaw(ctx, g1.refresh), 'rotate');
      expect((await postForm(ctx.url('/revoke'), { token: g1.refresh })).status).toBe(200);
      const retry = await refreshRaw(ctx, g1.refresh);
      expect(retry.status, retry.text).not.toBe(200);
      expect(retry.status, retry.text).toBeLessThan(500);
      // whether revoking a spent token ends the session is the server's choice; a retry must not branch
      const head = await refreshRaw(ctx, g2.refresh);
      if (head.status === 200) {
        expect(splitToken(head.json.access_token).payload.sid).toBe(g1.sid);
      } else {
        await expectAllDead(ctx, [g1.access, g2.access], [g2.refresh], 'revoked via the spent token');
      }
    });

    it('after a password change ended the other session', async () => {
      const u = await registerUser(ctx);
      const current = await loginGrant(ctx, u);
      const other1 = await loginGrant(ctx, u);
      const other2 = toGrant(ctx, await refreshRaw(ctx, other1.refresh), 'rotate other');
      const change = await call(ctx, 'POST', '/users/me/password', current.access, {
        current_password: u.password,
        new_password: ctx.track(strongPassword()),
      });
      expect(change.status, change.text).toBe(204);
      const retry = await refreshRaw(ctx, other1.refresh);
      expect(retry.status, `retry of the other session's spent token: ${retry.text}`).toBe(400);
      await expectAllDead(
        ctx,
        [other1.access, other2.access],
        [other1.refresh, other2.refresh],
        'other session',
      );
      expect((await getWithToken(ctx.url('/conversation'), current.access)).status).toBe(200);
    });

    it('after DELETE /users/me/sessions/{id}', async () => {
      const u = await registerUser(ctx);
      const keep = await loginGrant(ctx, u);
      const g1 = await loginGrant(ctx, u);
      const g2 = toGrant(ctx, await refreshRaw(ctx, g1.refresh), 'rotate');
      expect((await call(ctx, 'DELETE', `/users/me/sessions/${g1.sid}`, keep.access)).status).toBe(204);
      const retry = await refreshRaw(ctx, g1.refresh);
      expect(retry.status, retry.text).toBe(400);
      await expectAllDead(ctx, [g1.access, g2.access], [g1.refresh, g2.refresh], 'ended session');
    });

    it('after DELETE /users/me', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = toGrant(ctx, await refreshRaw(ctx, g1.refresh), 'rotate');
      expect((await call(ctx, 'DELETE', '/users/me', g2.access, { password: u.password })).status).toBe(204);
      const retry = await refreshRaw(ctx, g1.refresh);
      expect(retry.status, retry.text).toBe(400);
      await expectAllDead(ctx, [g1.access, g2.access], [g1.refresh, g2.refresh], 'deleted user');
    });
  });

  describe('revocations racing refreshes', () => {
    it('POST /logout racing 10 refreshes: once both are done nothing of the session works', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const [logout, ...replies] = await Promise.all([
        call(ctx, 'POST', '/logout', g.access),
        ...Array.from({ length: 10 }, () => refreshRaw(ctx, g.refresh)),
      ]);
      expect(logout!.status, logout!.text).toBe(204);
      const c = collect(replies);
      expect(
        c.statuses.filter((s) => s >= 500),
        JSON.stringify(c.statuses),
      ).toEqual([]);
      await expectAllDead(ctx, [g.access, ...c.accesses], [g.refresh, ...c.refreshes], 'logout vs refreshes');
    });

    it('POST /logout/all racing a chain of refreshes of every session', async () => {
      const u = await registerUser(ctx);
      const sessions = await Promise.all([loginGrant(ctx, u), loginGrant(ctx, u), loginGrant(ctx, u)]);
      const accesses = sessions.map((s) => s.access);
      const refreshes = sessions.map((s) => s.refresh);
      const chain = async (s: Grant) => {
        let token = s.refresh;
        for (let i = 0; i < 5; i++) {
          const r = await refreshRaw(ctx, token);
          expect(r.status, r.text).toBeLessThan(500);
          if (r.status !== 200) return;
          accesses.push(r.json.access_token);
          refreshes.push(r.json.refresh_token);
          token = r.json.refresh_token;
        }
      };
      const [all] = await Promise.all([
        call(ctx, 'POST', '/logout/all', sessions[0]!.access),
        ...sessions.map((s) => chain(s)),
      ]);
      expect(all!.status, all!.text).toBe(204);
      await expectAllDead(ctx, accesses, refreshes, 'logout/all vs refresh chains');
    });

    it('a password change racing 10 refreshes of another session: that session ends for good', async () => {
      const u = await registerUser(ctx);
      const current = await loginGrant(ctx, u);
      const other = await loginGrant(ctx, u);
      const [change, ...replies] = await Promise.all([
        call(ctx, 'POST', '/users/me/password', current.access, {
          current_password: u.password,
          new_password: ctx.track(strongPassword()),
        }),
        ...Array.from({ length: 10 }, () => refreshRaw(ctx, other.refresh)),
      ]);
      expect(change!.status, change!.text).toBe(204);
      const c = collect(replies);
      expect(
        c.statuses.filter((s) => s >= 500),
        JSON.stringify(c.statuses),
      ).toEqual([]);
      await expectAllDead(
        ctx,
        [other.access, ...c.accesses],
        [other.refresh, ...c.refreshes],
        'other session',
      );
      expect((await getWithToken(ctx.url('/conversation'), current.access)).status).toBe(200);
    });

    it('account deletion racing 10 refreshes: every token dead afterwards, no 5xx', async () => {
      const u = await registerUser(ctx);
      const a = await loginGrant(ctx, u);
      const b = await loginGrant(ctx, u);
      const [del, ...replies] = await Promise.all([
        call(ctx, 'DELETE', '/users/me', a.access, { password: u.password }),
        ...Array.from({ length: 10 }, (_, i) => refreshRaw(ctx, i % 2 ? a.refresh : b.refresh)),
      ]);
      expect(del!.status, del!.text).toBe(204);
      const c = collect(replies);
      expect(
        c.statuses.filter((s) => s >= 500),
        JSON.stringify(c.statuses),
      ).toEqual([]);
      await expectAllDead(
        ctx,
        [a.access, b.access, ...c.accesses],
        [a.refresh, b.refresh, ...c.refreshes],
        'deleted account',
      );
    });

    it('two users changing passwords and logging out all at once: no 5xx', async () => {
      const users = await Promise.all(Array.from({ length: 4 }, () => registerUser(ctx)));
      const grants = await Promise.all(users.map((u) => loginGrant(ctx, u)));
      const replies = await Promise.all(
        grants.flatMap((g, i) => [
          call(ctx, 'POST', '/logout/all', g.access),
          call(ctx, 'POST', '/users/me/password', g.access, {
            current_password: users[i]!.password,
            new_password: strongPassword(),
          }),
          call(ctx, 'GET', '/users/me/sessions', g.access),
          refreshRaw(ctx, g.refresh),
        ]),
      );
      expect(replies.filter((r) => r.status >= 500).map((r) => r.text)).toEqual([]);
    });
  });

  describe('two instances on one database', () => {
    let other: RunningServer | undefined;
    const B: Base = { url: (p) => other!.url(p) };
    beforeAll(async () => {
      other = await startServer({ databaseUrl: ctx.db.url });
    }, 60_000);
    afterAll(async () => {
      await other?.stop();
    }, 30_000);

    it('20 parallel refreshes of one token split over two instances: no 5xx, one successor, usable from it', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) => refreshRaw(i % 2 ? B : ctx, g.refresh)),
      );
      const statuses = replies.map((r) => r.status);
      expect(
        statuses.filter((s) => s >= 500),
        JSON.stringify(statuses),
      ).toEqual([]);
      expect(replies.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.text}`)).toEqual([]);
      const successors = new Set(replies.map((r) => r.json.refresh_token as string));
      expect(successors.size, [...successors].join('\n')).toBe(1);
      const head = [...successors][0]!;
      ctx.track(head);
      const next = toGrant(ctx, await refreshRaw(B, head), 'refresh the head on B');
      expect(next.sid).toBe(g.sid);
      const list = await getWithToken(ctx.url('/users/me/sessions'), next.access);
      expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([g.sid]);
    });

    it('a logout on A racing refreshes on B leaves nothing alive on either', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      await getWithToken(B.url('/conversation'), g.access); // warm B
      const [logout, ...replies] = await Promise.all([
        call(ctx, 'POST', '/logout', g.access),
        ...Array.from({ length: 8 }, () => refreshRaw(B, g.refresh)),
      ]);
      expect(logout!.status).toBe(204);
      const c = collect(replies);
      expect(c.statuses.filter((s) => s >= 500)).toEqual([]);
      await expectAllDead(B, [g.access, ...c.accesses], [g.refresh, ...c.refreshes], 'on B');
      await expectAllDead(ctx, [g.access, ...c.accesses], [], 'on A');
    });
  });
});
