import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import {
  buildTestApp,
  registerUser,
  registration,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { createTestDatabase, dialects } from '../support/dialects.ts';
import { decodeToken } from '../support/forge-token.ts';

interface Tokens {
  access_token: string;
  refresh_token: string;
}

interface ActivityEvent {
  event: string;
  at: string;
  ip: string | null;
  user_agent: string | null;
  detail: Record<string, unknown>;
}

const AGENT = 'audit-test/1.0';
const DAY_SECONDS = 86_400;

describe.each(dialects)('audit trail over HTTP on %s', (dialect) => {
  let t: TestApp;
  let userCount = 0;

  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const freshUser = async () => {
    userCount += 1;
    const username = `user${userCount}`;
    const response = await t.app.inject({
      method: 'POST',
      url: '/register/',
      headers: { 'user-agent': AGENT },
      payload: registration({ username, email: `${username}@example.com` }),
    });
    expect(response.statusCode).toBe(200);
    return {
      id: (response.json() as { id: number }).id,
      username,
      requestId: response.headers['x-request-id'],
    };
  };
  const token = (payload: Record<string, string>) =>
    t.app.inject({ method: 'POST', url: '/token', headers: { 'user-agent': AGENT }, payload });
  const login = async (username: string, password = STRONG_PASSWORD): Promise<Tokens> => {
    const response = await token({ username, password });
    expect(response.statusCode).toBe(200);
    return response.json();
  };
  const bearer = (accessToken: string) => ({ authorization: `Bearer ${accessToken}`, 'user-agent': AGENT });
  const call = (
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    accessToken: string,
    payload?: object,
  ) => t.app.inject({ method, url, headers: bearer(accessToken), payload });
  const storedEvents = async (userId: number) => {
    await t.app.auditTrail.flush();
    return t.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
  };
  const eventNames = async (userId: number) => (await storedEvents(userId)).map((row) => row.event);
  const lastEvent = async (userId: number) => (await storedEvents(userId)).at(-1);
  const detailOf = (row: { detail: string | null } | undefined) => JSON.parse(row?.detail ?? '{}');
  const activity = async (accessToken: string, query = '') => {
    const response = await call('GET', `/users/me/activity${query}`, accessToken);
    return response;
  };

  describe('records', () => {
    it('a registration, with the client address, user agent and the request id of the response', async () => {
      const user = await freshUser();
      const [row] = await storedEvents(user.id);
      expect(row).toMatchObject({
        event: 'user_registered',
        user_id: user.id,
        ip: '127.0.0.1',
        user_agent: AGENT,
        request_id: user.requestId,
        created_at_ms: t.clock.now().getTime(),
      });
    });

    it('a successful login and the session it opened', async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      const sessionId = decodeToken(tokens.access_token).payload.sid;
      const rows = await storedEvents(user.id);
      expect(rows.map((row) => [row.event, detailOf(row)])).toEqual([
        ['user_registered', {}],
        ['session_started', { sessionId }],
        ['login_succeeded', {}],
      ]);
    });

    it('a wrong password against the account, attributed to it so that its owner sees the attack', async () => {
      const user = await freshUser();
      const response = await token({ username: user.username, password: 'wrong password entirely' });
      expect(response.statusCode).toBe(400);
      const row = await lastEvent(user.id);
      expect(row).toMatchObject({ event: 'login_failed', request_id: response.headers['x-request-id'] });
      expect(detailOf(row)).toEqual({ username: user.username, reason: 'wrong_password' });
    });

    it('a login with an unknown username, attributed to nobody and without the typed name', async () => {
      const response = await token({ username: 'nobody-here', password: STRONG_PASSWORD });
      expect(response.statusCode).toBe(400);
      await t.app.auditTrail.flush();
      const row = await t.database.db
        .selectFrom('audit_events')
        .selectAll()
        .where('request_id', '=', String(response.headers['x-request-id']))
        .executeTakeFirstOrThrow();
      expect(row).toMatchObject({ event: 'login_failed', user_id: null, ip: '127.0.0.1' });
      expect(detailOf(row)).toEqual({ reason: 'unknown_user' });
    });

    it('a refresh, a retry inside the grace window, and a reuse after it', async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      const sessionId = decodeToken(tokens.access_token).payload.sid;
      const refresh = () => token({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token });
      expect((await refresh()).statusCode).toBe(200);
      expect(await lastEvent(user.id)).toMatchObject({
        event: 'refreshed',
        detail: JSON.stringify({ sessionId }),
      });
      expect((await refresh()).statusCode).toBe(200);
      expect((await lastEvent(user.id))?.event).toBe('refresh_token_retry');
      t.clock.advanceSeconds(t.config.sessions.reuseGraceSeconds + 1);
      expect((await refresh()).statusCode).toBe(400);
      const reuse = await lastEvent(user.id);
      expect(reuse?.event).toBe('refresh_token_reuse_detected');
      expect(detailOf(reuse)).toMatchObject({ sessionId, spentForMs: expect.any(Number) });
    });

    it('a logout, a logout everywhere with how many sessions it ended, and the end of one session', async () => {
      const user = await freshUser();
      const first = await login(user.username);
      expect((await call('POST', '/logout', first.access_token)).statusCode).toBe(204);
      expect(await lastEvent(user.id)).toMatchObject({
        event: 'logout',
        detail: JSON.stringify({ sessionId: decodeToken(first.access_token).payload.sid }),
      });

      const second = await login(user.username);
      const third = await login(user.username);
      const thirdSession = decodeToken(third.access_token).payload.sid;
      expect(
        (await call('DELETE', `/users/me/sessions/${thirdSession}`, second.access_token)).statusCode,
      ).toBe(204);
      expect(await lastEvent(user.id)).toMatchObject({
        event: 'session_ended',
        detail: JSON.stringify({ sessionId: thirdSession }),
      });

      await login(user.username);
      expect((await call('POST', '/logout/all', second.access_token)).statusCode).toBe(204);
      const all = await lastEvent(user.id);
      expect(all?.event).toBe('logout_all');
      expect(detailOf(all)).toEqual({ ended: 2 });
    });

    it('a password change', async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      const response = await call('POST', '/users/me/password', tokens.access_token, {
        current_password: STRONG_PASSWORD,
        new_password: 'another long passphrase here',
      });
      expect(response.statusCode).toBe(204);
      expect((await lastEvent(user.id))?.event).toBe('password_changed');
    });

    it('an email change request, the same address respelled, and nothing for a profile change that keeps it', async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      const change = (payload: object) => call('PATCH', '/users/me', tokens.access_token, payload);
      expect((await change({ age: 41 })).statusCode).toBe(200);
      expect((await change({ email: `${user.username}@example.com` })).statusCode).toBe(200);
      expect((await lastEvent(user.id))?.event).toBe('login_succeeded');
      // The same mailbox, shown otherwise from now on (found from outside: the activity said nothing of it).
      expect((await change({ email: `${user.username.toUpperCase()}@EXAMPLE.com` })).statusCode).toBe(200);
      const respelled = await lastEvent(user.id);
      expect(respelled?.event).toBe('email_changed');
      expect(detailOf(respelled)).toEqual({ reason: 'respelled' });
      expect(
        (await change({ email: `${user.username}@new.example.com`, current_password: STRONG_PASSWORD }))
          .statusCode,
      ).toBe(200);
      const changed = await lastEvent(user.id);
      // The address changes when the link mailed to it is used: that is email_changed (email-change.test.ts).
      expect(changed?.event).toBe('email_change_requested');
      // Addresses are personal data that would outlive the account here: the event says that, not what.
      expect(JSON.stringify(changed)).not.toContain('new.example.com');
    });

    it("an account deletion, and keeps the account's events for the retention period", async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      const response = await t.app.inject({
        method: 'DELETE',
        url: '/users/me',
        headers: bearer(tokens.access_token),
        payload: { password: STRONG_PASSWORD },
      });
      expect(response.statusCode).toBe(204);
      const rows = await storedEvents(user.id);
      expect(rows.map((row) => row.event)).toEqual([
        'user_registered',
        'session_started',
        'login_succeeded',
        'user_deleted',
      ]);
      expect(detailOf(rows.at(-1))).toEqual({ username: user.username });
      // Ids are never reused: the next account starts with a history of its own.
      const next = await freshUser();
      expect(next.id).not.toBe(user.id);
      expect(await eventNames(next.id)).toEqual(['user_registered']);
    });
  });

  it('stores no password, access token or refresh token in any column of any event', async () => {
    const user = await freshUser();
    const newPassword = 'a different passphrase entirely';
    const wrongPassword = 'guessing-wrong-password-42';
    const secrets = [STRONG_PASSWORD, newPassword, wrongPassword];
    const keep = (tokens: Tokens) => {
      secrets.push(tokens.access_token, tokens.refresh_token, ...tokens.refresh_token.split('.'));
      return tokens;
    };
    await token({ username: user.username, password: wrongPassword });
    // A password typed into the username field: it matches no account, so it is not kept.
    await token({ username: 'hunter2hunter2', password: STRONG_PASSWORD });
    secrets.push('hunter2hunter2');
    const first = keep(await login(user.username));
    const refreshed = await token({ grant_type: 'refresh_token', refresh_token: first.refresh_token });
    expect(refreshed.statusCode).toBe(200);
    keep(refreshed.json());
    t.clock.advanceSeconds(3600);
    await token({ grant_type: 'refresh_token', refresh_token: first.refresh_token });
    const second = keep(await login(user.username));
    await call('PATCH', '/users/me', second.access_token, {
      email: `${user.username}@changed.example.com`,
      current_password: STRONG_PASSWORD,
    });
    await call('POST', '/users/me/password', second.access_token, {
      current_password: STRONG_PASSWORD,
      new_password: newPassword,
    });
    await t.app.inject({
      method: 'POST',
      url: '/revoke',
      payload: { token: second.refresh_token },
    });
    const third = keep(await login(user.username, newPassword));
    await call('POST', '/logout', third.access_token);
    await t.app.inject({
      method: 'DELETE',
      url: '/users/me',
      headers: { authorization: `Bearer ${keep(await login(user.username, newPassword)).access_token}` },
      payload: { password: newPassword },
    });

    await t.app.auditTrail.flush();
    const rows = await t.database.db.selectFrom('audit_events').selectAll().execute();
    expect(rows.filter((row) => row.user_id === user.id).length).toBeGreaterThan(8);
    const stored = rows.flatMap((row) => Object.values(row).map(String));
    for (const secret of secrets) {
      for (const value of stored) expect(value).not.toContain(secret);
    }
  });

  describe('GET /users/me/activity', () => {
    it('shows the caller their own events, newest first, including failed logins against the account', async () => {
      const user = await freshUser();
      await token({ username: user.username, password: 'not the password at all' });
      const tokens = await login(user.username);
      const response = await activity(tokens.access_token);
      expect(response.statusCode).toBe(200);
      expect(response.headers['cache-control']).toBe('no-store');
      const body = response.json() as { events: ActivityEvent[]; next: string | null };
      expect(body.next).toBeNull();
      expect(body.events.map((event) => event.event)).toEqual([
        'login_succeeded',
        'session_started',
        'login_failed',
        'user_registered',
      ]);
      expect(body.events[2]).toEqual({
        event: 'login_failed',
        at: t.clock.now().toISOString(),
        ip: '127.0.0.1',
        user_agent: AGENT,
        detail: { username: user.username, reason: 'wrong_password' },
      });
    });

    it("never shows another user's events", async () => {
      const alice = await freshUser();
      const bob = await freshUser();
      const bobTokens = await login(bob.username);
      await token({ username: bob.username, password: 'wrong wrong wrong' });
      const aliceTokens = await login(alice.username);
      const body = (await activity(aliceTokens.access_token)).json() as { events: ActivityEvent[] };
      expect(body.events.map((event) => event.event)).toEqual([
        'login_succeeded',
        'session_started',
        'user_registered',
      ]);
      const bobBody = (await activity(bobTokens.access_token)).json() as { events: ActivityEvent[] };
      expect(bobBody.events.map((event) => event.event)).toContain('login_failed');
      expect(JSON.stringify(bobBody)).not.toContain(alice.username);
    });

    it('pages with limit and an opaque cursor until next is null', async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      for (let i = 0; i < 4; i += 1)
        await token({ username: user.username, password: `wrong password ${i}` });
      const all = (await activity(tokens.access_token, '?limit=100')).json() as { events: ActivityEvent[] };
      expect(all.events).toHaveLength(7);
      const seen: ActivityEvent[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const query: string = `?limit=3${cursor ? `&before=${encodeURIComponent(cursor)}` : ''}`;
        const page = (await activity(tokens.access_token, query)).json() as {
          events: ActivityEvent[];
          next: string | null;
        };
        seen.push(...page.events);
        cursor = page.next;
        pages += 1;
      } while (cursor !== null && pages < 10);
      expect(pages).toBe(3);
      expect(seen).toEqual(all.events);
    });

    it('answers 20 events by default', async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      for (let i = 0; i < 20; i += 1)
        await token({ username: user.username, password: `wrong password ${i}` });
      const body = (await activity(tokens.access_token)).json() as {
        events: ActivityEvent[];
        next: string | null;
      };
      expect(body.events).toHaveLength(20);
      expect(body.next).toEqual(expect.any(String));
    });

    it("answers 422 in FastAPI's shape for a malformed cursor or a limit outside 1 to 100", async () => {
      const user = await freshUser();
      const tokens = await login(user.username);
      const cases: [string, (string | number)[]][] = [
        ['?before=not-a-cursor!', ['query', 'before']],
        [`?before=${Buffer.from('0').toString('base64url')}`, ['query', 'before']],
        ['?limit=0', ['query', 'limit']],
        ['?limit=101', ['query', 'limit']],
        ['?limit=ten', ['query', 'limit']],
        ['?limit=1.5', ['query', 'limit']],
      ];
      for (const [query, loc] of cases) {
        const response = await activity(tokens.access_token, query);
        expect(response.statusCode, query).toBe(422);
        const detail = (response.json() as { detail: { loc: unknown[]; msg: string; type: string }[] })
          .detail;
        expect(detail[0]?.loc, query).toEqual(loc);
      }
    });

    it('is documented in OpenAPI with Bearer security, its query parameters and its response', async () => {
      const document = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
      const operation = document.paths['/users/me/activity'].get;
      expect(operation.security).toEqual([{ OAuth2PasswordBearer: [] }]);
      expect(
        operation.parameters.map((parameter: { name: string; in: string }) => [parameter.in, parameter.name]),
      ).toEqual([
        ['query', 'limit'],
        ['query', 'before'],
      ]);
      expect(Object.keys(operation.responses)).toEqual(expect.arrayContaining(['200', '422']));
    });

    it('answers 401 without a live session', async () => {
      const response = await t.app.inject({ method: 'GET', url: '/users/me/activity' });
      expect(response.statusCode).toBe(401);
      const user = await freshUser();
      const tokens = await login(user.username);
      await call('POST', '/logout', tokens.access_token);
      expect((await activity(tokens.access_token)).statusCode).toBe(401);
    });
  });
});

// Found from outside: throttling's events were stored with no account, so a lockout never showed in the user's
// activity or the admin's view of the account, though the request named it.
describe.each(dialects)('throttling events in the audit trail on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: { RATE_LIMITS: 'on', MESSAGE_RATE_PER_MINUTE: '2', REFRESH_PER_FAMILY: '2/60s' },
    });
  });
  afterAll(async () => {
    await t.close();
  });
  const throttledEvents = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .select(['event', 'detail'])
      .where('user_id', '=', userId)
      .where('event', 'in', ['login_throttled', 'request_throttled'])
      .orderBy('id')
      .execute();
    return rows.map((row) => ({ event: row.event, ...JSON.parse(row.detail ?? '{}') }));
  };

  it('attributes a lockout, a posting cap and a refresh cap to the account they concern', async () => {
    const user = await registerUser(t.app, { username: 'capped', email: 'capped@example.com' });
    const tokens = (
      await t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { username: 'capped', password: STRONG_PASSWORD },
      })
    ).json() as Tokens;
    for (let i = 0; i < 6; i += 1) {
      await t.app.inject({
        method: 'POST',
        url: '/token',
        remoteAddress: '198.51.100.77',
        payload: { username: 'capped', password: `wrong ${i}` },
      });
    }
    for (let i = 0; i < 3; i += 1) {
      await t.app.inject({
        method: 'POST',
        url: '/conversation/messages',
        headers: { authorization: `Bearer ${tokens.access_token}` },
        payload: { text: `post ${i}` },
      });
    }
    let refreshToken = tokens.refresh_token;
    for (let i = 0; i < 3; i += 1) {
      const answer = await t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { grant_type: 'refresh_token', refresh_token: refreshToken },
      });
      if (answer.statusCode === 200) refreshToken = (answer.json() as Tokens).refresh_token;
    }
    // A lockout of a name that is no account is stored with neither: the name may be a password typed in its place.
    for (let i = 0; i < 6; i += 1) {
      await t.app.inject({
        method: 'POST',
        url: '/token',
        remoteAddress: '198.51.100.78',
        payload: { username: 'nobodyhere', password: `wrong ${i}` },
      });
    }
    await t.app.auditTrail.flush();
    const unattributed = await t.database.db
      .selectFrom('audit_events')
      .select(['user_id', 'detail'])
      .where('event', '=', 'login_throttled')
      .where('ip', '=', '198.51.100.78')
      .execute();
    expect(unattributed.length).toBeGreaterThan(0);
    for (const row of unattributed) {
      expect(row.user_id).toBeNull();
      expect(row.detail ?? '').not.toContain('nobodyhere');
    }
    expect(await throttledEvents(user.id)).toEqual([
      { event: 'login_throttled', rule: 'R1', username: 'capped', retryAfterSeconds: expect.any(Number) },
      { event: 'request_throttled', rule: 'R8', retryAfterSeconds: expect.any(Number) },
      { event: 'request_throttled', rule: 'R7', retryAfterSeconds: expect.any(Number) },
    ]);
  });
});

describe.each(dialects)('audit trail resilience on %s', (dialect) => {
  const apps: TestApp[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const app of apps.splice(0)) await app.close();
  });

  it('answers requests normally when the audit table cannot be written, and logs a warning', async () => {
    const t = await buildTestApp(dialect);
    apps.push(t);
    await sql`alter table audit_events rename to audit_events_away`.execute(t.database.db);
    const user = await registerUser(t.app);
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: user.username, password: STRONG_PASSWORD },
    });
    expect(response.statusCode).toBe(200);
    await t.app.auditTrail.flush();
    const warnings = t.logs
      .map((line) => JSON.parse(line))
      .filter((line) => line.msg === 'audit events not stored');
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings[0]).toMatchObject({ level: 40, count: expect.any(Number) });
    // The log line of each event is still there.
    expect(t.logs.some((line) => JSON.parse(line).event === 'login_succeeded')).toBe(true);
  });

  it('prunes events older than AUDIT_RETENTION_DAYS every hour', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const t = await buildTestApp(dialect, { env: { AUDIT_RETENTION_DAYS: '7' } });
    apps.push(t);
    const old = await registerUser(t.app, { username: 'old', email: 'old@example.com' });
    t.clock.advanceSeconds(7 * DAY_SECONDS + 1);
    const recent = await registerUser(t.app, { username: 'recent', email: 'recent@example.com' });
    await t.app.auditTrail.flush();
    await vi.advanceTimersByTimeAsync(3600_000);
    await vi.waitFor(async () => {
      const rows = await t.database.db.selectFrom('audit_events').select('user_id').execute();
      expect(rows.map((row) => row.user_id)).toEqual([recent.id]);
    });
    expect(old.id).not.toBe(recent.id);
  });

  it.runIf(dialect === 'postgres')('writes pending events before the app finishes closing', async () => {
    const database = await createTestDatabase(dialect);
    const t = await buildTestApp(dialect, { database });
    const blocker = new pg.Client({ connectionString: inject('postgresUrl') });
    try {
      await registerUser(t.app);
      await t.app.auditTrail.flush();
      await blocker.connect();
      await blocker.query(`set search_path = ${database.schema}`);
      await blocker.query('begin');
      await blocker.query('lock table audit_events in exclusive mode');
      t.app.auditTrail.record({
        event: 'test_event',
        fields: {},
        ipAddress: undefined,
        userAgent: undefined,
        requestId: 'at-close',
      });
      let closed = false;
      const closing = t.app.close().then(() => {
        closed = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(closed).toBe(false);
      await blocker.query('commit');
      await closing;
      const written = database.db
        .selectFrom('audit_events')
        .select('event')
        .where('request_id', '=', 'at-close');
      expect(await written.execute()).toEqual([{ event: 'test_event' }]);
    } finally {
      await blocker.end();
      await database.destroy();
    }
  });
});
