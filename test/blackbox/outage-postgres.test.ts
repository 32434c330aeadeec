/**
 * PostgreSQL stopped under a running server, for real: a private cluster (support/private-postgres.ts) is stopped
 * with `pg_ctl -m immediate` while clients keep sending requests, then started again. Requests must answer 503 within
 * seconds (no hang, no 500, no reset), /readyz must say 503, and the server must serve again by itself.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postForm, registerFresh, strongPassword, uniqueName } from './support/client.ts';
import { type PrivatePostgres, startPrivatePostgres } from './support/private-postgres.ts';
import { type RunningServer, startServer } from './support/server.ts';

type Kind = 'conversation' | 'login' | 'register' | 'readyz' | 'healthz';

interface Outcome {
  kind: Kind;
  startedAt: number;
  endedAt: number;
  status?: number;
  retryAfter?: string | null;
  body?: string;
  error?: string;
}

/** Longer than the pool's connection timeout (5 s) and query timeout (10 s) together: past this, a request hung. */
const HANG_MS = 20_000;

let cluster: PrivatePostgres | undefined;
let server: RunningServer | undefined;

beforeAll(async () => {
  cluster = await startPrivatePostgres();
  await cluster.createDatabase('gatehouse');
  server = await startServer({ databaseUrl: cluster.url('gatehouse') });
}, 60_000);

afterAll(async () => {
  try {
    await server?.stop();
  } finally {
    await cluster?.destroy();
  }
}, 60_000);

async function send(
  kind: Kind,
  access: string,
  user: { username: string; password: string },
): Promise<Outcome> {
  const base = server?.baseUrl ?? '';
  const startedAt = performance.now();
  const signal = AbortSignal.timeout(HANG_MS);
  try {
    const response =
      kind === 'conversation'
        ? await fetch(`${base}/conversation`, { headers: { authorization: `Bearer ${access}` }, signal })
        : kind === 'login'
          ? await fetch(`${base}/token`, {
              method: 'POST',
              headers: { 'content-type': 'application/x-www-form-urlencoded' },
              body: new URLSearchParams({ username: user.username, password: user.password }).toString(),
              signal,
            })
          : kind === 'register'
            ? await fetch(`${base}/register/`, {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                  username: uniqueName('o'),
                  email: `${uniqueName('o')}@example.com`,
                  password: strongPassword(),
                  age: 30,
                  level: 'beginner',
                }),
                signal,
              })
            : await fetch(`${base}/${kind}`, { signal });
    const body = await response.text();
    return {
      kind,
      startedAt,
      endedAt: performance.now(),
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      body,
    };
  } catch (error) {
    return { kind, startedAt, endedAt: performance.now(), error: String((error as Error).cause ?? error) };
  }
}

describe('PostgreSQL stopped under a running server', () => {
  it.each(['immediate', 'fast'] as const)(
    'stopped with -m %s: answers 503 within seconds while it is down, /readyz 503, never crashes, and serves again once it is back',
    async (mode) => {
      if (!cluster || !server) throw new Error('not started');
      const user = await registerFresh(server, 'outage');
      const login = await postForm(server.url('/token'), {
        username: user.username,
        password: user.password,
      });
      expect(login.status, login.text).toBe(200);
      const access = login.json.access_token as string;

      const outcomes: Outcome[] = [];
      let loading = true;
      const kinds: Kind[] = [
        'conversation',
        'login',
        'conversation',
        'readyz',
        'register',
        'conversation',
        'healthz',
      ];
      const clients = Array.from({ length: 6 }, async (_, client) => {
        for (let i = client; loading; i += 1) {
          outcomes.push(await send(kinds[i % kinds.length] as Kind, access, user));
          await sleep(20);
        }
      });

      await sleep(1500);
      const stoppingAt = performance.now();
      await cluster.stop(mode);
      const stoppedAt = performance.now();
      await sleep(4000);
      const startingAt = performance.now();
      await cluster.start();
      const startedAt = performance.now();
      // Served again: a database read and a login, both sent after the restart, answered 200.
      const servedAgain = () =>
        (['conversation', 'login'] as const).every((kind) =>
          outcomes.some((o) => o.kind === kind && o.startedAt >= startedAt && o.status === 200),
        );
      const deadline = performance.now() + 30_000;
      while (!servedAgain() && performance.now() < deadline) await sleep(50);
      const recoveredAt = performance.now();
      await sleep(1500);
      loading = false;
      await Promise.all(clients);

      const summarise = (list: Outcome[]) =>
        list
          .map((o) => `${o.kind} ${o.status ?? o.error} after ${Math.round(o.endedAt - o.startedAt)} ms`)
          .join('\n');
      const touchesDatabase = (o: Outcome) => o.kind !== 'healthz';
      const before = outcomes.filter((o) => o.endedAt < stoppingAt);
      const during = outcomes.filter(
        (o) => o.startedAt > stoppedAt && o.endedAt < startingAt && touchesDatabase(o),
      );
      const after = outcomes.filter((o) => o.startedAt > recoveredAt);

      // Every request got an HTTP answer, none hung, and none was a 500 or a reset.
      expect(server.proc.exitCode, server.output().slice(-5000)).toBeNull();
      expect(
        outcomes.filter((o) => o.error !== undefined),
        summarise(outcomes),
      ).toEqual([]);
      expect(
        outcomes.filter((o) => ![200, 503].includes(o.status ?? 0)),
        summarise(outcomes),
      ).toEqual([]);
      const expectAll = (list: Outcome[], status: number, atLeast: number) => {
        expect(list.length).toBeGreaterThan(atLeast);
        expect(
          list.filter((o) => o.status !== status),
          summarise(list),
        ).toEqual([]);
      };
      expectAll(before, 200, 10);

      // While it is down: 503 with Retry-After for everything that needs the database, /readyz included.
      expectAll(during, 503, 10);
      expect(during.every((o) => o.retryAfter !== null && Number(o.retryAfter) >= 1)).toBe(true);
      expect(during.some((o) => o.kind === 'readyz')).toBe(true);
      for (const o of during) expect(o.body, o.kind).not.toMatch(/ECONNREFUSED|postgres:\/\/|\n\s+at /);
      const healthy = outcomes.filter(
        (o) => o.kind === 'healthz' && o.startedAt > stoppedAt && o.endedAt < startingAt,
      );
      expectAll(healthy, 200, 0);

      // Served again by itself, and only 200s from then on; the process never exited.
      expect(
        servedAgain(),
        `not served again 30 s after the restart:\n${summarise(outcomes.slice(-20))}`,
      ).toBe(true);
      expectAll(after, 200, 5);
      expect(server.proc.exitCode).toBeNull();

      const firstUnavailable =
        during.length > 0 ? Math.min(...during.map((o) => o.endedAt)) - stoppedAt : Number.NaN;
      const latencies = during.map((o) => o.endedAt - o.startedAt).sort((a, b) => a - b);
      const straddling = outcomes.filter(
        (o) => o.startedAt < stoppedAt && o.endedAt > stoppingAt && touchesDatabase(o),
      );
      console.log(
        `PostgreSQL outage (-m ${mode}): stop took ${Math.round(stoppedAt - stoppingAt)} ms; first 503 ${Math.round(firstUnavailable)} ms after; ` +
          `503 latency median ${Math.round(latencies[Math.floor(latencies.length / 2)] ?? 0)} ms, max ${Math.round(latencies.at(-1) ?? 0)} ms over ${during.length} requests; ` +
          `requests in flight at the stop: ${straddling.map((o) => `${o.status} in ${Math.round(o.endedAt - o.startedAt)} ms`).join(', ') || 'none'}; ` +
          `start took ${Math.round(startedAt - startingAt)} ms; served again ${Math.round(recoveredAt - startedAt)} ms after PostgreSQL accepted connections`,
      );
      // "Within a few seconds": well under the pool's 5 s connection timeout, since a stopped server refuses at once.
      expect(latencies.at(-1) ?? 0).toBeLessThan(5000);
    },
    90_000,
  );
});
