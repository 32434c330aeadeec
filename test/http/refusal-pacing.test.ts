import { afterEach, describe, expect, it } from 'vitest';
import { buildTestApp, registration, type TestApp } from '../support/build-test-app.ts';

// Registration's per-address cap (R6) is the cheapest refusal to stage: one registration a minute from an address.
const env = (extra: Record<string, string>) => ({
  RATE_LIMITS: 'on',
  REGISTER_PER_IP: '1/60s',
  ...extra,
});

describe('refusals past the budget are held before they are sent', () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });
  const register = (name: string) =>
    t!.app.inject({
      method: 'POST',
      url: '/register/',
      remoteAddress: '198.51.100.7',
      payload: registration({ username: name, email: `${name}@example.com` }),
    });

  it('answers the budget at once, holds the rest, and serves other requests meanwhile', async () => {
    t = await buildTestApp('sqlite', {
      env: env({ UNDELAYED_REFUSALS_PER_SECOND: '2', REFUSAL_DELAY_MS: '400' }),
    });
    expect((await register('first')).statusCode).toBe(200);
    const finished: string[] = [];
    const refusals = ['a', 'b', 'c', 'd'].map((name) =>
      register(`user${name}`).then((response) => {
        finished.push(name);
        return response;
      }),
    );
    // Two answered at once; the other two are held while a health check is answered.
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(finished).toHaveLength(2);
    const health = await t.app.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(200);
    expect(finished).toHaveLength(2);
    const responses = await Promise.all(refusals);
    for (const response of responses) {
      expect(response.statusCode).toBe(429);
      expect(Number(response.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(response.json()).toHaveProperty('detail');
    }
  });

  it('sends held answers when the app closes instead of delaying the shutdown', async () => {
    t = await buildTestApp('sqlite', {
      env: env({ UNDELAYED_REFUSALS_PER_SECOND: '0', REFUSAL_DELAY_MS: '10000' }),
    });
    expect((await register('first')).statusCode).toBe(200);
    const held = register('second');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    const closing = t.close();
    t = undefined;
    const response = await held;
    await closing;
    expect(response.statusCode).toBe(429);
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it('never holds with REFUSAL_DELAY_MS=0', async () => {
    t = await buildTestApp('sqlite', {
      env: env({ UNDELAYED_REFUSALS_PER_SECOND: '0', REFUSAL_DELAY_MS: '0' }),
    });
    expect((await register('first')).statusCode).toBe(200);
    const finished: string[] = [];
    const refusals = ['a', 'b', 'c'].map((name) =>
      register(`user${name}`).then((response) => {
        finished.push(name);
        return response;
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(finished).toHaveLength(3);
    for (const response of await Promise.all(refusals)) expect(response.statusCode).toBe(429);
  });
});
