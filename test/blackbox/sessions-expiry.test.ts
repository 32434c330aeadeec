/**
 * Issue 4, session lifetimes over real HTTP on SQLite and PostgreSQL, with lifetimes of a few seconds:
 * the idle lifetime (extended by each refresh), the absolute lifetime (however the session is used), and
 * short-lived access tokens renewed by refresh. An ended session refuses its still-unexpired access tokens.
 */
import { describe, expect, it, vi } from 'vitest';
import { expectConversationOk, expectInvalidGrant } from './support/assertions.ts';
import {
  expectInvalidToken,
  getWithToken,
  type Reply,
  registerUser,
  sleep,
  splitToken,
} from './support/client.ts';
import { loginGrant, refreshRaw, toGrant } from './support/grants.ts';
import { DIALECTS, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

describe.concurrent.each(DIALECTS)('sessions: lifetimes (%s)', (dialect) => {
  describe('idle lifetime (REFRESH_TOKEN_IDLE_TTL_SECONDS=2)', () => {
    const ctx = useServer(dialect, {
      REFRESH_TOKEN_IDLE_TTL_SECONDS: '2',
      SESSION_MAX_LIFETIME_SECONDS: '600',
      ACCESS_TOKEN_TTL_SECONDS: '600',
    });

    it('each refresh extends the idle lifetime; an idle session ends with its refresh and access tokens', async () => {
      const u = await registerUser(ctx);
      // kept busy: `keep` must survive the other's idling. The two logins run side by side and are
      // refreshed at once, so both idle clocks start together: on a loaded machine one login's hash may
      // take longer than the idle lifetime, a refresh never hashes.
      const [g, keep] = await Promise.all([loginGrant(ctx, u), loginGrant(ctx, u)]);
      let head = toGrant(ctx, await refreshRaw(ctx, g.refresh), 'refresh right after the logins');
      let keepHead = toGrant(ctx, await refreshRaw(ctx, keep.refresh), 'keep refresh right after the logins');
      // 3 refreshes 1.2 s apart: 3.6 s in all, longer than the idle lifetime, never idle 2 s
      for (let i = 0; i < 3; i++) {
        await sleep(1200);
        head = toGrant(ctx, await refreshRaw(ctx, head.refresh), `refresh ${i} inside the idle lifetime`);
        keepHead = toGrant(ctx, await refreshRaw(ctx, keepHead.refresh), `keep refresh ${i}`);
      }
      await expectConversationOk(ctx, head.access, u.username, 'active session');
      // now idle: 2 s + 1 s of tolerance + margin
      for (let i = 0; i < 2; i++) {
        await sleep(1700);
        keepHead = toGrant(
          ctx,
          await refreshRaw(ctx, keepHead.refresh),
          `keep refresh while the other idles ${i}`,
        );
      }
      expectInvalidGrant(await refreshRaw(ctx, head.refresh), 'refresh of an idle-expired session');
      // the session's access tokens (600 s left on them) are refused too
      expectInvalidToken(
        await getWithToken(ctx.url('/conversation'), head.access),
        'access token of the idle session',
      );
      expectInvalidToken(
        await getWithToken(ctx.url('/conversation'), g.access),
        'first access token of the idle session',
      );
      // and it is no longer listed; the busy session is
      const list = await getWithToken(ctx.url('/users/me/sessions'), keepHead.access);
      expect(list.status, list.text).toBe(200);
      expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([keep.sid]);
      await expectConversationOk(ctx, keepHead.access, u.username, 'busy session');
    });

    it('an access-token-only client (no refresh) is still cut off when the session idles out', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      // using the access token is not a refresh: the idle lifetime counts refreshes (README)
      for (let i = 0; i < 4; i++) {
        await sleep(1000);
        const r = await getWithToken(ctx.url('/conversation'), g.access);
        if (r.status !== 200) {
          expectInvalidToken(r, 'idle session');
          break;
        }
      }
      expectInvalidGrant(await refreshRaw(ctx, g.refresh), 'refresh after 4 s idle');
      expectInvalidToken(
        await getWithToken(ctx.url('/conversation'), g.access),
        'access token after 4 s idle',
      );
    });
  });

  describe('absolute lifetime (SESSION_MAX_LIFETIME_SECONDS=3)', () => {
    const ctx = useServer(dialect, {
      REFRESH_TOKEN_IDLE_TTL_SECONDS: '2',
      SESSION_MAX_LIFETIME_SECONDS: '3',
      ACCESS_TOKEN_TTL_SECONDS: '600',
    });

    it('a session refreshed every second still ends at its absolute lifetime, access tokens included', async () => {
      const u = await registerUser(ctx);
      const t0 = Date.now();
      const g = await loginGrant(ctx, u);
      // the session starts when its login's hash is done, which may take seconds on a loaded machine
      const loggedIn = Date.now();
      let head = g;
      // well inside both lifetimes
      await sleep(1000);
      head = toGrant(ctx, await refreshRaw(ctx, head.refresh), 'refresh at +1 s');
      await sleep(1000);
      head = toGrant(ctx, await refreshRaw(ctx, head.refresh), 'refresh at +2 s');
      // keep refreshing every ~0.8 s (never idle 2 s) until +5 s: the session must have ended by then
      let ended: Reply | undefined;
      while (Date.now() - loggedIn < 5200) {
        await sleep(800);
        const r = await refreshRaw(ctx, head.refresh);
        if (r.status === 200) {
          head = toGrant(ctx, r, 'refresh');
          continue;
        }
        ended = r;
        break;
      }
      expect(
        ended,
        `still refreshable ${Date.now() - loggedIn} ms after login with a 3 s absolute lifetime`,
      ).toBeDefined();
      expectInvalidGrant(ended!, 'refresh past the absolute lifetime');
      // the session was created after t0, so it may not end before t0 + 3 s (the clock is the same machine's)
      expect(Date.now() - t0, 'ended before the absolute lifetime').toBeGreaterThanOrEqual(3000);
      expectInvalidToken(await getWithToken(ctx.url('/conversation'), head.access), 'latest access token');
      expectInvalidToken(await getWithToken(ctx.url('/users/me'), g.access), 'first access token');
      // a new login opens a new session
      const fresh = await loginGrant(ctx, u);
      expect(fresh.sid).not.toBe(g.sid);
      await expectConversationOk(ctx, fresh.access, u.username, 'new session');
    });

    it('expires_at in the session list is at most the absolute lifetime after creation', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const list = await getWithToken(ctx.url('/users/me/sessions'), g.access);
      expect(list.status, list.text).toBe(200);
      const s = list.json.sessions[0];
      expect(Date.parse(s.expires_at) - Date.parse(s.created_at)).toBeLessThanOrEqual(3000 + 1000);
    });
  });

  describe('short access tokens (ACCESS_TOKEN_TTL_SECONDS=1)', () => {
    const ctx = useServer(dialect, { ACCESS_TOKEN_TTL_SECONDS: '1' });

    it('an expired access token is refused; the refresh token renews it within the same session', async () => {
      const u = await registerUser(ctx);
      const g = await loginGrant(ctx, u);
      const { payload } = splitToken(g.access);
      expect(payload.exp - payload.iat).toBe(1);
      await expectConversationOk(ctx, g.access, u.username, 'fresh access token');
      await sleep(3200); // 1 s lifetime + 1 s tolerance + margin
      expectInvalidToken(await getWithToken(ctx.url('/conversation'), g.access), 'expired access token');
      const n = toGrant(ctx, await refreshRaw(ctx, g.refresh), 'refresh after the access token expired');
      expect(n.sid).toBe(g.sid);
      await expectConversationOk(ctx, n.access, u.username, 'renewed access token');
    });
  });
});
