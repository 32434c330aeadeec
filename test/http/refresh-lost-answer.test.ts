/**
 * A refresh grant whose rotation PostgreSQL committed, but whose answer to the COMMIT never came back (a network
 * fault at that moment): the server answers 503 once the query times out, and the client's retry with the same
 * refresh token must land inside the reuse grace window, not be taken for a theft. Found from outside: with a 10 s
 * query timeout equal to the 10 s grace, the immediate retry ended the session.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDb } from '../../src/db/connect.ts';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { createTestDatabase } from '../support/dialects.ts';
import { startStallingProxy } from '../support/stalling-proxy.ts';

const realClock = {
  now: () => new Date(),
  advanceSeconds: () => {
    throw new Error('this suite runs on the real clock');
  },
};

describe.runIf(inject('postgresUrl'))('a refresh whose COMMIT answer was lost (postgres)', () => {
  let t: TestApp;
  let proxy: Awaited<ReturnType<typeof startStallingProxy>>;
  beforeAll(async () => {
    const base = await createTestDatabase('postgres');
    proxy = await startStallingProxy(inject('postgresUrl'));
    const url = new URL(inject('postgresUrl'));
    url.host = `127.0.0.1:${proxy.port}`;
    const handle = createDb({
      kind: 'postgres',
      url: url.toString(),
      schema: base.schema,
      maxConnections: 5,
    });
    t = await buildTestApp('postgres', {
      clock: realClock,
      database: {
        ...handle,
        async destroy() {
          await handle.close().catch(() => {});
          await base.destroy();
        },
      },
    });
    await registerUser(t.app, { username: 'lost', email: 'lost@example.com' });
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    await proxy?.close();
  });

  it('answers 503, and the immediate retry gets the rotated session rather than ending it as a theft', {
    timeout: 60_000,
  }, async () => {
    const login = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: 'lost', password: STRONG_PASSWORD },
    });
    expect(login.statusCode).toBe(200);
    const { refresh_token: refreshToken } = login.json();
    proxy.strandAfterClientSends(/commit/i);
    const refresh = () =>
      t.app.inject({
        method: 'POST',
        url: '/token',
        payload: { grant_type: 'refresh_token', refresh_token: refreshToken },
      });
    const lost = await refresh();
    expect(lost.statusCode).toBe(503);
    proxy.strandAfterClientSends(/(?!)/);
    const retried = await refresh();
    expect(retried.statusCode, retried.body).toBe(200);
    const next = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: retried.json().refresh_token },
    });
    expect(next.statusCode, next.body).toBe(200);
  });
});
