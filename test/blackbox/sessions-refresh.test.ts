/**
 * Issue 4, sessions and refresh tokens, over real HTTP on SQLite and PostgreSQL:
 * rotation (form and JSON), retries inside the grace window, reuse after it (theft: the whole family and its
 * access tokens end), 20 parallel refreshes of one token, `sid` in access tokens, and POST /revoke (RFC 7009).
 */
import { describe, expect, it, vi } from 'vitest';
import { expectAccessRefused, expectConversationOk } from './support/assertions.ts';
import {
  expectInvalidToken,
  expectNoStore,
  expectOAuthError,
  getWithToken,
  postForm,
  postJson,
  type RegisteredUser,
  type Reply,
  registerUser,
  request,
  sleep,
  splitToken,
} from './support/client.ts';
import { DIALECTS, type ServerContext, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const GRACE_SECONDS = 2;

interface Grant {
  access: string;
  refresh: string;
  sid: string;
  reply: Reply;
}

function toGrant(ctx: ServerContext, r: Reply, what: string): Grant {
  expect(r.status, `${what}: ${r.text}`).toBe(200);
  expectNoStore(r);
  expect(r.json.token_type, what).toBe('bearer');
  expect(typeof r.json.access_token, what).toBe('string');
  expect(typeof r.json.refresh_token, what).toBe('string');
  ctx.track(r.json.access_token);
  ctx.track(r.json.refresh_token);
  const sid = splitToken(r.json.access_token).payload.sid;
  return { access: r.json.access_token, refresh: r.json.refresh_token, sid, reply: r };
}

async function loginGrant(ctx: ServerContext, u: RegisteredUser, headers: Record<string, string> = {}) {
  const r = await postForm(
    ctx.url('/token'),
    { grant_type: 'password', username: u.username, password: u.password },
    headers,
  );
  return toGrant(ctx, r, `login ${u.username}`);
}

async function refreshRaw(ctx: ServerContext, token: string, mode: 'form' | 'json' = 'form'): Promise<Reply> {
  const fields = { grant_type: 'refresh_token', refresh_token: token };
  return mode === 'form'
    ? await postForm(ctx.url('/token'), fields)
    : await postJson(ctx.url('/token'), fields);
}

async function refresh(ctx: ServerContext, token: string, mode: 'form' | 'json' = 'form'): Promise<Grant> {
  return toGrant(ctx, await refreshRaw(ctx, token, mode), `refresh (${mode})`);
}

describe.each(DIALECTS)('sessions: refresh tokens (%s)', (dialect) => {
  const ctx = useServer(dialect, {
    REFRESH_TOKEN_REUSE_GRACE_SECONDS: String(GRACE_SECONDS),
    LOG_LEVEL: 'info',
  });

  describe('the password grant opens a session', () => {
    it('returns an opaque id.secret refresh token with at least 256 bits of secret, and an access token with sid', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      expect(g.refresh).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      const [id, secret] = g.refresh.split('.') as [string, string];
      expect(id.length).toBeGreaterThan(0);
      // ≥ 256 bits: at least 32 bytes once decoded (base64url) — 43 characters or more
      expect(secret.length, g.refresh).toBeGreaterThanOrEqual(43);
      expect(Buffer.from(secret, 'base64url').length).toBeGreaterThanOrEqual(32);
      // not a JWT, not the access token
      expect(g.refresh.split('.').length).toBe(2);
      expect(g.refresh).not.toBe(g.access);
      const { header, payload } = splitToken(g.access);
      expect(header.typ).toBe('at+jwt');
      expect(typeof payload.sid, JSON.stringify(payload)).toBe('string');
      expect(payload.sid.length).toBeGreaterThan(0);
      expect(payload.sub).toBe(String(u.id));
      // two logins are two sessions
      const g2 = await loginGrant(ctx, u);
      expect(g2.sid).not.toBe(g.sid);
      expect(g2.refresh).not.toBe(g.refresh);
    });

    it('a refresh token is not an access token, and an access token is not a refresh token', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      expectInvalidToken(await getWithToken(ctx.url('/conversation'), g.refresh), 'refresh token as Bearer');
      expectOAuthError(await refreshRaw(ctx, g.access), 'invalid_grant');
      // the session survives both attempts
      await expectConversationOk(ctx, g.access, u.username, 'access token after the misuse');
      await refresh(ctx, g.refresh);
    });
  });

  describe('rotation', () => {
    it.each(['form', 'json'] as const)(
      'grant_type=refresh_token (%s) rotates: new refresh token in the same family, new access token with the same sid',
      async (mode) => {
        const u = await registerUser(ctx);
        const g1 = await loginGrant(ctx, u);
        const g2 = await refresh(ctx, g1.refresh, mode);
        expect(g2.refresh).not.toBe(g1.refresh);
        expect(g2.access).not.toBe(g1.access);
        expect(g2.sid).toBe(g1.sid);
        expect(typeof g2.reply.json.expires_in).toBe('number');
        expect(splitToken(g2.access).payload.sub).toBe(String(u.id));
        await expectConversationOk(ctx, g2.access, u.username, 'rotated access token');
        // the access token from before the rotation stays valid (same live session)
        await expectConversationOk(ctx, g1.access, u.username, 'older access token of a live session');
        const g3 = await refresh(ctx, g2.refresh, mode === 'form' ? 'json' : 'form');
        expect(g3.sid).toBe(g1.sid);
        expect(new Set([g1.refresh, g2.refresh, g3.refresh]).size).toBe(3);
        await expectConversationOk(ctx, g3.access, u.username, 'second rotation');
      },
    );

    it('refuses malformed and unknown refresh tokens with 400 invalid_grant / invalid_request, never 5xx', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const [id, secret] = g.refresh.split('.') as [string, string];
      const flipped = (secret[0] === 'A' ? 'B' : 'A') + secret.slice(1);
      const bad = [
        'nope',
        '.',
        `${id}.`,
        `.${secret}`,
        `${id}.${flipped}`,
        `${id}.${secret}x`,
        `${id}.${secret.slice(0, -1)}`,
        `${id}x.${secret}`,
        `${g.refresh}.${secret}`,
        'a'.repeat(4000),
        "' OR 1=1 --.x",
      ];
      for (const t of bad) {
        const r = await refreshRaw(ctx, t);
        expect(r.status, `${t.slice(0, 40)}: ${r.text}`).toBe(400);
        expect(r.json?.error, t.slice(0, 40)).toBe('invalid_grant');
      }
      expectOAuthError(await postForm(ctx.url('/token'), { grant_type: 'refresh_token' }), 'invalid_request');
      expectOAuthError(await postJson(ctx.url('/token'), { grant_type: 'refresh_token' }), 'invalid_request');
      // a guessed secret for a real id must not have ended the session nor spent the token
      const next = await refresh(ctx, g.refresh);
      expect(next.sid).toBe(g.sid);
    });

    it('a refresh token of one user never yields tokens of another user', async () => {
      const a = await registerUser(ctx);
      const b = await registerUser(ctx);
      const ga = await loginGrant(ctx, a);
      const gb = await loginGrant(ctx, b);
      const na = await refresh(ctx, ga.refresh);
      const nb = await refresh(ctx, gb.refresh, 'json');
      expect(splitToken(na.access).payload.sub).toBe(String(a.id));
      expect(splitToken(nb.access).payload.sub).toBe(String(b.id));
      expect(na.sid).not.toBe(nb.sid);
      // the id of one with the secret of the other
      const mixed = `${ga.refresh.split('.')[0]}.${gb.refresh.split('.')[1]}`;
      expectOAuthError(await refreshRaw(ctx, mixed), 'invalid_grant');
    });
  });

  describe('grace window (retries)', () => {
    it.each(['form', 'json'] as const)(
      'a retry inside the window (%s) gets the very same successor refresh token, and the family goes on from it',
      async (mode) => {
        const u = await registerUser(ctx);
        const g1 = await loginGrant(ctx, u);
        const g2 = await refresh(ctx, g1.refresh, mode);
        const retry = await refresh(ctx, g1.refresh, mode);
        expect(retry.refresh, 'retry must get the same successor, not a new branch').toBe(g2.refresh);
        expect(retry.sid).toBe(g1.sid);
        await expectConversationOk(ctx, retry.access, u.username, 'access token of the retry');
        const g3 = await refresh(ctx, g2.refresh, mode);
        expect(g3.sid).toBe(g1.sid);
        await expectConversationOk(ctx, g3.access, u.username, 'after the retry');
        // still one session for this user
        const list = await getWithToken(ctx.url('/users/me/sessions'), g3.access);
        expect(list.status, list.text).toBe(200);
        expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([g1.sid]);
      },
    );

    it('a retry of a token two generations back (inside the window) gets the live head, not a new branch', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = await refresh(ctx, g1.refresh);
      const g3 = await refresh(ctx, g2.refresh);
      const r = await refreshRaw(ctx, g1.refresh);
      expect(r.status, r.text).toBeLessThan(500);
      if (r.status === 200) {
        // README: "R1 again within 10 s of its use ─► the family's live head again (R3), no new branch"
        expect(r.json.refresh_token, 'a second live head would be a new branch').toBe(g3.refresh);
      } else {
        expectOAuthError(r, 'invalid_grant');
      }
      // the family has exactly one head and goes on from it
      const g4 = await refresh(ctx, g3.refresh);
      expect(g4.sid).toBe(g1.sid);
      await expectConversationOk(ctx, g4.access, u.username, 'family after the retry');
    });

    it('20 parallel refreshes of one token: no 5xx, one identical successor, the family usable from it and only from it', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const other = await loginGrant(ctx, u); // an unrelated session of the same user
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) => refreshRaw(ctx, g1.refresh, i % 2 ? 'json' : 'form')),
      );
      const statuses = replies.map((r) => r.status);
      expect(
        statuses.filter((s) => s >= 500),
        JSON.stringify(statuses),
      ).toEqual([]);
      expect(
        replies.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.text}`),
        'every racer is inside the grace window: each gets the successor',
      ).toEqual([]);
      const successors = new Set(replies.map((r) => r.json.refresh_token as string));
      expect(successors.size, [...successors].join('\n')).toBe(1);
      const head = [...successors][0] as string;
      ctx.track(head);
      expect(head).not.toBe(g1.refresh);
      for (const r of replies) {
        expect(splitToken(r.json.access_token).payload.sid).toBe(g1.sid);
      }
      // every access token handed out works
      for (const r of replies.slice(0, 5)) {
        await expectConversationOk(ctx, r.json.access_token, u.username, 'access token from a racer');
      }
      // the family goes on from the head …
      const next = await refresh(ctx, head);
      expect(next.sid).toBe(g1.sid);
      await expectConversationOk(ctx, next.access, u.username, 'after the race');
      // … and only from it: the user still has exactly two sessions (no extra family was opened)
      const list = await getWithToken(ctx.url('/users/me/sessions'), next.access);
      expect(list.status, list.text).toBe(200);
      expect(list.json.sessions.map((s: { id: string }) => s.id).sort()).toEqual([g1.sid, other.sid].sort());
      // after the grace window, the old token is theft: the whole family ends, the unrelated one does not
      await sleep(GRACE_SECONDS * 1000 + 1500);
      expectOAuthError(await refreshRaw(ctx, g1.refresh), 'invalid_grant');
      expectOAuthError(await refreshRaw(ctx, next.refresh), 'invalid_grant');
      await expectAccessRefused(ctx, next.access, 'head access token after reuse of the raced token');
      await expectConversationOk(ctx, other.access, u.username, 'unrelated session');
    });
  });

  describe.concurrent('reuse after the grace window (theft), concurrently to save the sleeps', () => {
    it.each(['form', 'json'] as const)(
      'revokes the whole family and its unexpired access tokens, answers 400 invalid_grant, logs an audit event (%s)',
      async (mode) => {
        const u = await registerUser(ctx);
        const g1 = await loginGrant(ctx, u);
        const g2 = await refresh(ctx, g1.refresh, mode);
        const sibling = await loginGrant(ctx, u); // another session of the same user: untouched
        await sleep(GRACE_SECONDS * 1000 + 1500);
        // the head itself is still fine before the reuse
        await expectConversationOk(ctx, g2.access, u.username, 'before reuse');
        const reuse = await refreshRaw(ctx, g1.refresh, mode);
        expectOAuthError(reuse, 'invalid_grant');
        expect(reuse.json.refresh_token).toBeUndefined();
        expect(reuse.json.access_token).toBeUndefined();
        // the live head of the family is dead now …
        expectOAuthError(await refreshRaw(ctx, g2.refresh, mode), 'invalid_grant');
        // … and so are the session's access tokens, at once (they have 15 minutes left)
        await expectAccessRefused(ctx, g1.access, 'first access token of the stolen family');
        await expectAccessRefused(ctx, g2.access, 'latest access token of the stolen family');
        // presenting the stolen token again does not resurrect anything
        expectOAuthError(await refreshRaw(ctx, g1.refresh, mode), 'invalid_grant');
        // the other session of the user is not part of the family
        await expectConversationOk(ctx, sibling.access, u.username, 'sibling session');
        const s2 = await refresh(ctx, sibling.refresh, mode);
        const list = await getWithToken(ctx.url('/users/me/sessions'), s2.access);
        expect(list.status, list.text).toBe(200);
        expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([sibling.sid]);
        // audit event
        await sleep(200);
        expect(ctx.server.output()).toContain('refresh_token_reuse_detected');
        // and the user can log in again
        const fresh = await loginGrant(ctx, u);
        await expectConversationOk(ctx, fresh.access, u.username, 'new login after theft');
      },
    );

    it('reuse of the head after the family moved on twice, from an attacker who kept the middle token', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = await refresh(ctx, g1.refresh); // attacker copies g2.refresh
      await sleep(GRACE_SECONDS * 1000 + 1500);
      const g3 = await refresh(ctx, g2.refresh); // the victim rotates
      await sleep(GRACE_SECONDS * 1000 + 1500);
      // attacker presents g2 (spent long ago)
      expectOAuthError(await refreshRaw(ctx, g2.refresh), 'invalid_grant');
      expectOAuthError(await refreshRaw(ctx, g3.refresh), 'invalid_grant');
      await expectAccessRefused(ctx, g3.access, 'victim access token after the theft was detected');
    });
  });

  describe('POST /revoke (RFC 7009)', () => {
    it('revokes a refresh token given in the form field `token`: its session and access tokens end', async () => {
      const u = await registerUser(ctx);
      const g1 = await loginGrant(ctx, u);
      const g2 = await refresh(ctx, g1.refresh);
      const other = await loginGrant(ctx, u);
      const r = await postForm(ctx.url('/revoke'), { token: g2.refresh });
      expect(r.status, r.text).toBe(200);
      expectOAuthError(await refreshRaw(ctx, g2.refresh), 'invalid_grant');
      await expectAccessRefused(ctx, g2.access, 'access token of the revoked session');
      await expectAccessRefused(ctx, g1.access, 'older access token of the revoked session');
      await expectConversationOk(ctx, other.access, u.username, 'other session of the user');
      // revoking again: still 200
      expect((await postForm(ctx.url('/revoke'), { token: g2.refresh })).status).toBe(200);
    });

    it('honours token_type_hint only as a hint (a wrong hint still revokes)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await postForm(ctx.url('/revoke'), { token: g.refresh, token_type_hint: 'access_token' });
      expect(r.status, r.text).toBe(200);
      expectOAuthError(await refreshRaw(ctx, g.refresh), 'invalid_grant');
      await expectAccessRefused(ctx, g.access, 'access token after revoking with a wrong hint');
    });

    it('revokes with token_type_hint=refresh_token and with a JSON body too', async () => {
      const u = await registerUser(ctx);
      const a = await loginGrant(ctx, u);
      const b = await loginGrant(ctx, u);
      expect(
        (await postForm(ctx.url('/revoke'), { token: a.refresh, token_type_hint: 'refresh_token' })).status,
      ).toBe(200);
      expect((await postJson(ctx.url('/revoke'), { token: b.refresh })).status).toBe(200);
      expectOAuthError(await refreshRaw(ctx, a.refresh), 'invalid_grant');
      expectOAuthError(await refreshRaw(ctx, b.refresh), 'invalid_grant');
      await expectAccessRefused(ctx, a.access, 'session a');
      await expectAccessRefused(ctx, b.access, 'session b');
    });

    it('revoking an access token ends its session (README: refresh or access token)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await postForm(ctx.url('/revoke'), { token: g.access, token_type_hint: 'access_token' });
      expect(r.status, r.text).toBe(200);
      await expectAccessRefused(ctx, g.access, 'revoked access token');
      expectOAuthError(await refreshRaw(ctx, g.refresh), 'invalid_grant');
    });

    it('answers 200 for unknown, malformed and spent tokens, and changes nothing', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const [id] = g.refresh.split('.') as [string];
      for (const token of [
        'unknown-token',
        'x.y',
        `${id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`,
        'eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.',
        'z'.repeat(2000),
      ]) {
        const r = await postForm(ctx.url('/revoke'), { token });
        expect(r.status, `${token.slice(0, 30)}: ${r.text}`).toBe(200);
      }
      // a guessed secret for a real id did not end the session
      await expectConversationOk(ctx, g.access, u.username, 'after unknown-token revocations');
      await refresh(ctx, g.refresh);
    });

    it('400 invalid_request without `token` (empty body, other fields, empty value)', async () => {
      for (const r of [
        await postForm(ctx.url('/revoke'), {}),
        await postForm(ctx.url('/revoke'), { token_type_hint: 'refresh_token' }),
        await postForm(ctx.url('/revoke'), { refresh_token: 'abc.def' }),
        await postForm(ctx.url('/revoke'), { token: '' }),
        await postJson(ctx.url('/revoke'), {}),
      ]) {
        expect(r.status, r.text).toBe(400);
        expect(r.json?.error, r.text).toBe('invalid_request');
      }
    });

    it('refuses the token in the URL query (credentials never travel in the URL)', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const r = await request(ctx.url(`/revoke?token=${encodeURIComponent(g.refresh)}`), { method: 'POST' });
      expect(r.status, r.text).toBe(400);
      // and the session is untouched
      await expectConversationOk(ctx, g.access, u.username, 'after a revoke via the URL');
      const r2 = await request(
        ctx.url(`/token?grant_type=refresh_token&refresh_token=${encodeURIComponent(g.refresh)}`),
        { method: 'POST' },
      );
      expect(r2.status, r2.text).toBe(400);
      await refresh(ctx, g.refresh);
    });
  });

  it('never logs refresh tokens', () => {
    const logs = ctx.server.output();
    const leaked = [...ctx.secrets].filter((s) => s.length >= 12 && logs.includes(s));
    expect(leaked.map((s) => `${s.slice(0, 10)}…`)).toEqual([]);
    // nor the secret half on its own
    for (const s of ctx.secrets) {
      const parts = s.split('.');
      if (parts.length === 2 && (parts[1]?.length ?? 0) >= 40) expect(logs).not.toContain(parts[1]);
    }
  });
});
