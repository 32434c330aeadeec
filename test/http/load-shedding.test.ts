import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { getHeapStatistics } from 'node:v8';
import { hash } from '@node-rs/argon2';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Dialect } from '../../src/db/schema.ts';
import { heapGuardBytes, PRESSURE_LIMITS } from '../../src/http/load-shedding.ts';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import {
  buildTestApp,
  FAST_ARGON2,
  registerUser,
  registration,
  STRONG_PASSWORD,
  type TestApp,
  type TestAppOptions,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { halfClosedExchange, parseRawAnswer } from '../support/raw-exchange.ts';

const OVERLOADED = 'The server is busy; retry in a second.';
const JSON_HEADERS = { 'content-type': 'application/json' };

/** A stored hash whose verification holds a slot for hundreds of milliseconds (64 MiB, t=20). */
let slowHash: string;
beforeAll(async () => {
  slowHash = await hash('slot holder', { memoryCost: 65536, timeCost: 20, parallelism: 1 });
});

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function app(dialect: Dialect, options: TestAppOptions): Promise<TestApp> {
  t = await buildTestApp(dialect, options);
  return t;
}

/**
 * Takes the only hash slot with a slow verification, as a concurrent login would, once the hasher's own start-up work
 * (its dummy hash and bcrypt calibration) is done.
 */
async function holdTheSlot(test: TestApp): Promise<{ released: Promise<boolean> }> {
  await until(
    'the hasher to be idle',
    () => test.passwords.load().inFlight + test.passwords.load().queued === 0,
  );
  const released = test.passwords.verify(slowHash, 'not the slot holder');
  expect(test.passwords.load().inFlight).toBe(1);
  return { released };
}

const login = (test: TestApp, password = STRONG_PASSWORD) =>
  test.app.inject({ method: 'POST', url: '/token', payload: { username: 'alice', password } });

const countRows = async (test: TestApp, table: 'sessions' | 'users') =>
  Number(
    (
      await test.database.db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );

const refusals = (test: TestApp) =>
  test.logs
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.msg === 'request refused: unavailable');

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe.each(dialects)('the hash queue bound on %s', (dialect) => {
  it.each([
    ['HASH_QUEUE_MAX is reached', { HASH_QUEUE_MAX: '0' }, /^hash queue full/],
    [
      'it has waited HASH_QUEUE_TIMEOUT_MS for a slot',
      { HASH_QUEUE_TIMEOUT_MS: '50' },
      /^waited 50 ms for a hash slot$/,
    ],
  ])(
    'answers a login 503 with Retry-After 1 and the OAuth body once %s, without hashing or opening a session',
    async (_, limits, reason) => {
      const test = await app(dialect, { env: { HASH_CONCURRENCY: '1', ...limits } });
      // With no queue, a registration is refused while the hasher's start-up work holds the slot.
      await until('the hasher to be idle', () => test.passwords.load().inFlight === 0);
      await registerUser(test.app);
      const holding = (await holdTheSlot(test)).released;
      const response = await login(test);
      // Still the slot holder's: the login did not take the slot, and left the queue.
      expect(test.passwords.load()).toEqual({ inFlight: 1, queued: 0 });
      expect(response.statusCode).toBe(503);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.headers['cache-control']).toBe('no-store');
      expect(response.headers['x-request-id']).toBe(response.json().request_id);
      expect(response.json()).toMatchObject({
        error: 'temporarily_unavailable',
        error_description: OVERLOADED,
        detail: OVERLOADED,
      });
      expect(await countRows(test, 'sessions')).toBe(0);
      expect(refusals(test)).toEqual([
        expect.objectContaining({
          code: 'overloaded',
          reason: expect.stringMatching(reason),
          method: 'POST',
          path: '/token',
          ip: '127.0.0.1',
        }),
      ]);
      // One line per refusal: a flood must not cost two each, so no request line repeats it.
      const lines = test.logs.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines.filter((line) => line.status === 503)).toEqual([]);
      await holding;
      expect((await login(test)).statusCode).toBe(200);
    },
  );

  it('answers a registration 503 in the FastAPI shape when its hash is shed, and stores no user', async () => {
    const test = await app(dialect, { env: { HASH_CONCURRENCY: '1', HASH_QUEUE_MAX: '0' } });
    const holding = (await holdTheSlot(test)).released;
    const response = await test.app.inject({ method: 'POST', url: '/register/', payload: registration() });
    expect(response.statusCode).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    expect(response.json()).toEqual({ detail: OVERLOADED, request_id: response.headers['x-request-id'] });
    expect(await countRows(test, 'users')).toBe(0);
    await holding;
    expect(
      (await test.app.inject({ method: 'POST', url: '/register/', payload: registration() })).statusCode,
    ).toBe(200);
  });

  it('answers refreshes and GET /conversation while password logins wait for the only hash slot', async () => {
    const test = await app(dialect, { env: { HASH_CONCURRENCY: '1' } });
    await registerUser(test.app);
    const tokens = (await login(test)).json() as { access_token: string; refresh_token: string };
    const holding = (await holdTheSlot(test)).released;
    const queued = [login(test), login(test), login(test)];
    await until('three logins queued', () => test.passwords.load().queued === 3);
    const refresh = await test.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token },
    });
    const conversation = await test.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    // Answered while the slot was still taken and the logins still waited: neither queued behind them.
    expect(test.passwords.load()).toEqual({ inFlight: 1, queued: 3 });
    expect(refresh.statusCode).toBe(200);
    expect(conversation.statusCode).toBe(200);
    await holding;
    expect((await Promise.all(queued)).map((response) => response.statusCode)).toEqual([200, 200, 200]);
  });
});

describe.each(dialects)('a /token flood beyond the hash queue on %s', (dialect) => {
  it('refuses password grants at once, before throttling counts them, and keeps serving refresh grants', async () => {
    // R5 allows two password grants per address: had the refused grants been counted, the last login would be a 429.
    const env = {
      HASH_CONCURRENCY: '1',
      HASH_QUEUE_MAX: '0',
      RATE_LIMITS: 'on',
      TOKEN_PASSWORD_PER_IP: '2/300s',
    };
    const test = await app(dialect, { env });
    await until('the hasher to be idle', () => test.passwords.load().inFlight === 0);
    await registerUser(test.app);
    const tokens = (await login(test)).json() as { refresh_token: string };
    const holding = (await holdTheSlot(test)).released;
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const response = await login(test, 'a wrong password, never checked');
      expect(response.statusCode).toBe(503);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.headers.pragma).toBe('no-cache');
      expect(response.json()).toMatchObject({ error: 'temporarily_unavailable', detail: OVERLOADED });
    }
    const refresh = await test.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token },
    });
    expect(refresh.statusCode).toBe(200);
    expect(test.passwords.load()).toEqual({ inFlight: 1, queued: 0 });
    expect(refusals(test)).toHaveLength(5);
    expect(refusals(test).every((line) => /^hash queue full/.test(String(line.reason)))).toBe(true);
    await holding;
    expect((await login(test)).statusCode).toBe(200);
  });
});

describe('hashing beside other requests', () => {
  /** The hashes that would run at once if three were asked for now. */
  const slotsInUse = async (test: TestApp) => {
    await until(
      'the hasher to be idle',
      () => test.passwords.load().inFlight + test.passwords.load().queued === 0,
    );
    const running = [test.passwords.hash('one'), test.passwords.hash('two'), test.passwords.hash('three')];
    const { inFlight } = test.passwords.load();
    await Promise.all(running);
    return inFlight;
  };
  // A clock that stands still: every request below falls into one counting window, however slow the machine.
  const appWithTwoSlots = () =>
    app('sqlite', {
      passwords: createPasswordHasher(FAST_ARGON2, { concurrency: 2, importedBcryptCost: 4, now: () => 0 }),
    });

  it('leaves a core to other requests once 50 came within a second', async () => {
    const test = await appWithTwoSlots();
    for (let read = 0; read < 49; read += 1) {
      expect((await test.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    }
    expect(await slotsInUse(test)).toBe(2);
    expect((await test.app.inject({ method: 'GET', url: '/conversation' })).statusCode).toBe(401);
    expect(await slotsInUse(test)).toBe(1);
  });

  it('does not count password grants, refresh grants or sign-ups, which are mostly hashing', async () => {
    const test = await appWithTwoSlots();
    await registerUser(test.app);
    for (let attempt = 0; attempt < 50; attempt += 1) {
      expect((await login(test, `wrong password ${attempt}`)).statusCode).toBe(400);
      const refresh = await test.app.inject({
        method: 'POST',
        url: '/token',
        payload: { grant_type: 'refresh_token', refresh_token: `not-a-token-${attempt}` },
      });
      expect(refresh.statusCode).toBe(400);
    }
    expect(await slotsInUse(test)).toBe(2);
    for (let attempt = 0; attempt < 50; attempt += 1) {
      const signUp = await test.app.inject({
        method: 'POST',
        url: '/register/',
        payload: registration({ username: `user${attempt}`, email: `user${attempt}@example.com` }),
      });
      expect(signUp.statusCode).toBe(200);
    }
    expect(await slotsInUse(test)).toBe(2);
  });
});

describe('a client that leaves while its login is queued', () => {
  it('loses its place, is never hashed, and is counted as client_gone', async () => {
    const metricsToken = 'a-metrics-token-long-enough-for-the-config-0123456789';
    const test = await app('sqlite', { env: { HASH_CONCURRENCY: '1', METRICS_TOKEN: metricsToken } });
    await registerUser(test.app);
    await test.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = test.app.server.address() as AddressInfo;
    const holding = (await holdTheSlot(test)).released;
    const body = JSON.stringify({ username: 'alice', password: STRONG_PASSWORD });
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(
      `POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    await until('the login to queue', () => test.passwords.load().queued === 1);
    socket.destroy();
    await until('the login to leave the queue', () => test.passwords.load().queued === 0);
    // The slot is still the holder's: the abandoned login did not take it on leaving.
    expect(test.passwords.load().inFlight).toBe(1);
    await holding;
    await until('the hasher to be idle', () => test.passwords.load().inFlight === 0);
    expect(refusals(test)).toEqual([
      expect.objectContaining({ reason: 'client closed the connection while its hash was queued' }),
    ]);
    expect(await countRows(test, 'sessions')).toBe(0);
    // No answer reaches a gone client, so the count cannot wait for one.
    const metrics = await test.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${metricsToken}` },
    });
    expect(metrics.body).toContain('gatehouse_http_unavailable_total{route="/token",reason="client_gone"} 1');
  });
});

describe.each(dialects)(
  'a client that ends its side of the connection after its request (a FIN), on %s',
  (dialect) => {
    const loginRequest = () => {
      const body = JSON.stringify({ username: 'alice', password: STRONG_PASSWORD });
      return `POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    };

    // RFC 9293 §3.6: it may go on reading. Found in review: with a free slot it was shed as gone, 503 at every try.
    it('is answered when a hash slot is free: it logs in', async () => {
      const test = await app(dialect, {});
      await registerUser(test.app);
      await test.app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = test.app.server.address() as AddressInfo;
      await until('the hasher to be idle', () => test.passwords.load().inFlight === 0);
      const answer = await halfClosedExchange(port, loginRequest());
      expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
      expect(await countRows(test, 'sessions')).toBe(1);
    });

    // RFC 9112 §9.6: the server closes once it has answered, and its answer says so. The login waits until the server
    // has read the FIN, which comes in a read of its own: a refresh answered at once could be written before it.
    it('says in its answer, written after the FIN was read, that the connection closes', async () => {
      const fast = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
      let finRead = () => {};
      const fin = new Promise<void>((resolve) => {
        finRead = resolve;
      });
      const verify: typeof fast.verify = async (...args) => {
        await fin;
        return fast.verify(...args);
      };
      const test = await app(dialect, { passwords: { ...fast, verify } });
      await registerUser(test.app);
      await test.app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = test.app.server.address() as AddressInfo;
      test.app.server.on('connection', (socket: net.Socket) => socket.once('end', () => finRead()));
      const { statusLine, headers } = parseRawAnswer(await halfClosedExchange(port, loginRequest()));
      expect(statusLine).toBe('HTTP/1.1 200 OK');
      expect(headers.connection).toBe('close');
      expect(headers['keep-alive']).toBeUndefined();
    });

    it('is taken for a client gone when its login would wait for a slot: never hashed, counted as client_gone', async () => {
      const test = await app(dialect, { env: { HASH_CONCURRENCY: '1' } });
      await registerUser(test.app);
      await test.app.listen({ host: '127.0.0.1', port: 0 });
      const { port } = test.app.server.address() as AddressInfo;
      const holding = (await holdTheSlot(test)).released;
      const answer = await halfClosedExchange(port, loginRequest());
      expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
      expect(test.passwords.load().queued).toBe(0);
      await holding;
      expect(refusals(test)).toEqual([
        expect.objectContaining({ reason: expect.stringMatching(/client closed/) }),
      ]);
      expect(await countRows(test, 'sessions')).toBe(0);
    });
  },
);

describe('the event-loop guard (@fastify/under-pressure)', () => {
  it('guards at 1 s of mean event-loop delay, not at utilisation: a saturated loop that keeps up is not shed', () => {
    expect(PRESSURE_LIMITS).toMatchObject({ maxEventLoopDelayMs: 1000, maxEventLoopUtilization: 0 });
  });

  it('answers 503 with Retry-After through the error table while under pressure, and keeps the health checks', async () => {
    // Any work at all is over this utilisation: the guard trips at its first sample.
    const test = await app('sqlite', { pressure: { maxEventLoopUtilization: 1e-9, sampleIntervalMs: 100 } });
    await sleep(250);
    const token = await login(test);
    expect(token.statusCode).toBe(503);
    expect(token.headers['retry-after']).toBe('1');
    expect(token.headers['cache-control']).toBe('no-store');
    expect(token.headers.pragma).toBe('no-cache');
    expect(token.json()).toMatchObject({ error: 'temporarily_unavailable', detail: OVERLOADED });
    for (const request of [
      { method: 'GET', url: '/conversation' },
      { method: 'POST', url: '/register/', payload: registration(), headers: JSON_HEADERS },
    ] as const) {
      const response = await test.app.inject(request);
      expect(response.statusCode, request.url).toBe(503);
      expect(response.headers['retry-after'], request.url).toBe('1');
      expect(response.headers['x-content-type-options'], request.url).toBe('nosniff');
      expect(response.headers['x-request-id'], request.url).toBeDefined();
      expect(response.json(), request.url).toEqual({
        detail: OVERLOADED,
        request_id: response.headers['x-request-id'],
      });
    }
    expect(await countRows(test, 'users')).toBe(0);
    for (const url of ['/healthz', '/readyz']) {
      expect((await test.app.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
    expect(refusals(test)[0]).toMatchObject({
      code: 'overloaded',
      reason: expect.stringMatching(/^eventLoopUtilization/),
    });
  });

  it('sheds while the event loop is blocked, and serves again by itself once it keeps up', async () => {
    const test = await app('sqlite', { pressure: { maxEventLoopDelayMs: 50, sampleIntervalMs: 100 } });
    // The guard starts counting two intervals after the app is ready.
    await sleep(300);
    // The delay is a mean over the samples of an interval (one every 10 ms): a stall ten intervals long lifts the
    // mean of the interval that records it above 90 ms, whatever else that interval held.
    const blockedUntil = performance.now() + 1000;
    while (performance.now() < blockedUntil) {
      // a synchronous stall, as a runaway computation would cause
    }
    // The guard reads the delay monitor at its next sample, which may come before or after the monitor's own
    // record of the stall: look for the 503 over several intervals.
    let during = await test.app.inject({ method: 'GET', url: '/conversation' });
    for (let attempt = 0; attempt < 40 && during.statusCode !== 503; attempt += 1) {
      await sleep(20);
      during = await test.app.inject({ method: 'GET', url: '/conversation' });
    }
    expect(during.statusCode).toBe(503);
    expect(during.headers['retry-after']).toBe('1');
    expect((await test.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    // In the stalled interval the loop was both late and busy throughout: either limit may be the one read first.
    expect(refusals(test)[0]?.reason).toMatch(/^eventLoop(Delay|Utilization) /);
    let after = during;
    for (let attempt = 0; attempt < 50 && after.statusCode === 503; attempt += 1) {
      await sleep(100);
      after = await test.app.inject({ method: 'GET', url: '/conversation' });
    }
    // No token: the request got past the guard to the Bearer check.
    expect(after.statusCode).toBe(401);
  });

  it('guards the heap at 90% of its limit by default, and sheds past MAX_HEAP_USED_MB while health checks answer', async () => {
    expect(heapGuardBytes('auto')).toBe(Math.floor(getHeapStatistics().heap_size_limit * 0.9));
    expect(heapGuardBytes(undefined)).toBeUndefined();
    // Any heap at all is over one megabyte: the guard trips at its first sample.
    const test = await app('sqlite', { env: { MAX_HEAP_USED_MB: '1' }, pressure: { sampleIntervalMs: 100 } });
    await sleep(350);
    const response = await test.app.inject({ method: 'POST', url: '/register/', payload: registration() });
    expect(response.statusCode).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    expect(response.json()).toEqual({ detail: OVERLOADED, request_id: response.headers['x-request-id'] });
    for (const url of ['/healthz', '/readyz']) {
      expect((await test.app.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
    expect(refusals(test)[0]).toMatchObject({
      code: 'overloaded',
      reason: expect.stringMatching(/^heapUsedBytes /),
    });
  });

  it('lets requests through at the production limits', async () => {
    const test = await app('sqlite', { pressure: { sampleIntervalMs: 100 } });
    // Past the intervals that held the app's own start-up work, which keeps the loop busy throughout.
    await sleep(400);
    expect(
      (await test.app.inject({ method: 'POST', url: '/register/', payload: registration() })).statusCode,
    ).toBe(200);
  });
});
