/**
 * Load shedding seen from outside: the threadpool sized for the hash slots, and a flood of concurrent password logins
 * at the production argon2 cost answered with nothing but 200, 400, 429 and 503 (+ Retry-After), after which the
 * server logs in as before.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postForm, registerFresh } from './support/client.ts';
import { createDatabase, type RunningServer, startServer, type TestDatabase } from './support/server.ts';

const threadpoolThreads = (pid: number) =>
  readdirSync(`/proc/${pid}/task`).filter(
    (tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'libuv-worker',
  ).length;

describe('hash slots and the threadpool', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createDatabase('sqlite');
  });
  afterAll(async () => {
    await db.drop();
  });

  it.each([
    [undefined, availableParallelism() + 4],
    ['3', 7],
  ])(
    'with HASH_CONCURRENCY=%s starts %i threadpool threads: the hash slots and four more',
    async (setting, threads) => {
      const server = await startServer({ databaseUrl: db.url, env: { HASH_CONCURRENCY: setting } });
      try {
        expect(threadpoolThreads(server.proc.pid as number)).toBe(threads);
      } finally {
        await server.stop();
      }
    },
  );
});

describe('a flood of concurrent password logins', () => {
  let db: TestDatabase;
  let server: RunningServer;
  beforeAll(async () => {
    db = await createDatabase('sqlite');
    server = await startServer({ databaseUrl: db.url, fastArgon2: false });
  }, 60_000);
  afterAll(async () => {
    await server.stop();
    await db.drop();
  }, 30_000);

  it('answers 500 at once with only 200, 400, 429 or 503 + Retry-After, and logs in as before afterwards', async () => {
    const user = await registerFresh(server, 'flood');

    const replies = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        fetch(server.url('/token'), {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', connection: 'close' },
          body: new URLSearchParams({
            username: user.username,
            password: i % 5 === 0 ? user.password : 'a wrong password',
          }).toString(),
          signal: AbortSignal.timeout(60_000),
        }).then(
          async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), body: await r.json() }),
          (error: unknown) => ({ status: 0, retryAfter: null, body: String(error) }),
        ),
      ),
    );
    const statuses = new Map<number, number>();
    for (const reply of replies) statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
    expect([...statuses.keys()].filter((status) => ![200, 400, 429, 503].includes(status))).toEqual([]);
    const shed = replies.filter((reply) => reply.status === 503);
    // 500 at once are more than the slots and the queue (16 per slot) hold.
    expect(shed.length).toBeGreaterThan(0);
    for (const reply of shed) {
      expect(reply.retryAfter).toBe('1');
      expect(reply.body).toMatchObject({ error: 'temporarily_unavailable' });
    }
    const login = await postForm(server.url('/token'), user);
    expect(login.status, login.text).toBe(200);
    console.log(`flood of 500 logins: ${JSON.stringify(Object.fromEntries(statuses))}`);
  }, 90_000);
});
