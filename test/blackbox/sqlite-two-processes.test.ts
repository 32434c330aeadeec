/**
 * Two server processes on one SQLite file (WAL, a busy timeout), written to concurrently through both: registrations,
 * logins and refreshes alternate between them. No answer may be a 5xx, and afterwards the file must pass
 * `PRAGMA integrity_check` with row counts that match the answers given. node:sqlite waits for a lock inside the
 * call, on the event loop: a /healthz probe on each process measures the worst stall that causes.
 */
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postForm, postJson, type Reply, request, strongPassword, uniqueName } from './support/client.ts';
import { createDatabase, type RunningServer, startServer, type TestDatabase } from './support/server.ts';

const CLIENTS = 12;
const CYCLES = 6;
const REFRESHES_PER_LOGIN = 3;

let db: TestDatabase;
const servers: RunningServer[] = [];

beforeAll(async () => {
  db = await createDatabase('sqlite');
  // One after the other: the first migrates and makes the signing key, the second finds both.
  for (let i = 0; i < 2; i += 1) servers.push(await startServer({ databaseUrl: db.url }));
}, 60_000);

afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  await db.drop();
}, 30_000);

/** Latencies of GET /healthz sent every 20 ms until stopped: the event loop's longest stall, from outside. */
function probe(server: RunningServer): { stop(): Promise<number[]> } {
  let running = true;
  const latencies: number[] = [];
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      const r = await request(server.url('/healthz'));
      if (r.status === 200) latencies.push(performance.now() - started);
      await sleep(20);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return latencies;
    },
  };
}

const max = (values: number[]) => Math.max(0, ...values);
const percentile = (values: number[], p: number) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))] ?? 0;

describe('two processes on one SQLite file', () => {
  it('keeps answering reads while a write waits for another process to release the lock', async () => {
    const [a] = servers as [RunningServer];
    const holdMs = 1500;
    const locker = new DatabaseSync(db.sqlitePath ?? '');
    const probing = probe(a);
    await sleep(300);
    locker.exec('BEGIN IMMEDIATE');
    const lockedAt = performance.now();
    const user = { username: uniqueName('wait'), password: strongPassword() };
    const registering = postJson(a.url('/register/'), {
      ...user,
      email: `${user.username}@example.com`,
      age: 30,
      level: 'beginner',
    }).then((reply) => ({ reply, at: performance.now() }));
    await sleep(holdMs);
    locker.exec('COMMIT');
    const releasedAt = performance.now();
    const { reply, at } = await registering;
    locker.close();
    await sleep(200);
    const latencies = await probing.stop();
    // The write waited for the lock and then went through, while /healthz kept answering: the wait did not hold
    // the event loop.
    expect(reply.status, reply.text).toBe(200);
    expect(at).toBeGreaterThan(releasedAt);
    expect(max(latencies)).toBeLessThan((releasedAt - lockedAt) / 3);
    console.log(
      `SQLite lock held ${Math.round(releasedAt - lockedAt)} ms by another process: the write answered ` +
        `${Math.round(at - releasedAt)} ms after the release; /healthz meanwhile max ${max(latencies).toFixed(1)} ms`,
    );
  }, 60_000);

  it('takes concurrent registrations, logins and refreshes through both without a 5xx or a corrupt file', async () => {
    const [a, b] = servers as [RunningServer, RunningServer];
    const other = (server: RunningServer) => (server === a ? b : a);
    const countUsers = () => {
      const file = new DatabaseSync(db.sqlitePath ?? '', { readOnly: true });
      try {
        return Number(Object.values(file.prepare('select count(*) from users').get() ?? {})[0]);
      } finally {
        file.close();
      }
    };
    // Users an earlier test of this file registered, without a session.
    const earlierUsers = countUsers();

    const atRest = [probe(a), probe(b)];
    await sleep(1000);
    const restLatencies = (await Promise.all(atRest.map((p) => p.stop()))).flat();

    const answers: { what: string; reply: Reply }[] = [];
    const record = (what: string, reply: Reply) => {
      answers.push({ what, reply });
      return reply;
    };
    let registered = 0;
    let loggedIn = 0;
    let refreshed = 0;
    const probes = [probe(a), probe(b)];
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, client) => {
        for (let cycle = 0; cycle < CYCLES; cycle += 1) {
          const first = (client + cycle) % 2 === 0 ? a : b;
          const user = { username: uniqueName('two'), password: strongPassword() };
          const registration = record(
            'register',
            await postJson(first.url('/register/'), {
              ...user,
              email: `${user.username}@example.com`,
              age: 30,
              level: 'beginner',
            }),
          );
          if (registration.status !== 200) continue;
          registered += 1;
          const login = record('login', await postForm(other(first).url('/token'), user));
          if (login.status !== 200) continue;
          loggedIn += 1;
          let refreshToken = login.json.refresh_token as string;
          let on = first;
          for (let i = 0; i < REFRESHES_PER_LOGIN; i += 1) {
            const refresh = record(
              'refresh',
              await postForm(on.url('/token'), { grant_type: 'refresh_token', refresh_token: refreshToken }),
            );
            if (refresh.status !== 200) break;
            refreshed += 1;
            refreshToken = refresh.json.refresh_token as string;
            on = other(on);
          }
          record(
            'conversation',
            await request(on.url('/conversation'), {
              headers: { authorization: `Bearer ${login.json.access_token}` },
            }),
          );
        }
      }),
    );
    const elapsedMs = performance.now() - started;
    const loadLatencies = (await Promise.all(probes.map((p) => p.stop()))).flat();

    const failures = answers.filter(({ reply }) => reply.status >= 500);
    expect(failures.map(({ what, reply }) => `${what}: ${reply.status} ${reply.text}`)).toEqual([]);
    // Every operation was valid: all of them succeed, through either process.
    expect(
      answers.filter(({ reply }) => reply.status !== 200).map(({ what, reply }) => `${what} ${reply.status}`),
    ).toEqual([]);
    expect(registered).toBe(CLIENTS * CYCLES);
    expect(loggedIn).toBe(registered);
    expect(refreshed).toBe(loggedIn * REFRESHES_PER_LOGIN);

    await Promise.all(servers.map((server) => server.stop()));
    for (const server of servers) expect(await server.exited).toEqual({ code: 0, signal: null });
    const file = new DatabaseSync(db.sqlitePath ?? '', { readOnly: true });
    try {
      const one = (sql: string) => Object.values(file.prepare(sql).get() ?? {})[0];
      expect(one('PRAGMA integrity_check')).toBe('ok');
      expect(file.prepare('PRAGMA foreign_key_check').all()).toEqual([]);
      expect(one('select count(*) from users')).toBe(earlierUsers + registered);
      expect(one('select count(*) from conversations')).toBe(earlierUsers + registered);
      expect(one('select count(*) from messages')).toBe(earlierUsers + registered);
      expect(one('select count(*) from sessions')).toBe(loggedIn);
      expect(one('select count(*) from refresh_tokens')).toBe(loggedIn + refreshed);
      // Each session's chain: one live head, every other token spent and the parent of exactly one successor.
      expect(one('select count(*) from refresh_tokens where used_at_ms is null')).toBe(loggedIn);
      expect(
        one(
          'select count(*) from refresh_tokens t where t.used_at_ms is not null and ' +
            '(select count(*) from refresh_tokens c where c.parent_id = t.id) <> 1',
        ),
      ).toBe(0);
    } finally {
      file.close();
    }

    console.log(
      `SQLite, two processes: ${answers.length} requests in ${Math.round(elapsedMs)} ms, no 5xx; ` +
        `/healthz latency at rest max ${max(restLatencies).toFixed(1)} ms, under the writes p99 ` +
        `${percentile(loadLatencies, 0.99).toFixed(1)} ms, max ${max(loadLatencies).toFixed(1)} ms (the longest event-loop stall seen)`,
    );
  }, 120_000);
});
