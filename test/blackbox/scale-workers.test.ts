/**
 * Issue 5, all cores: `WORKERS=n` (or `auto`) runs a node:cluster of n processes on one port sharing the database
 * and the keys, on SQLite and PostgreSQL. Requests reach more than one process (told apart by the `pid` of the log
 * line that carries the request's id, and by /proc), tokens, refresh tokens and logouts are seen by every worker,
 * a duplicate registration raced through the cluster gives exactly one 200, a killed worker is replaced while the
 * port keeps answering, SIGTERM drains and stops every worker with exit 0, and bad WORKERS values are refused.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import os, { availableParallelism } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { sleep, strongPassword, uniqueName } from './support/client.ts';
import {
  createDatabase,
  DIALECTS,
  type RunningServer,
  randomId,
  runUntilExit,
  spawnServer,
  startServer,
  type TestDatabase,
} from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

// ---------- HTTP on a new connection each time, so that the cluster may hand it to any worker ----------

interface FreshReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are inspected dynamically
  json: any;
  reqId: string;
}

async function fresh(
  server: RunningServer,
  method: string,
  urlPath: string,
  opts: { headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<FreshReply> {
  return await new Promise((resolve, reject) => {
    const headers: Record<string, string> = { connection: 'close', ...(opts.headers ?? {}) };
    if (opts.body !== undefined) headers['content-length'] = String(Buffer.byteLength(opts.body));
    const req = http.request(
      { host: '127.0.0.1', port: server.port, method, path: urlPath, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text.length > 0 ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json,
            reqId: String(res.headers['x-request-id'] ?? ''),
          });
        });
      },
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

const form = (fields: Record<string, string>) => ({
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});
const json = (body: unknown) => ({
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

// ---------- processes: /proc and the pid in the log lines ----------

function readProc(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** Alive: present in /proc and not a zombie. */
function isAlive(pid: number): boolean {
  const stat = readProc(pid, 'stat');
  if (stat === undefined) return false;
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** Live child processes of `parent` running src/main.ts (the cluster's workers). */
function workerPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const status = readProc(pid, 'status');
    const ppid = /^PPid:\s*(\d+)/m.exec(status ?? '')?.[1];
    if (Number(ppid) !== parent || !isAlive(pid)) continue;
    const cmdline = (readProc(pid, 'cmdline') ?? '').split('\0');
    if (cmdline.some((arg) => arg.endsWith('src/main.ts'))) pids.push(pid);
  }
  return pids.sort((a, b) => a - b);
}

// biome-ignore lint/suspicious/noExplicitAny: pino lines are free-form
function logLines(server: RunningServer): any[] {
  const out: unknown[] = [];
  for (const line of server.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a line still being written
    }
  }
  // biome-ignore lint/suspicious/noExplicitAny: pino lines are free-form
  return out as any[];
}

/** The pid of the process that logged each request id (polls: the logs are written asynchronously). */
async function pidsOf(
  server: RunningServer,
  reqIds: string[],
  timeoutMs = 5000,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = new Map<string, number>();
    for (const line of logLines(server)) {
      if (typeof line.reqId === 'string' && reqIds.includes(line.reqId) && typeof line.pid === 'number') {
        found.set(line.reqId, line.pid);
      }
    }
    if (found.size === new Set(reqIds).size || Date.now() > deadline) {
      const missing = reqIds.filter((id) => !found.has(id));
      expect(missing, 'request ids with no log line carrying a pid').toEqual([]);
      return found;
    }
    await sleep(50);
  }
}

/** Pids of the "listening" lines (one per worker that started). */
function listeningPids(server: RunningServer): number[] {
  return [
    ...new Set(
      logLines(server)
        .filter((l) => typeof l.msg === 'string' && /listening/i.test(l.msg) && typeof l.pid === 'number')
        .map((l) => l.pid as number),
    ),
  ];
}

async function waitForWorkers(server: RunningServer, n: number, timeoutMs = 20_000): Promise<number[]> {
  const primary = server.proc.pid ?? -1;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const kids = workerPids(primary);
    const listening = listeningPids(server).filter((p) => kids.includes(p));
    if (kids.length === n && listening.length === n) return kids;
    if (Date.now() > deadline) {
      throw new Error(
        `expected ${n} listening workers under pid ${primary}; children ${kids.join(',')}, listening ${listening.join(',')}\n${server.output().slice(-3000)}`,
      );
    }
    await sleep(100);
  }
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function registerVia(server: RunningServer, username = uniqueName('w')) {
  const password = strongPassword();
  const r = await fresh(
    server,
    'POST',
    '/register/',
    json({ username, email: `${username.toLowerCase()}@example.com`, password, age: 30, level: 'beginner' }),
  );
  expect(r.status, `register ${username}: ${r.text}`).toBe(200);
  return { username, password };
}

async function loginVia(server: RunningServer, u: { username: string; password: string }) {
  const r = await fresh(
    server,
    'POST',
    '/token',
    form({ grant_type: 'password', username: u.username, password: u.password }),
  );
  expect(r.status, `login ${u.username}: ${r.text}`).toBe(200);
  return {
    access: r.json.access_token as string,
    refresh: r.json.refresh_token as string,
    reqId: r.reqId,
  };
}

/**
 * POSTs a registration on a new connection, sending the first bytes of the body, then calls `during` (SIGTERM),
 * and sends the rest `finishAfterMs` later; resolves with the status.
 */
async function slowRegistration(
  server: RunningServer,
  during: () => void,
  finishAfterMs: number,
): Promise<number> {
  const username = uniqueName('drain');
  const body = JSON.stringify({
    username,
    email: `${username.toLowerCase()}@example.com`,
    password: strongPassword(),
    age: 41,
    level: 'intermediate',
  });
  return await new Promise<number>((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: server.port,
        method: 'POST',
        path: '/register/',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.setTimeout(20_000, () => req.destroy(new Error('the request in flight was never answered')));
    req.on('error', reject);
    req.write(body.slice(0, 10));
    setTimeout(() => {
      during();
      setTimeout(() => req.end(body.slice(10)), finishAfterMs);
    }, 300);
  });
}

// ---------------------------------------------------------------------------------------------------------------

describe.each(DIALECTS)('WORKERS=2: a cluster on one port (%s)', (dialect) => {
  let db: TestDatabase;
  let server: RunningServer;
  let primary: number;
  let workers: number[];

  beforeAll(async () => {
    db = await createDatabase(dialect);
    server = await startServer({
      databaseUrl: db.url,
      env: { WORKERS: '2', RATE_LIMITS: 'off', LOG_LEVEL: 'debug' },
    });
    primary = server.proc.pid ?? -1;
    workers = await waitForWorkers(server, 2);
  }, 60_000);

  afterAll(async () => {
    try {
      if (server) await server.stop();
    } finally {
      if (db) await db.drop();
    }
  }, 30_000);

  it('runs two worker processes under the one started, each of which logged that it listens', () => {
    expect(workers).toHaveLength(2);
    expect(workers).not.toContain(primary);
    expect(listeningPids(server).sort((a, b) => a - b)).toEqual(workers);
  });

  it('answers on one port from more than one process, and only from the workers', async () => {
    const replies: FreshReply[] = [];
    for (let i = 0; i < 12; i += 1) {
      const r = await fresh(server, 'GET', i % 2 ? '/healthz' : '/conversation');
      expect([200, 401], r.text).toContain(r.status);
      expect(r.reqId).not.toBe('');
      replies.push(r);
    }
    for (const r of await Promise.all(Array.from({ length: 8 }, () => fresh(server, 'GET', '/readyz')))) {
      expect(r.status, r.text).toBe(200);
      replies.push(r);
    }
    const pids = await pidsOf(
      server,
      replies.map((r) => r.reqId),
    );
    const distinct = new Set(pids.values());
    expect(distinct.size, `pids that answered: ${[...distinct]}`).toBeGreaterThanOrEqual(2);
    for (const pid of distinct) expect(workers).toContain(pid);
  });

  it('publishes the same JWKS from every worker', async () => {
    const replies = await Promise.all(
      Array.from({ length: 8 }, () => fresh(server, 'GET', '/.well-known/jwks.json')),
    );
    for (const r of replies) expect(r.status, r.text).toBe(200);
    const pids = await pidsOf(
      server,
      replies.map((r) => r.reqId),
    );
    expect(new Set(pids.values()).size).toBe(2);
    const first = JSON.stringify(replies[0]?.json);
    for (const r of replies) expect(JSON.stringify(r.json)).toBe(first);
    expect(replies[0]?.json.keys.length).toBeGreaterThanOrEqual(1);
  });

  it('accepts on every worker a token issued by any worker (shared keys)', async () => {
    const u = await registerVia(server);
    const logins = [];
    for (let i = 0; i < 6; i += 1) logins.push(await loginVia(server, u));
    const loginPids = await pidsOf(
      server,
      logins.map((l) => l.reqId),
    );
    expect(new Set(loginPids.values()).size, 'logins were all served by one worker').toBe(2);
    const uses: FreshReply[] = [];
    for (const l of logins) {
      for (let i = 0; i < 4; i += 1) {
        const r = await fresh(server, 'GET', '/conversation', bearer(l.access));
        expect(r.status, `token from pid ${loginPids.get(l.reqId)}: ${r.text}`).toBe(200);
        expect(r.json.current_user).toBe(u.username);
        expect(typeof r.json.conversation).toBe('string');
        uses.push(r);
      }
    }
    const usePids = await pidsOf(
      server,
      uses.map((r) => r.reqId),
    );
    // every issuing worker's tokens were used on both workers
    for (const l of logins) {
      const issuer = loginPids.get(l.reqId);
      const usedOn = new Set(
        uses.slice(logins.indexOf(l) * 4, logins.indexOf(l) * 4 + 4).map((r) => usePids.get(r.reqId)),
      );
      expect(usedOn.size, `token of pid ${issuer} was only used on ${[...usedOn]}`).toBe(2);
    }
  });

  it('refreshes on one worker a refresh token issued by the other, again and again', async () => {
    const u = await registerVia(server);
    let { refresh, reqId } = await loginVia(server, u);
    const ids = [reqId];
    for (let i = 0; i < 6; i += 1) {
      const r = await fresh(
        server,
        'POST',
        '/token',
        form({ grant_type: 'refresh_token', refresh_token: refresh }),
      );
      expect(r.status, `refresh #${i + 1}: ${r.text}`).toBe(200);
      expect(r.json.token_type).toBe('bearer');
      const use = await fresh(server, 'GET', '/conversation', bearer(r.json.access_token));
      expect(use.status, use.text).toBe(200);
      refresh = r.json.refresh_token;
      ids.push(r.reqId);
    }
    const pids = await pidsOf(server, ids);
    expect(new Set(pids.values()).size, 'the refreshes were all served by one worker').toBe(2);
  });

  it('refuses a logged-out token on every worker at once (no per-process cache)', async () => {
    const u = await registerVia(server);
    const { access } = await loginVia(server, u);
    const other = await loginVia(server, u);
    // warm whatever each worker may cache about the token
    const warm: FreshReply[] = [];
    for (let i = 0; i < 6; i += 1) {
      const r = await fresh(server, 'GET', '/conversation', bearer(access));
      expect(r.status, r.text).toBe(200);
      warm.push(r);
    }
    expect(
      new Set(
        (
          await pidsOf(
            server,
            warm.map((r) => r.reqId),
          )
        ).values(),
      ).size,
    ).toBe(2);
    const out = await fresh(server, 'POST', '/logout', bearer(access));
    expect(out.status, out.text).toBe(204);
    const after = await Promise.all(
      Array.from({ length: 10 }, () => fresh(server, 'GET', '/conversation', bearer(access))),
    );
    const afterPids = await pidsOf(
      server,
      after.map((r) => r.reqId),
    );
    for (const r of after) {
      expect(r.status, `after logout, pid ${afterPids.get(r.reqId)}: ${r.text}`).toBe(401);
      expect(String(r.headers['www-authenticate'] ?? '')).toMatch(/^Bearer/);
    }
    expect(new Set(afterPids.values()).size).toBe(2);
    // the other session of the same user is untouched, on both workers
    for (let i = 0; i < 4; i += 1) {
      const r = await fresh(server, 'GET', '/conversation', bearer(other.access));
      expect(r.status, r.text).toBe(200);
    }
  });

  it('gives exactly one 200 when the same username is registered concurrently through the cluster', async () => {
    for (const variant of ['same', 'case'] as const) {
      const base = `race_${randomId(4)}`;
      const attempts = Array.from({ length: 12 }, (_, i) => {
        const username = variant === 'same' ? base : i % 2 ? base.toUpperCase() : base;
        return {
          username,
          password: strongPassword(),
          email: `${base}_${i}@example.com`,
        };
      });
      const replies = await Promise.all(
        attempts.map((a) => fresh(server, 'POST', '/register/', json({ ...a, age: 30, level: 'advanced' }))),
      );
      const statuses = replies.map((r) => r.status);
      expect(
        statuses.filter((s) => s === 200),
        `${variant}: ${replies.map((r) => `${r.status} ${r.text}`).join(' | ')}`,
      ).toHaveLength(1);
      for (const r of replies) {
        if (r.status === 200) continue;
        expect(r.status, r.text).toBe(409);
        expect(r.json?.code, r.text).toBe('username_taken');
      }
      const pids = await pidsOf(
        server,
        replies.map((r) => r.reqId),
      );
      expect(new Set(pids.values()).size).toBe(2);
      // the winner's password is the one stored
      const winner = attempts[statuses.indexOf(200)];
      if (!winner) throw new Error('no winner');
      await loginVia(server, { username: base, password: winner.password });
    }
  });

  it('with RATE_LIMITS=off, answers a burst of failed logins with 400, never 429, and still lets the user in', async () => {
    const u = await registerVia(server);
    const bad = await Promise.all(
      Array.from({ length: 30 }, () =>
        fresh(server, 'POST', '/token', form({ username: u.username, password: `${u.password}x` })),
      ),
    );
    for (const r of bad) {
      expect(r.status, r.text).toBe(400);
      expect(r.json.error).toBe('invalid_grant');
    }
    await loginVia(server, u);
  });

  /** SIGKILLs one worker, waits until a replacement listens; returns the victim, the newcomer and any failures. */
  async function killOneWorker(access: string, settleMs: number) {
    const before = workerPids(primary);
    expect(before).toHaveLength(2);
    const victim = before[0] ?? -1;
    process.kill(victim, 'SIGKILL');
    // settleMs = 0: probe at once; otherwise wait until the primary has reaped the worker, then settleMs more
    if (settleMs > 0) {
      await waitUntil(`worker ${victim} to be reaped`, () => readProc(victim, 'stat') === undefined, 5000);
      await sleep(settleMs);
    }
    const failures: string[] = [];
    let newcomer: number | undefined;
    const deadline = Date.now() + 20_000;
    let probes = 0;
    if (settleMs === 0) {
      // a burst of new connections right at the crash, as a loaded server would receive
      const t0 = Date.now();
      const burst = await Promise.allSettled(
        Array.from({ length: 10 }, () =>
          fresh(server, 'GET', '/conversation', { ...bearer(access), timeoutMs: 4000 }),
        ),
      );
      for (const [i, b] of burst.entries()) {
        if (b.status === 'rejected')
          failures.push(`burst ${i}: ${String(b.reason)} after ${Date.now() - t0} ms`);
        else if (b.value.status !== 200) failures.push(`burst ${i}: ${b.value.status} ${b.value.text}`);
      }
    }
    while (Date.now() < deadline) {
      const t0 = Date.now();
      try {
        const r = await fresh(server, 'GET', '/conversation', { ...bearer(access), timeoutMs: 4000 });
        if (r.status !== 200) failures.push(`probe ${probes}: ${r.status} ${r.text}`);
      } catch (error) {
        failures.push(`probe ${probes}: ${String(error)} after ${Date.now() - t0} ms`);
      }
      probes += 1;
      const now = workerPids(primary);
      newcomer = now.find((p) => !before.includes(p));
      if (
        probes >= 6 &&
        now.length === 2 &&
        newcomer !== undefined &&
        listeningPids(server).includes(newcomer)
      ) {
        break;
      }
      await sleep(25);
    }
    return { before, victim, newcomer, failures };
  }

  it('replaces a killed worker while the port keeps answering; the newcomer accepts older tokens', async () => {
    const u = await registerVia(server);
    const { access } = await loginVia(server, u);
    const { failures, newcomer, victim } = await killOneWorker(access, 200);
    expect(failures, 'requests that failed while a worker was being replaced').toEqual([]);
    expect(newcomer, `no replacement for ${victim}: children ${workerPids(primary)}`).toBeDefined();
    expect(workerPids(primary)).toHaveLength(2);
    expect(workerPids(primary)).not.toContain(victim);
    expect(isAlive(primary)).toBe(true);
    // the replacement serves requests, and accepts the token issued before it started
    const replies: FreshReply[] = [];
    for (let i = 0; i < 8; i += 1) {
      const r = await fresh(server, 'GET', '/conversation', bearer(access));
      expect(r.status, r.text).toBe(200);
      replies.push(r);
    }
    const pids = await pidsOf(
      server,
      replies.map((r) => r.reqId),
    );
    expect([...pids.values()]).toContain(newcomer);
    workers = workerPids(primary);
  }, 45_000);

  it('on SIGTERM to the primary, finishes a request in flight, stops every worker and exits 0 (also after workers were replaced), no orphan', async () => {
    const kids = workerPids(primary);
    expect(kids).toHaveLength(2);
    // a registration whose body is still arriving when SIGTERM comes
    const inFlight = slowRegistration(server, () => server.proc.kill('SIGTERM'), 400);
    expect(await inFlight).toBe(200);
    const exit = await Promise.race([server.exited, sleep(20_000).then(() => 'timeout' as const)]);
    expect.soft(exit, server.output().slice(-3000)).toEqual({ code: 0, signal: null });
    await waitUntil('the workers to be gone', () => kids.every((p) => !isAlive(p)), 5000).catch(() => {});
    expect(
      kids.filter((p) => isAlive(p)),
      'worker processes left running after the primary exited',
    ).toEqual([]);
    await expect(fresh(server, 'GET', '/healthz', { timeoutMs: 2000 })).rejects.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('WORKERS=auto (sqlite)', () => {
  let db: TestDatabase;
  let server: RunningServer | undefined;

  beforeAll(async () => {
    db = await createDatabase('sqlite');
  });
  afterAll(async () => {
    try {
      if (server) await server.stop();
    } finally {
      await db.drop();
    }
  }, 30_000);

  it('runs one worker per available core, answers from them, and stops them all on SIGTERM', async () => {
    const n = availableParallelism();
    server = await startServer({ databaseUrl: db.url, env: { WORKERS: 'auto', RATE_LIMITS: 'off' } });
    const primary = server.proc.pid ?? -1;
    const expected = n > 1 ? n : 0; // with one core, a single process and no cluster is as good
    let kids: number[] = [];
    if (expected > 0) kids = await waitForWorkers(server, expected);
    else expect(workerPids(primary)).toEqual([]);
    const r = await fresh(server, 'GET', '/readyz');
    expect(r.status, r.text).toBe(200);
    const u = await registerVia(server);
    const { access } = await loginVia(server, u);
    const uses = await Promise.all(
      Array.from({ length: 2 * Math.max(1, expected) }, () =>
        fresh(server!, 'GET', '/conversation', bearer(access)),
      ),
    );
    for (const use of uses) expect(use.status, use.text).toBe(200);
    server.proc.kill('SIGTERM');
    const exit = await Promise.race([server.exited, sleep(20_000).then(() => 'timeout' as const)]);
    expect(exit, server.output().slice(-3000)).toEqual({ code: 0, signal: null });
    await waitUntil('the workers to be gone', () => kids.every((p) => !isAlive(p)), 5000).catch(() => {});
    expect(kids.filter((p) => isAlive(p))).toEqual([]);
  }, 45_000);
});

// ---------------------------------------------------------------------------------------------------------------

describe('WORKERS: bad values are refused at start, naming the variable', () => {
  const dbFile = path.join(os.tmpdir(), `gh_bb_workers_${process.pid}_${randomId(4)}.db`);

  it.concurrent.for(['0', 'abc', '1000', '100', '-1', '2.5', '2x', '00', 'auto,2'])(
    'WORKERS=%j',
    async (value, { expect }) => {
      const r = await runUntilExit(
        { DATABASE_URL: `sqlite:${dbFile}`, WORKERS: value, RATE_LIMITS: 'off' },
        15_000,
      );
      expect(r.timedOut, `WORKERS=${JSON.stringify(value)} was accepted:\n${r.output.slice(-2000)}`).toBe(
        false,
      );
      expect(r.code, r.output).not.toBe(0);
      expect(r.code, r.output).not.toBeNull();
      expect(r.output).toMatch(/WORKERS/);
      expect(r.output).not.toMatch(/listening/i);
    },
  );

  afterAll(() => {
    for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(dbFile + suffix, { force: true });
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** Primary, worker and grandchild pids still alive (for cleanup after a failed stop). */
function killTree(primary: number, known: number[] = []): void {
  for (const pid of new Set([...workerPids(primary), ...known])) {
    if (!isAlive(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  try {
    process.kill(primary, 'SIGKILL');
  } catch {
    // already gone
  }
}

describe('WORKERS=2: SIGTERM at awkward moments (sqlite)', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createDatabase('sqlite');
  });
  afterAll(async () => {
    await db.drop();
  });

  it('stops every worker and exits 0 when SIGTERM comes while the workers are still starting', async () => {
    const server = await spawnServer({ databaseUrl: db.url, env: { WORKERS: '2' } });
    const { proc, exited } = server;
    const primary = proc.pid ?? -1;
    let kids: number[] = [];
    try {
      await waitUntil('two forked workers', () => workerPids(primary).length === 2, 20_000);
      kids = workerPids(primary);
      // past the fork itself, but well before a worker has loaded the application and listens
      await sleep(150);
      proc.kill('SIGTERM');
      const exit = await Promise.race([exited, sleep(6000).then(() => 'still running 6 s after SIGTERM')]);
      const alive = kids.filter((p) => isAlive(p));
      expect(exit, server.output().slice(-3000)).toEqual({ code: 0, signal: null });
      await waitUntil('the workers to be gone', () => kids.every((p) => !isAlive(p)), 3000).catch(() => {});
      expect(
        alive.filter((p) => isAlive(p)),
        'workers still running after SIGTERM during start-up',
      ).toEqual([]);
    } finally {
      killTree(primary, kids);
      await exited;
    }
  }, 45_000);

  it('stops every worker when SIGTERM comes just after a worker crashed, while a request is in flight', async () => {
    const server = await startServer({ databaseUrl: db.url, env: { WORKERS: '2', RATE_LIMITS: 'off' } });
    const primary = server.proc.pid ?? -1;
    let kids: number[] = [];
    try {
      kids = await waitForWorkers(server, 2);
      const victim = kids[0] ?? -1;
      process.kill(victim, 'SIGKILL');
      await waitUntil(`worker ${victim} to be reaped`, () => readProc(victim, 'stat') === undefined, 5000);
      await sleep(50);
      // a registration whose body is still arriving at the surviving worker when SIGTERM comes
      const inFlight = slowRegistration(server, () => server.proc.kill('SIGTERM'), 800);
      expect(await inFlight).toBe(200);
      const exit = await Promise.race([
        server.exited,
        sleep(6000).then(() => 'still running 6 s after SIGTERM'),
      ]);
      expect(exit, server.output().slice(-3000)).toMatchObject({ signal: null });
      await sleep(300);
      expect(workerPids(primary), 'workers started after SIGTERM and still running').toEqual([]);
      expect(
        kids.filter((p) => isAlive(p)),
        'original workers still running',
      ).toEqual([]);
    } finally {
      killTree(primary, kids);
      await server.stop();
    }
  }, 45_000);
});
