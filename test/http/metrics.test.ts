import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { hash } from '@node-rs/argon2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenForScrapes } from '../../src/http/metrics.ts';
import { SECURITY_HEADERS } from '../../src/http/security-headers.ts';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import {
  buildTestApp,
  FAST_ARGON2,
  loginToken,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { createTestDatabase, dialects } from '../support/dialects.ts';
import { parseSamples, type Sample, samplesOf, total } from '../support/prometheus.ts';
import { parseRawAnswer, rawExchange } from '../support/raw-exchange.ts';

const METRICS_TOKEN = randomBytes(32).toString('base64url');
const REQUESTS = 'gatehouse_http_request_duration_seconds_count';

async function scrape(t: TestApp): Promise<Sample[]> {
  const response = await t.app.inject({
    method: 'GET',
    url: '/metrics',
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  expect(response.statusCode).toBe(200);
  return parseSamples(response.body);
}

describe.each(dialects)('Prometheus metrics on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { METRICS_TOKEN } });
  });
  afterAll(async () => {
    await t.close();
  });

  const passwordGrant = (username: string, password: string) =>
    t.app.inject({ method: 'POST', url: '/token', payload: { username, password } });
  const refreshGrant = (refreshToken: string) =>
    t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: refreshToken },
    });

  it('counts registrations, logins by outcome and refresh-token events after real requests', async () => {
    const before = await scrape(t);
    const event = (samples: Sample[], name: string) =>
      total(samples, 'gatehouse_security_events_total', { event: name });
    await registerUser(t.app, { username: 'carol', email: 'carol@example.com' });
    const granted = await passwordGrant('carol', STRONG_PASSWORD);
    expect(granted.statusCode).toBe(200);
    expect((await passwordGrant('carol', 'not her password at all')).statusCode).toBe(400);
    expect((await passwordGrant('nobody-here', 'not a password at all')).statusCode).toBe(400);
    const first = granted.json().refresh_token as string;
    expect((await refreshGrant(first)).statusCode).toBe(200);
    // Within the grace window a spent token is a retry; past it, a theft that ends the session.
    expect((await refreshGrant(first)).statusCode).toBe(200);
    t.clock.advanceSeconds(t.config.sessions.reuseGraceSeconds + 1);
    expect((await refreshGrant(first)).statusCode).toBe(400);
    const after = await scrape(t);

    expect(event(after, 'user_registered') - event(before, 'user_registered')).toBe(1);
    expect(event(after, 'login_succeeded') - event(before, 'login_succeeded')).toBe(1);
    expect(event(after, 'login_failed') - event(before, 'login_failed')).toBe(2);
    expect(event(after, 'refresh_token_retry') - event(before, 'refresh_token_retry')).toBe(1);
    expect(event(after, 'refresh_token_reuse_detected') - event(before, 'refresh_token_reuse_detected')).toBe(
      1,
    );
    const logins = (samples: Sample[], outcome: string) =>
      total(samples, 'gatehouse_logins_total', { outcome });
    expect(logins(after, 'succeeded') - logins(before, 'succeeded')).toBe(1);
    expect(logins(after, 'failed') - logins(before, 'failed')).toBe(2);
    for (const sample of samplesOf(after, 'gatehouse_logins_total', { outcome: 'failed' })) {
      expect(['wrong_password', 'unknown_user', 'locked', 'unspecified']).toContain(sample.labels.reason);
    }
  });

  it('times every request by route pattern, method and status, never by the raw path', async () => {
    const token = await loginToken(t.app, 'carol');
    const sessionId = randomUUID();
    const ended = await t.app.inject({
      method: 'DELETE',
      url: `/users/me/sessions/${sessionId}`,
      headers: { authorization: `Bearer ${token}` },
    });
    expect(ended.statusCode).toBe(404);
    expect((await t.app.inject({ method: 'GET', url: '/conversation' })).statusCode).toBe(401);
    expect((await t.app.inject({ method: 'GET', url: `/no/such/${sessionId}` })).statusCode).toBe(404);
    const samples = await scrape(t);

    const labelled = (route: string, method: string, status: string) =>
      total(samples, REQUESTS, { route, method, status_code: status });
    expect(labelled('/users/me/sessions/:id', 'DELETE', '404')).toBe(1);
    expect(labelled('/conversation', 'GET', '401')).toBeGreaterThanOrEqual(1);
    expect(labelled('unmatched', 'GET', '404')).toBeGreaterThanOrEqual(1);
    expect(labelled('/token', 'POST', '200')).toBeGreaterThanOrEqual(1);
    expect(samples.some((sample) => Object.values(sample.labels).some((v) => v.includes(sessionId)))).toBe(
      false,
    );
    const buckets = samplesOf(samples, 'gatehouse_http_request_duration_seconds_bucket', {
      route: '/users/me/sessions/:id',
    }).map((sample) => sample.labels.le);
    expect(buckets).toEqual(expect.arrayContaining(['0.001', '0.01', '0.1', '1', '10', '+Inf']));
  });

  it('counts a 503 answer by route and reason: the database unavailable, shutting down', async () => {
    const database = await createTestDatabase(dialect);
    const outage = await buildTestApp(dialect, { env: { METRICS_TOKEN }, database });
    try {
      await database.close();
      expect((await outage.app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
      outage.app.startDraining();
      expect((await outage.app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
      const samples = await scrape(outage);
      const unavailable = (labels: Record<string, string>) =>
        total(samples, 'gatehouse_http_unavailable_total', labels);
      expect(unavailable({ route: '/readyz' })).toBe(2);
      expect(unavailable({ route: '/readyz', reason: 'shutting_down' })).toBe(1);
      expect(unavailable({ route: '/readyz', reason: 'database_unavailable' })).toBe(1);
      expect(total(samples, REQUESTS, { route: '/readyz', status_code: '503' })).toBe(2);
    } finally {
      await outage.close();
      await database.destroy().catch(() => {});
    }
  });

  it("counts the hash queue's 503s by their reason: queue full, or waited too long", async () => {
    // A verification that holds the only slot for hundreds of milliseconds.
    const slowHash = await hash('slot holder', { memoryCost: 65536, timeCost: 20, parallelism: 1 });
    for (const [limits, reason] of [
      [{ HASH_QUEUE_MAX: '0' }, 'hash_queue_full'],
      [{ HASH_QUEUE_TIMEOUT_MS: '20' }, 'hash_queue_timeout'],
    ] as const) {
      const busy = await buildTestApp(dialect, { env: { METRICS_TOKEN, HASH_CONCURRENCY: '1', ...limits } });
      try {
        const idle = () => busy.passwords.load().inFlight + busy.passwords.load().queued === 0;
        while (!idle()) await sleep(2);
        await registerUser(busy.app, { username: 'dora', email: 'dora@example.com' });
        const holding = busy.passwords.verify(slowHash, 'not the slot holder');
        const login = await busy.app.inject({
          method: 'POST',
          url: '/token',
          payload: { username: 'dora', password: STRONG_PASSWORD },
        });
        expect(login.statusCode, reason).toBe(503);
        await holding;
        const samples = await scrape(busy);
        expect(total(samples, 'gatehouse_http_unavailable_total', { route: '/token', reason }), reason).toBe(
          1,
        );
      } finally {
        await busy.close();
      }
    }
  });

  it('gives 1,000 requests to random unknown paths one label set', async () => {
    for (let i = 0; i < 1000; i += 1) {
      await t.app.inject({ method: 'GET', url: `/${randomBytes(8).toString('hex')}?q=${i}` });
    }
    const samples = await scrape(t);
    const unmatched = samplesOf(samples, REQUESTS, { route: 'unmatched' });
    expect(unmatched.map((sample) => sample.labels)).toEqual([
      { method: 'GET', route: 'unmatched', status_code: '404' },
    ]);
    expect(unmatched[0]?.value).toBeGreaterThanOrEqual(1000);
    const routes = new Set(samplesOf(samples, REQUESTS).map((sample) => sample.labels.route));
    expect(routes.size).toBeLessThan(20);
  });

  // Found from outside: `GET *` (400) was labelled with the account page's route, `/`.
  it('labels a request for the asterisk target * whatever its method, never as the route /', async () => {
    const asterisk = await buildTestApp(dialect, { env: { METRICS_TOKEN } });
    let samples: Sample[];
    try {
      await asterisk.app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = asterisk.app.server.address() as AddressInfo;
      for (const method of ['GET', 'HEAD', 'POST', 'DELETE']) {
        const answer = await rawExchange(
          port,
          `${method} * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        );
        expect(parseRawAnswer(answer).statusLine, method).toMatch(/^HTTP\/1\.1 400 /);
      }
      samples = await scrape(asterisk);
    } finally {
      await asterisk.close();
    }
    expect(samplesOf(samples, REQUESTS, { route: '/', status_code: '400' })).toEqual([]);
    expect(total(samples, REQUESTS, { route: '*', status_code: '400' })).toBe(4);
  });

  // Found from outside: a 405 on a known path was labelled unmatched, which the README keeps for unknown paths.
  it('labels a 405 with the pattern of the path it refused a method on, and a random id on it with the same', async () => {
    for (const id of ['1', '2', '77']) {
      expect((await t.app.inject({ method: 'PUT', url: `/users/me/sessions/${id}` })).statusCode).toBe(405);
    }
    expect((await t.app.inject({ method: 'PUT', url: '/register/' })).statusCode).toBe(405);
    const samples = await scrape(t);
    expect(samplesOf(samples, REQUESTS, { method: 'PUT' }).map((sample) => sample.labels)).toEqual(
      expect.arrayContaining([
        { method: 'PUT', route: '/users/me/sessions/:id', status_code: '405' },
        { method: 'PUT', route: '/register/', status_code: '405' },
      ]),
    );
    expect(samplesOf(samples, REQUESTS, { method: 'PUT', route: 'unmatched' })).toEqual([]);
  });

  it('answers /metrics 401 with a Bearer challenge without the token or with a wrong one', async () => {
    const missing = await t.app.inject({ method: 'GET', url: '/metrics' });
    expect(missing.statusCode).toBe(401);
    expect(missing.headers['www-authenticate']).toBe('Bearer');
    expect(missing.json()).toEqual({ detail: 'Not authenticated' });
    for (const authorization of [
      `Bearer ${randomBytes(32).toString('base64url')}`,
      `Bearer ${METRICS_TOKEN.slice(0, -1)}`,
      `Bearer ${METRICS_TOKEN}x`,
    ]) {
      const wrong = await t.app.inject({ method: 'GET', url: '/metrics', headers: { authorization } });
      expect(wrong.statusCode).toBe(401);
      expect(wrong.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
      expect(wrong.json()).toEqual({ detail: 'Could not validate credentials' });
      expect(wrong.body).not.toMatch(/gatehouse_/);
    }
    const basic = await t.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Basic ${Buffer.from(`x:${METRICS_TOKEN}`).toString('base64')}` },
    });
    expect(basic.statusCode).toBe(401);
  });

  it('serves the Prometheus text format with the right token, never cached', async () => {
    const response = await t.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `bearer ${METRICS_TOKEN}` },
    });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.body).toMatch(/^# TYPE gatehouse_http_request_duration_seconds histogram$/m);
    expect(response.body).toMatch(/^# HELP gatehouse_logins_total /m);
  });

  it('exports the process metrics under their standard names', async () => {
    const names = new Set((await scrape(t)).map((sample) => sample.name));
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_seconds',
      'nodejs_heap_size_used_bytes',
    ]) {
      expect(names).toContain(name);
    }
  });

  it('does not count its own scrapes as traffic', async () => {
    await scrape(t);
    await t.app.inject({ method: 'GET', url: '/metrics' });
    const samples = await scrape(t);
    expect(samplesOf(samples, REQUESTS, { route: '/metrics' })).toEqual([]);
  });

  it('leaves /metrics out of the OpenAPI document', async () => {
    const document = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(Object.keys(document.paths)).not.toContain('/metrics');
  });

  it(
    dialect === 'postgres'
      ? 'reports the database pool: connections, idle ones, waiting queries and the maximum'
      : 'reports no pool gauges on SQLite, which has one connection and no pool',
    async () => {
      await t.app.inject({ method: 'GET', url: '/readyz' });
      const samples = await scrape(t);
      const pool = (name: string) => samplesOf(samples, `gatehouse_db_pool_${name}`);
      if (dialect === 'sqlite') {
        expect(samples.filter((sample) => sample.name.startsWith('gatehouse_db_pool_'))).toEqual([]);
        return;
      }
      expect(pool('connections')[0]?.value).toBeGreaterThanOrEqual(1);
      expect(pool('idle_connections')[0]?.value).toBeGreaterThanOrEqual(0);
      expect(pool('waiting_queries')[0]?.value).toBe(0);
      expect(pool('max_connections')[0]?.value).toBe(20);
    },
  );
});

describe('Prometheus metrics switched off or moved', () => {
  it('answers /metrics 404, as any unknown path, when neither METRICS_TOKEN nor METRICS_PORT is set', async () => {
    const t = await buildTestApp('sqlite');
    try {
      const response = await t.app.inject({
        method: 'GET',
        url: '/metrics',
        headers: { authorization: `Bearer ${METRICS_TOKEN}` },
      });
      expect(response.statusCode).toBe(404);
      expect(response.json()).toEqual({ detail: 'Not Found' });
    } finally {
      await t.close();
    }
  });

  it('answers /metrics 404 on the main port when only METRICS_PORT is set', async () => {
    const t = await buildTestApp('sqlite', { env: { METRICS_PORT: '9464' } });
    try {
      expect((await t.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(404);
    } finally {
      await t.close();
    }
  });

  it('reports the hashes in flight and queued when the hasher tells its load', async () => {
    // The load-shedding queue adds load() to the hasher; until then this is the one hasher that has it.
    const hasher = Object.assign(createPasswordHasher(FAST_ARGON2), {
      load: () => ({ inFlight: 2, queued: 5 }),
    });
    const t = await buildTestApp('sqlite', { env: { METRICS_TOKEN }, passwords: hasher });
    try {
      const samples = await scrape(t);
      expect(total(samples, 'gatehouse_password_hashes_in_flight')).toBe(2);
      expect(total(samples, 'gatehouse_password_hashes_queued')).toBe(5);
    } finally {
      await t.close();
    }
  });
});

describe('the METRICS_PORT listener', () => {
  it('answers scrapes, unknown paths, other methods and a failed scrape with the security header set', async () => {
    let fail = false;
    const server = await listenForScrapes(
      {
        contentType: 'text/plain; version=0.0.4; charset=utf-8',
        scrape: async () => {
          if (fail) throw new Error('no registry');
          return 'gatehouse_up 1\n';
        },
      },
      '127.0.0.1',
      0,
    );
    try {
      const { port } = server.address() as AddressInfo;
      const at = (path: string, method = 'GET') => fetch(`http://127.0.0.1:${port}${path}`, { method });
      const answers = [await at('/metrics'), await at('/nope'), await at('/metrics', 'POST')];
      fail = true;
      answers.push(await at('/metrics'));
      expect(answers.map((answer) => answer.status)).toEqual([200, 404, 405, 503]);
      for (const answer of answers) {
        for (const [name, value] of Object.entries(SECURITY_HEADERS))
          expect(answer.headers.get(name)).toBe(value);
        expect(answer.headers.get('cache-control')).toBe('no-store');
      }
    } finally {
      server.close();
    }
  });

  // Found from outside: what Node's parser refuses was answered bare there (no body, no security header).
  it('answers what the HTTP parser refuses in the error shape, with the security header set, and closes', async () => {
    const server = await listenForScrapes(
      { contentType: 'text/plain; version=0.0.4; charset=utf-8', scrape: async () => 'gatehouse_up 1\n' },
      '127.0.0.1',
      0,
    );
    try {
      const { port } = server.address() as AddressInfo;
      for (const request of [
        'GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
        `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      ]) {
        const answer = parseRawAnswer(await rawExchange(port, request));
        expect(answer.statusLine).toMatch(/^HTTP\/1\.1 4\d\d /);
        expect(answer.headers.connection).toBe('close');
        for (const [name, value] of Object.entries(SECURITY_HEADERS))
          expect(answer.headers[name]).toBe(value);
        expect(JSON.parse(answer.body)).toEqual({ detail: expect.any(String) });
      }
    } finally {
      server.close();
    }
  });
});
