import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createCounterStore } from '../../src/db/counters.ts';
import { buildTestApp, registration, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { createTestDatabase, type TestDatabase } from '../support/dialects.ts';
import { type OwnRedis, startOwnRedis } from '../support/redis-server.ts';
import { startSilentServer, startStallingProxy, startSwitchingProxy } from '../support/stalling-proxy.ts';

const redisUrl = inject('redisUrl');

const login = (
  t: TestApp,
  from: string,
  password: string,
  username = 'alice',
): Promise<LightMyRequestResponse> =>
  t.app.inject({
    method: 'POST',
    url: '/token',
    remoteAddress: from,
    payload: { username, password },
  });

const register = (t: TestApp, name: string, from: string) =>
  t.app.inject({
    method: 'POST',
    url: '/register/',
    remoteAddress: from,
    payload: registration({ username: name, email: `${name}@example.com` }),
  });

const statusesOf = (responses: LightMyRequestResponse[]) => responses.map((response) => response.statusCode);

describe.skipIf(!redisUrl)('throttling counters in Redis', () => {
  let database: TestDatabase;
  const apps: TestApp[] = [];
  beforeAll(async () => {
    database = await createTestDatabase('sqlite');
  });
  const sharedPrefixes: string[] = [];
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    // The shared Redis outlives the test: its keys go with it (R3's would otherwise stay a month).
    for (const keyPrefix of sharedPrefixes.splice(0)) await keysUnder(redisUrl, keyPrefix, true);
  });
  afterAll(async () => {
    await database.destroy();
  });

  /** The keys stored under a prefix, read with a client of the test's own. */
  const keysUnder = async (url: string, keyPrefix: string, remove = false) => {
    const client = new Redis(url);
    try {
      const keys = await client.keys(`${keyPrefix}*`);
      if (remove && keys.length > 0) await client.del(...keys);
      return keys;
    } finally {
      client.disconnect();
    }
  };

  /** An instance on the shared database, counting in the given Redis under the given prefix. */
  const instance = async (url: string, keyPrefix: string) => {
    const app = await buildTestApp('sqlite', {
      database,
      env: { RATE_LIMITS: 'on', REDIS_URL: url, REDIS_KEY_PREFIX: keyPrefix },
    });
    apps.push(app);
    return app;
  };
  const prefix = () => `gh-test-${randomBytes(6).toString('hex')}:`;
  const sharedPrefix = () => {
    const keyPrefix = prefix();
    sharedPrefixes.push(keyPrefix);
    return keyPrefix;
  };

  it('shares the posting rate (R8) between two instances: a user’s messages on either add up', async () => {
    const keyPrefix = sharedPrefix();
    const a = await buildTestApp('sqlite', {
      database,
      env: {
        RATE_LIMITS: 'on',
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: keyPrefix,
        MESSAGE_RATE_PER_MINUTE: '2',
      },
    });
    apps.push(a);
    const b = await buildTestApp('sqlite', {
      database,
      env: {
        RATE_LIMITS: 'on',
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: keyPrefix,
        MESSAGE_RATE_PER_MINUTE: '2',
      },
    });
    apps.push(b);
    expect((await register(a, 'mona', '192.0.2.50')).statusCode).toBe(200);
    const token = (
      await a.app.inject({
        method: 'POST',
        url: '/token',
        remoteAddress: '192.0.2.50',
        payload: { username: 'mona', password: STRONG_PASSWORD },
      })
    ).json().access_token as string;
    const post = (t: TestApp) =>
      t.app.inject({
        method: 'POST',
        url: '/conversation/messages',
        headers: { authorization: `Bearer ${token}` },
        payload: { text: 'hello' },
      });
    expect(statusesOf([await post(a), await post(b), await post(a)])).toEqual([201, 201, 429]);
    expect((await post(b)).statusCode).toBe(429);
  });

  it('shares its counts between two instances: failures on either add up, and so do registrations', async () => {
    const keyPrefix = sharedPrefix();
    const [a, b] = [await instance(redisUrl, keyPrefix), await instance(redisUrl, keyPrefix)] as [
      TestApp,
      TestApp,
    ];
    expect((await register(a, 'alice', '192.0.2.1')).statusCode).toBe(200);
    expect((await register(b, 'bob', '192.0.2.1')).statusCode).toBe(200);
    expect((await register(a, 'carol', '192.0.2.1')).statusCode).toBe(200);
    expect((await register(b, 'dave', '192.0.2.1')).statusCode).toBe(429);

    const answers = [];
    for (let i = 0; i < 6; i += 1)
      answers.push(await login(i % 2 === 0 ? a : b, '203.0.113.1', `wrong ${i}`));
    expect(statusesOf(answers)).toEqual([400, 400, 400, 400, 400, 429]);
    expect((await login(a, '203.0.113.1', STRONG_PASSWORD)).statusCode).toBe(429);
    expect((await login(b, '203.0.113.2', STRONG_PASSWORD)).statusCode).toBe(200);

    // Another prefix is another deployment: nothing is shared with it.
    const other = await instance(redisUrl, sharedPrefix());
    expect((await login(other, '203.0.113.1', STRONG_PASSWORD)).statusCode).toBe(200);
    expect(await keysUnder(redisUrl, `${keyPrefix}r1:`)).not.toEqual([]);
  });

  // Found from outside: the lock started at the next attempt, whenever it came, so a key stayed full for a day and
  // whoever came back to it waited a lock more, right password and all. It now runs from the failure that fills it.
  it('locks R1 and R2 from the failure that fills them: a client back after the lock logs in', async () => {
    const keyPrefix = sharedPrefix();
    const app = await buildTestApp('sqlite', {
      database,
      env: {
        RATE_LIMITS: 'on',
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: keyPrefix,
        LOGIN_BACKOFF_BASE_S: '1',
        ACCOUNT_BACKOFF_BASE_S: '1',
      },
    });
    apps.push(app);
    expect((await register(app, 'comeback', '192.0.2.30')).statusCode).toBe(200);
    const wrong = (from: string) => login(app, from, 'not the password', 'comeback');
    expect(statusesOf(await Promise.all([1, 2, 3, 4, 5].map(() => wrong('203.0.113.30'))))).toEqual([
      400, 400, 400, 400, 400,
    ]);
    for (const from of ['203.0.113.31', '203.0.113.32', '203.0.113.33', '203.0.113.34', '203.0.113.35']) {
      expect((await wrong(from)).statusCode).toBe(400);
    }
    expect((await login(app, '203.0.113.36', STRONG_PASSWORD, 'comeback')).statusCode).toBe(429);
    await sleep(1300);
    expect((await login(app, '203.0.113.30', STRONG_PASSWORD, 'comeback')).statusCode).toBe(200);
  });

  const unreachableWarnings = (t: TestApp) =>
    t.logs.filter((line) => line.includes('rate-limit store unreachable')).length;
  const wrongLogins = async (t: TestApp, username: string, from: string, count: number) => {
    const answers = [];
    for (let i = 0; i < count; i += 1) {
      answers.push(
        await t.app.inject({
          method: 'POST',
          url: '/token',
          remoteAddress: from,
          payload: { username, password: `wrong ${i}` },
        }),
      );
    }
    return statusesOf(answers);
  };

  // Found from outside: with a database index the Redis does not have (/16 on a default Redis), the refused SELECT
  // was logged as an outage that ended a second later, and the counts went to database 0, another deployment's.
  it("counts in the process, never in database 0, when Redis has no database of the URL's index", async () => {
    const url = new URL(redisUrl as string);
    url.pathname = '/999';
    const keyPrefix = sharedPrefix();
    const t = await instance(url.toString(), keyPrefix);
    expect((await register(t, 'wrongdb', '192.0.2.12')).statusCode).toBe(200);
    await sleep(1500);
    const answers = [];
    for (let i = 0; i < 6; i += 1) answers.push(await login(t, '203.0.113.12', `wrong ${i}`, 'wrongdb'));
    expect(statusesOf(answers)).toEqual([400, 400, 400, 400, 400, 429]);
    const databaseZero = new URL(redisUrl as string);
    databaseZero.pathname = '/0';
    expect(await keysUnder(databaseZero.toString(), keyPrefix)).toEqual([]);
    expect(await keysUnder(redisUrl as string, keyPrefix)).toEqual([]);
    expect(t.logs.some((line) => line.includes('DB index is out of range'))).toBe(true);
    expect(t.logs.some((line) => line.includes('reachable again'))).toBe(false);
  });

  // Found from outside: Redis refusing the URL's credentials logged its reply error with the AUTH command's arguments,
  // the password among them, at warn.
  it('logs no Redis password when Redis refuses the credentials', async () => {
    const url = new URL(redisUrl as string);
    url.username = 'gatehouse';
    url.password = 'RedisPassw0rdNeverLogged';
    const app = await instance(url.toString(), prefix());
    for (let waited = 0; unreachableWarnings(app) === 0 && waited < 5000; waited += 100) await sleep(100);
    expect(unreachableWarnings(app)).toBeGreaterThan(0);
    expect(app.logs.filter((line) => line.includes('RedisPassw0rdNeverLogged'))).toEqual([]);
    expect(app.logs.some((line) => line.includes('WRONGPASS'))).toBe(true);
  });

  // THROTTLING.md §8 tests 4-6: only attempts every earlier rule admitted may count against the account. In Redis the
  // counters of parallel attempts move before any is given back, so a burst from one address once reached R2's
  // (and, spread over addresses, R3's) limit with five checked failures, locking the owner out from everywhere.
  it('counts against the account only attempts the per-client rules admitted: a burst of 50 locks out no one else', async () => {
    const app = await instance(redisUrl, sharedPrefix());
    expect((await register(app, 'bursted', '192.0.2.1')).statusCode).toBe(200);
    const attempt = (from: string, password: string) => login(app, from, password, 'bursted');
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => attempt('198.51.100.10', `a wrong password ${i}`)),
    );
    expect(statusesOf(answers).filter((status) => status === 400)).toHaveLength(5);
    // R1's 30 s or R5's minute, never R2's quarter of an hour.
    for (const answer of answers.filter((response) => response.statusCode === 429))
      expect(Number(answer.headers['retry-after'])).toBeLessThanOrEqual(60);
    const owner = await attempt('203.0.113.77', STRONG_PASSWORD);
    expect(owner.statusCode, owner.body).toBe(200);
  });

  it('counts against the hard cap (R3) only attempts R2 admitted: 400 at once from 40 addresses stay far below it', async () => {
    const keyPrefix = sharedPrefix();
    const app = await instance(redisUrl, keyPrefix);
    expect((await register(app, 'spread', '192.0.2.1')).statusCode).toBe(200);
    const answers = await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        login(app, `198.51.100.${100 + (i % 40)}`, `a wrong password ${i}`, 'spread'),
      ),
    );
    const checked = statusesOf(answers).filter((status) => status === 400).length;
    expect(checked).toBeLessThanOrEqual(10);
    const client = new Redis(redisUrl);
    try {
      const keys = (await client.keys(`${keyPrefix}*`)).filter((key) => /r3(?!-)/.test(key));
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) expect(Number(await client.get(key))).toBeLessThanOrEqual(checked + 1);
    } finally {
      client.disconnect();
    }
  });

  it('gives nothing back for a key whose window ended, and deletes a key refunded to nothing (R4 overshoot)', async () => {
    const keyPrefix = sharedPrefix();
    const store = createCounterStore({ redis: { url: redisUrl, keyPrefix } });
    try {
      await store.ready();
      const counter = store.counter({ name: 'c', limit: 3, windowSeconds: 60 });
      // A key Redis no longer holds is a key whose window ended.
      await counter.refund('ended');
      await counter.hit('refunded');
      await counter.refund('refunded');
      expect(await keysUnder(redisUrl, keyPrefix)).toEqual([]);
      const counts = [];
      for (let i = 0; i < 4; i += 1) counts.push((await counter.hit('ended')).count);
      expect(counts).toEqual([1, 2, 3, 4]);
    } finally {
      await store.close();
    }
  });

  it('gives nothing back for a key held past its limit: a lock ends with its time or a reset, not a refund', async () => {
    const keyPrefix = sharedPrefix();
    const store = createCounterStore({ redis: { url: redisUrl, keyPrefix } });
    try {
      await store.ready();
      const counter = store.counter({ name: 'c', limit: 3, windowSeconds: 60 });
      await counter.block('locked', 60);
      await counter.refund('locked');
      await counter.refund('locked');
      const reading = await counter.hit('locked');
      expect(reading.count).toBe(5);
      expect(reading.msBeforeReset).toBeGreaterThan(55_000);
      await counter.reset('locked');
      expect((await counter.hit('locked')).count).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('keeps counting in Redis when its answer came in time but the event loop stalled past the timeout', async () => {
    const keyPrefix = sharedPrefix();
    const states: string[] = [];
    const store = createCounterStore({
      redis: { url: redisUrl, keyPrefix },
      onStoreStateChange: (state) => states.push(state),
    });
    try {
      await store.ready();
      const counter = store.counter({ name: 'c', limit: 10, windowSeconds: 60 });
      const hit = counter.hit('stalled');
      // Synchronous work longer than the command timeout: the answer arrives meanwhile, and is read after the stall.
      const until = performance.now() + 600;
      while (performance.now() < until);
      expect((await hit).count).toBe(1);
      expect(states).toEqual([]);
      expect(await keysUnder(redisUrl, keyPrefix)).toEqual([`${keyPrefix}c:stalled`]);
    } finally {
      await store.close();
    }
  });

  describe('when Redis hangs', () => {
    it('limits in the process when Redis accepts connections and never answers, and warns once', async () => {
      const silent = await startSilentServer();
      try {
        const t = await instance(silent.url, prefix());
        expect((await register(t, 'heidi', '192.0.2.12')).statusCode).toBe(200);
        expect(await wrongLogins(t, 'heidi', '203.0.113.10', 7)).toEqual([400, 400, 400, 400, 400, 429, 429]);
        expect(unreachableWarnings(t)).toBe(1);
      } finally {
        await silent.close();
      }
    });

    it('keeps refusing a client that Redis had locked once Redis stops answering', async () => {
      const proxy = await startStallingProxy(redisUrl);
      try {
        const t = await instance(proxy.url, sharedPrefix());
        expect((await register(t, 'judy', '192.0.2.14')).statusCode).toBe(200);
        expect(await wrongLogins(t, 'judy', '203.0.113.14', 6)).toEqual([400, 400, 400, 400, 400, 429]);
        proxy.stall();
        const judy = (from: string) =>
          t.app.inject({
            method: 'POST',
            url: '/token',
            remoteAddress: from,
            payload: { username: 'judy', password: STRONG_PASSWORD },
          });
        expect((await judy('203.0.113.14')).statusCode).toBe(429);
        expect((await judy('203.0.113.15')).statusCode).toBe(200);
        expect(unreachableWarnings(t)).toBe(1);
      } finally {
        proxy.resume();
        await proxy.close();
      }
    });

    it('stops asking a Redis that stopped answering, warns once, and counts in Redis again when it answers', async () => {
      const proxy = await startStallingProxy(redisUrl);
      try {
        const keyPrefix = sharedPrefix();
        const t = await instance(proxy.url, keyPrefix);
        expect((await register(t, 'ivan', '192.0.2.13')).statusCode).toBe(200);
        expect(await wrongLogins(t, 'ivan', '203.0.113.11', 1)).toEqual([400]);
        expect(await keysUnder(redisUrl, `${keyPrefix}r1:`)).toHaveLength(1);
        proxy.stall();
        expect(await wrongLogins(t, 'ivan', '203.0.113.12', 7)).toEqual([400, 400, 400, 400, 400, 429, 429]);
        expect(unreachableWarnings(t)).toBe(1);
        expect(t.logs.join('\n')).not.toMatch(/rate-limit store reachable again/);
        proxy.resume();
        for (let waited = 0; !t.logs.join('\n').includes('rate-limit store reachable again'); waited += 50) {
          if (waited > 10_000) throw new Error('the app did not notice Redis answering again');
          await sleep(50);
        }
        await wrongLogins(t, 'ivan', '203.0.113.13', 1);
        expect(await keysUnder(redisUrl, `${keyPrefix}r1:`)).toHaveLength(2);
        expect(unreachableWarnings(t)).toBe(1);
      } finally {
        await proxy.close();
      }
    });
  });

  // Found from outside: once the client reconnected into a connection accepted and never answered, it waited on it
  // for good, pinging through it, and never counted in Redis again although new connections were answered.
  it('opens a new connection when its reconnection was accepted and never answered, and counts in Redis again', async () => {
    const proxy = await startSwitchingProxy(redisUrl);
    try {
      const keyPrefix = sharedPrefix();
      const t = await instance(proxy.url, keyPrefix);
      expect((await register(t, 'kim', '192.0.2.15')).statusCode).toBe(200);
      expect(await wrongLogins(t, 'kim', '203.0.113.16', 1)).toEqual([400]);
      expect(await keysUnder(redisUrl, `${keyPrefix}r1:`)).toHaveLength(1);
      proxy.silent();
      proxy.reset();
      // The client reconnects (200 ms on) into a connection that the proxy holds silent.
      await sleep(1500);
      expect(unreachableWarnings(t)).toBe(1);
      proxy.forward();
      for (let waited = 0; !t.logs.join('\n').includes('rate-limit store reachable again'); waited += 50) {
        if (waited > 10_000) throw new Error('the app did not open a new connection to Redis');
        await sleep(50);
      }
      await wrongLogins(t, 'kim', '203.0.113.17', 1);
      expect(await keysUnder(redisUrl, `${keyPrefix}r1:`)).toHaveLength(2);
    } finally {
      await proxy.close();
    }
  });

  describe('when Redis goes away', () => {
    let redis: OwnRedis & { stop(): Promise<void> };
    beforeAll(async () => {
      redis = await startOwnRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('keeps limiting in the process, answers no 5xx, and counts in Redis again once it is back', async () => {
      const keyPrefix = prefix();
      const t = await instance(redis.url, keyPrefix);
      expect((await register(t, 'erin', '192.0.2.9')).statusCode).toBe(200);
      const erin = (from: string, password: string) => login(t, from, password, 'erin');

      expect(
        statusesOf([await erin('203.0.113.5', 'wrong 1'), await erin('203.0.113.5', 'wrong 2')]),
      ).toEqual([400, 400]);
      await redis.kill();
      const during = [];
      for (let i = 0; i < 7; i += 1) during.push(await erin('203.0.113.6', `wrong ${i}`));
      expect(statusesOf(during)).toEqual([400, 400, 400, 400, 400, 429, 429]);
      expect(during[5]?.headers['retry-after']).toBe('30');
      expect(statusesOf([await erin('203.0.113.6', STRONG_PASSWORD)])).toEqual([429]);
      expect(statusesOf([await erin('203.0.113.7', STRONG_PASSWORD)])).toEqual([200]);
      const registrations = [];
      for (let i = 0; i < 4; i += 1) registrations.push(await register(t, `frank${i}`, '192.0.2.10'));
      expect(statusesOf(registrations)).toEqual([200, 200, 200, 429]);
      expect(t.logs.join('\n')).toMatch(/rate-limit store unreachable/);

      await redis.restart();
      for (let waited = 0; !t.logs.join('\n').includes('rate-limit store reachable again'); waited += 50) {
        if (waited > 10_000) throw new Error('the app did not reconnect to Redis');
        await sleep(50);
      }
      expect(await keysUnder(redis.url, keyPrefix)).toEqual([]);
      const after = [];
      for (let i = 0; i < 6; i += 1) after.push(await erin('203.0.113.8', `wrong ${i}`));
      expect(statusesOf(after)).toEqual([400, 400, 400, 400, 400, 429]);
      expect(await keysUnder(redis.url, `${keyPrefix}r1:`)).not.toEqual([]);
    });

    it('limits from the start when Redis cannot be reached at all', async () => {
      await redis.kill();
      const t = await instance(redis.url, prefix());
      expect((await register(t, 'grace', '192.0.2.11')).statusCode).toBe(200);
      const answers = [];
      for (let i = 0; i < 6; i += 1) {
        answers.push(
          await t.app.inject({
            method: 'POST',
            url: '/token',
            remoteAddress: '203.0.113.9',
            payload: { username: 'grace', password: `wrong ${i}` },
          }),
        );
      }
      expect(statusesOf(answers)).toEqual([400, 400, 400, 400, 400, 429]);
      await redis.restart();
    });
  });
});
