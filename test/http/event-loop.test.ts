import { hashSync } from '@node-rs/bcrypt';
import { afterEach, describe, expect, it } from 'vitest';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import {
  buildTestApp,
  FAST_ARGON2,
  registerUser,
  registration,
  type TestApp,
} from '../support/build-test-app.ts';

// Real sockets, not inject(): a stalled event loop shows only as a late answer to another connection.
describe('the event loop under expensive password checks', () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  async function listen(app: TestApp['app']) {
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    if (!address || typeof address === 'string') throw new Error('not listening on TCP');
    return `http://127.0.0.1:${address.port}`;
  }

  async function healthzMedianMs(base: string, probes: number) {
    const durations: number[] = [];
    for (let i = 0; i < probes; i += 1) {
      const started = performance.now();
      const response = await fetch(`${base}/healthz`);
      await response.text();
      durations.push(performance.now() - started);
    }
    durations.sort((a, b) => a - b);
    return durations[Math.floor(durations.length / 2)]!;
  }

  /** Runs `connections` loops posting `request` until the probes finish; returns the /healthz median meanwhile. */
  async function healthzMedianUnderLoad(
    base: string,
    connections: number,
    request: () => Promise<Response>,
    probes: number,
  ) {
    let running = true;
    const statuses = new Set<number>();
    const loops = Array.from({ length: connections }, async () => {
      while (running) {
        const response = await request();
        await response.text();
        statuses.add(response.status);
      }
    });
    // Let every loop have a request in flight before probing.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const median = await healthzMedianMs(base, probes);
    running = false;
    await Promise.all(loops);
    return { median, statuses };
  }

  it('keeps /healthz fast while three connections post 128-digit passwords to /register/', async () => {
    t = await buildTestApp('sqlite');
    const base = await listen(t.app);
    const atRest = await healthzMedianMs(base, 30);
    let n = 0;
    const { median, statuses } = await healthzMedianUnderLoad(
      base,
      3,
      () => {
        n += 1;
        return fetch(`${base}/register/`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(
            registration({
              username: `digits${n}`,
              email: `digits${n}@example.com`,
              password: '1'.repeat(128),
            }),
          ),
        });
      },
      30,
    );
    expect([...statuses]).toEqual([422]);
    // Before: ~680 ms against ~3 ms at rest. Generous, since two noisy cores are shared.
    expect(median).toBeLessThan(Math.max(atRest, 1) * 25);
  });

  it('keeps /healthz fast while six connections send wrong passwords for a bcrypt account', async () => {
    t = await buildTestApp('sqlite', { passwords: createPasswordHasher(FAST_ARGON2) });
    await registerUser(t.app, { username: 'imported', email: 'imported@example.com' });
    await t.database.db
      .updateTable('users')
      .set({ password_hash: hashSync('the seed password', 12) })
      .where('username_canonical', '=', 'imported')
      .execute();
    const base = await listen(t.app);
    const atRest = await healthzMedianMs(base, 30);
    const { median, statuses } = await healthzMedianUnderLoad(
      base,
      6,
      () =>
        fetch(`${base}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: 'imported', password: 'not the seed password' }),
        }),
      30,
    );
    expect([...statuses]).toEqual([400]);
    // Before: ~1 s, bcryptjs ran on the event loop.
    expect(median).toBeLessThan(Math.max(atRest, 1) * 25);
  });
});
