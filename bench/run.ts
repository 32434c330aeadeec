// npm run bench [-- --quick] [-- --users N]
// Measures, in one run on this machine: the ceiling (bare node:http + jose), Gatehouse on SQLite and PostgreSQL,
// raw argon2id, Gatehouse /token and /register, /conversation while /token is flooded, two workers, and the
// FastAPI seed when its Debian packages are installed. Prints a Markdown table and writes bench/results/.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import pg from 'pg';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const usersIndex = args.indexOf('--users');
const extraUsers = usersIndex >= 0 ? Number(args[usersIndex + 1]) : 0;
const seconds = quick ? 2 : 10;
const connections = 32;
const pgAdminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
// Required with PostgreSQL; one for the whole run, so that seed-users and the servers open the same keys.
const gatehouseSecret = process.env.GATEHOUSE_SECRET ?? randomBytes(32).toString('base64url');
const password = 'correct horse battery staple';
const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-'));
const children: ChildProcess[] = [];

interface Row {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  rssMb: number;
  cpuMsPerRequest: number;
  /** CPU of the PostgreSQL server processes per request, for the rows that use it. */
  databaseCpuMsPerRequest?: number;
  /**
   * The server process's CPU per request by thread: `main` (the event loop), `libuv-worker` (the threadpool: password
   * hashes, WebCrypto), and V8's and Node's helper threads (garbage collection, compilation) under their own names.
   */
  cpuMsPerRequestByThread?: Record<string, number>;
  note?: string;
}

const rows: Row[] = [];
const extra: Record<string, unknown> = {};

function log(line: string) {
  process.stderr.write(`bench: ${line}\n`);
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function start(command: string, commandArgs: string[], env: Record<string, string>, cwd = root) {
  const child = spawn(command, commandArgs, {
    cwd,
    env: { ...process.env, GATEHOUSE_SECRET: gatehouseSecret, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  children.push(child);
  return { child, stderr: () => stderr };
}

async function waitFor(url: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url);
      if (response.status < 500) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

async function stop(child: ChildProcess) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/** The process and all its descendants: CPU ticks and resident memory from /proc. */
function processTree(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(entry), Number(fields[1]));
    } catch {}
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i += 1) {
    for (const [child, parent] of parents) if (parent === tree[i]) tree.push(child);
  }
  return tree;
}

function cpuMs(pid: number): number {
  const ticksPerSecond = 100;
  let ticks = 0;
  for (const member of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${member}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return (ticks * 1000) / ticksPerSecond;
}

/** CPU milliseconds of each PostgreSQL server process, by pid. */
function postgresCpuMs(): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (!stat.includes('(postgres)')) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      byPid.set(Number(entry), ((Number(fields[11]) + Number(fields[12])) * 1000) / 100);
    } catch {}
  }
  return byPid;
}

/** CPU spent between two readings by the processes alive at the second (a backend that ended is not counted). */
function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, cpu] of after) total += cpu - (before.get(pid) ?? 0);
  return total;
}

/**
 * CPU milliseconds of every thread of the process and its descendants, summed by thread name; each process's first
 * thread counts as `main` (npm's, idle while the server works, included).
 */
function threadCpuMs(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const member of processTree(pid)) {
    try {
      for (const tid of readdirSync(`/proc/${member}/task`)) {
        const stat = readFileSync(`/proc/${member}/task/${tid}/stat`, 'utf8');
        const name =
          Number(tid) === member ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
        byName.set(name, (byName.get(name) ?? 0) + ms);
      }
    } catch {}
  }
  return byName;
}

function rssMbPerProcess(pid: number): number {
  let largest = 0;
  for (const member of processTree(pid)) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${member}/status`, 'utf8'));
      largest = Math.max(largest, Number(match?.[1] ?? 0) / 1024);
    } catch {}
  }
  return largest;
}

interface LoadOptions {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  setupBody?: () => string;
  connections?: number;
  duration?: number;
}

async function load(options: LoadOptions) {
  return autocannon({
    url: options.url,
    method: options.method ?? 'GET',
    connections: options.connections ?? connections,
    duration: options.duration ?? seconds,
    headers: options.headers,
    ...(options.setupBody
      ? {
          requests: [
            { setupRequest: (request: autocannon.Request) => ({ ...request, body: options.setupBody?.() }) },
          ],
        }
      : options.body
        ? { body: options.body }
        : {}),
  });
}

/** Four clients in a closed loop on keep-alive connections, each request timed with the high-resolution clock. */
async function probeLatency(url: string, headers: Record<string, string>, clients = 4) {
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const samples: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const once = () =>
    new Promise<void>((done) => {
      const started = performance.now();
      const request = httpRequest(url, { agent, headers }, (response) => {
        response.resume();
        response.on('end', () => {
          if (response.statusCode === 200) samples.push(performance.now() - started);
          else errors += 1;
          done();
        });
      });
      request.on('error', () => {
        errors += 1;
        done();
      });
      request.end();
    });
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) await once();
    }),
  );
  agent.destroy();
  samples.sort((a, b) => a - b);
  const at = (share: number) =>
    samples[Math.min(samples.length - 1, Math.floor(samples.length * share))] ?? Number.NaN;
  return { p50Ms: at(0.5), p99Ms: at(0.99), errors, requests: samples.length };
}

/**
 * p99 of /conversation at rest and while 16 connections flood /token, timed per request in microseconds
 * (autocannon rounds to whole milliseconds, too coarse for a sub-millisecond path).
 */
async function measureFlood(base: string, auth: Record<string, string>, label: string) {
  const atRest = await probeLatency(`${base}/conversation`, auth);
  const [tokens, flooded] = await Promise.all([
    load({ url: `${base}/token`, method: 'POST', headers: formHeaders, body: tokenForm, connections: 16 }),
    probeLatency(`${base}/conversation`, auth),
  ]);
  log(`flood, ${label}: p99 ${atRest.p99Ms.toFixed(2)} ms at rest, ${flooded.p99Ms.toFixed(2)} ms flooded`);
  return {
    p50AtRestMs: atRest.p50Ms,
    p99AtRestMs: atRest.p99Ms,
    p50FloodedMs: flooded.p50Ms,
    p99FloodedMs: flooded.p99Ms,
    ratio: flooded.p99Ms / atRest.p99Ms,
    conversationErrors: atRest.errors + flooded.errors,
    tokenRequestsPerSecondDuringFlood: tokens.requests.average,
  };
}

async function measure(name: string, pid: number, options: LoadOptions, usesPostgres = false): Promise<Row> {
  await load({ ...options, duration: 1 });
  const cpuBefore = cpuMs(pid);
  const threadsBefore = threadCpuMs(pid);
  const databaseBefore = usesPostgres ? postgresCpuMs() : new Map<number, number>();
  const result = await load(options);
  const cpuAfter = cpuMs(pid);
  const threadsAfter = threadCpuMs(pid);
  const databaseAfter = usesPostgres ? postgresCpuMs() : new Map<number, number>();
  const total = result.requests.total || 1;
  const row: Row = {
    name,
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
    rssMb: rssMbPerProcess(pid),
    cpuMsPerRequest: (cpuAfter - cpuBefore) / total,
    ...(usesPostgres ? { databaseCpuMsPerRequest: cpuBetween(databaseBefore, databaseAfter) / total } : {}),
    cpuMsPerRequestByThread: Object.fromEntries(
      [...threadsAfter]
        .map(([name, ms]) => [name, (ms - (threadsBefore.get(name) ?? 0)) / total] as const)
        .filter(([, ms]) => ms > 0),
    ),
  };
  rows.push(row);
  log(`${name}: ${row.requestsPerSecond.toFixed(0)} req/s, p99 ${row.p99Ms} ms, errors ${row.errors}`);
  return row;
}

async function startGatehouse(databaseUrl: string, env: Record<string, string> = {}) {
  const port = await freePort();
  // Exactly what the README runs, so the flags and the compile cache of `npm start` are measured too.
  const server = start('npm', ['start', '--silent'], {
    PORT: String(port),
    HOST: '127.0.0.1',
    DATABASE_URL: databaseUrl,
    RATE_LIMITS: 'off',
    ...env,
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/healthz`).catch((error) => {
    throw new Error(`${error.message}: ${server.stderr()}`);
  });
  return { base, pid: server.child.pid as number, child: server.child };
}

async function registerAndLogin(base: string, username: string) {
  const registered = await fetch(`${base}/register/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      username,
      email: `${username}@example.com`,
      password,
      age: 30,
      level: 'beginner',
    }),
  });
  if (registered.status !== 200) throw new Error(`register: ${registered.status} ${await registered.text()}`);
  const token = await fetch(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }).toString(),
  });
  if (token.status !== 200) throw new Error(`token: ${token.status} ${await token.text()}`);
  return ((await token.json()) as { access_token: string }).access_token;
}

function seedUsers(databaseUrl: string, count: number) {
  if (count <= 0) return;
  log(`seeding ${count} users`);
  execFileSync(process.execPath, ['src/main.ts', 'seed-users', '--count', String(count)], {
    cwd: root,
    env: { ...process.env, GATEHOUSE_SECRET: gatehouseSecret, DATABASE_URL: databaseUrl },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

const uniqueName = () => `b${randomBytes(6).toString('hex')}`;
const tokenForm = new URLSearchParams({ grant_type: 'password', username: 'benchuser', password }).toString();
const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
const registerBody = () =>
  JSON.stringify({
    username: uniqueName(),
    email: `${uniqueName()}@example.com`,
    password,
    age: 30,
    level: 'beginner',
  });

async function benchLargeDatabase(databaseUrl: string, label: string) {
  const server = await startGatehouse(databaseUrl);
  const token = await registerAndLogin(server.base, 'benchuser');
  const users = extraUsers.toLocaleString('en-US');
  const usesPostgres = databaseUrl.startsWith('postgres');
  await measure(
    `Gatehouse GET /conversation, ${label}, ${users} users`,
    server.pid,
    { url: `${server.base}/conversation`, headers: { authorization: `Bearer ${token}` } },
    usesPostgres,
  );
  await measure(
    `Gatehouse POST /token, ${label}, ${users} users`,
    server.pid,
    { url: `${server.base}/token`, method: 'POST', headers: formHeaders, body: tokenForm, connections: 8 },
    usesPostgres,
  );
  await stop(server.child);
}

async function postgresBytesPerUser(url: string, users: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query('select pg_database_size(current_database())::float8 as size');
    return Number(result.rows[0].size) / users;
  } finally {
    await client.end();
  }
}

async function benchCeiling() {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ceiling', alg: 'EdDSA' };
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ preferred_username: 'benchuser', sid: 'x', scope: 'conversation' })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'ceiling' })
    .setIssuer('http://localhost:8000')
    .setAudience('gatehouse')
    .setSubject('1')
    .setIssuedAt(now)
    .setExpirationTime(now + 900)
    .setJti('ceiling')
    .sign(privateKey);
  const port = await freePort();
  const server = start(process.execPath, ['bench/ceiling.ts'], {
    PORT: String(port),
    CEILING_PUBLIC_JWK: JSON.stringify(jwk),
    CEILING_ISSUER: 'http://localhost:8000',
    CEILING_AUDIENCE: 'gatehouse',
  });
  const url = `http://127.0.0.1:${port}/conversation`;
  await waitFor(url);
  const row = await measure('Ceiling: node:http + jose verify', server.child.pid as number, {
    url,
    headers: { authorization: `Bearer ${token}` },
  });
  await stop(server.child);
  return row;
}

async function benchArgon2() {
  const output = execFileSync(process.execPath, ['bench/argon2-rate.ts', String(seconds)], {
    cwd: root,
  }).toString();
  const rate = JSON.parse(output) as { verifiesPerSecond: number; cpuMsPerVerify: number; workers: number };
  log(`argon2id raw: ${rate.verifiesPerSecond.toFixed(1)} verifies/s on ${rate.workers} cores`);
  return rate;
}

async function createPostgresDatabase(): Promise<{ url: string; drop: () => Promise<void> } | undefined> {
  const name = `gh_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: pgAdminUrl, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
    await admin.query(`create database ${name}`);
  } catch (error) {
    log(`PostgreSQL unavailable (${(error as Error).message}): its rows are skipped`);
    return undefined;
  } finally {
    await admin.end().catch(() => {});
  }
  const url = new URL(pgAdminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: pgAdminUrl });
      await client.connect();
      await client.query(`drop database if exists ${name} with (force)`);
      await client.end();
    },
  };
}

function seedAvailable(): string | undefined {
  const runSh = resolve(root, '../shared/reference-fastapi/run.sh');
  if (!existsSync(runSh)) return undefined;
  try {
    execFileSync(
      '/usr/bin/python3',
      ['-c', 'import fastapi, uvicorn, jose, passlib, sqlalchemy, multipart'],
      {
        stdio: 'ignore',
      },
    );
    return runSh;
  } catch {
    return undefined;
  }
}

async function main() {
  log(
    `${quick ? 'quick' : 'full'} run, ${seconds} s per measurement, ${connections} connections, ${availableParallelism()} cores`,
  );
  const ceiling = await benchCeiling();

  const sqliteUrl = `sqlite:${join(work, 'gatehouse.db')}`;
  seedUsers(sqliteUrl, 1000);
  const sqlite = await startGatehouse(sqliteUrl);
  const sqliteToken = await registerAndLogin(sqlite.base, 'benchuser');
  const auth = { authorization: `Bearer ${sqliteToken}` };
  const sqliteRow = await measure('Gatehouse GET /conversation, SQLite', sqlite.pid, {
    url: `${sqlite.base}/conversation`,
    headers: auth,
  });

  // The three /conversation rows that the targets compare with the ceiling and the seed are measured next to
  // each other, since this machine's speed drifts within minutes.
  let postgresRow: Row | undefined;
  const postgres = await createPostgresDatabase();
  if (postgres) {
    try {
      seedUsers(postgres.url, 1000);
      const server = await startGatehouse(postgres.url);
      const token = await registerAndLogin(server.base, 'benchuser');
      postgresRow = await measure(
        'Gatehouse GET /conversation, PostgreSQL',
        server.pid,
        { url: `${server.base}/conversation`, headers: { authorization: `Bearer ${token}` } },
        true,
      );
      await measure(
        'Gatehouse POST /token, PostgreSQL',
        server.pid,
        {
          url: `${server.base}/token`,
          method: 'POST',
          headers: formHeaders,
          body: tokenForm,
          connections: 8,
        },
        true,
      );
      await stop(server.child);
    } finally {
      await postgres.drop();
    }
  }

  let seedConversation: Row | undefined;
  let seedToken: Row | undefined;
  const seedScript = seedAvailable();
  if (seedScript) {
    const port = await freePort();
    const seed = start('bash', [seedScript, String(port)], { TMPDIR: work });
    const base = `http://127.0.0.1:${port}`;
    await waitFor(`${base}/docs`);
    const token = await registerAndLogin(base, 'benchuser');
    seedConversation = await measure('FastAPI seed GET /conversation', seed.child.pid as number, {
      url: `${base}/conversation`,
      headers: { authorization: `Bearer ${token}` },
    });
    seedToken = await measure('FastAPI seed POST /token', seed.child.pid as number, {
      url: `${base}/token`,
      method: 'POST',
      headers: formHeaders,
      body: tokenForm,
      connections: 8,
    });
    await measure('FastAPI seed POST /register/', seed.child.pid as number, {
      url: `${base}/register/`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      setupBody: registerBody,
      connections: 8,
    });
    await stop(seed.child);
  } else {
    log(
      'FastAPI seed skipped: ../shared/reference-fastapi or its Debian packages are missing (see its README)',
    );
  }

  // The raw rate right before and right after /token, averaged: this machine's speed drifts by 10-20% within
  // minutes, and the target is a ratio of the two.
  const argon2Before = await benchArgon2();
  const tokenRow = await measure('Gatehouse POST /token, SQLite', sqlite.pid, {
    url: `${sqlite.base}/token`,
    method: 'POST',
    headers: formHeaders,
    body: tokenForm,
    connections: 8,
  });
  const argon2After = await benchArgon2();
  const argon2 = {
    workers: argon2Before.workers,
    verifiesPerSecond: (argon2Before.verifiesPerSecond + argon2After.verifiesPerSecond) / 2,
    cpuMsPerVerify: (argon2Before.cpuMsPerVerify + argon2After.cpuMsPerVerify) / 2,
    before: argon2Before.verifiesPerSecond,
    after: argon2After.verifiesPerSecond,
  };
  extra.argon2 = argon2;
  const registerRow = await measure('Gatehouse POST /register/, SQLite', sqlite.pid, {
    url: `${sqlite.base}/register/`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    setupBody: registerBody,
    connections: 8,
  });

  // Logins must not slow everyone else down: p99 of /conversation at rest, then while /token is flooded.
  extra.flood = await measureFlood(sqlite.base, auth, 'default HASH_THREAD_PRIORITY=idle');
  await stop(sqlite.child);

  // The same with the hashing threads at nice 19 instead of SCHED_IDLE, for comparison.
  const low = await startGatehouse(sqliteUrl, { HASH_THREAD_PRIORITY: 'low' });
  const lowAuth = { authorization: `Bearer ${await registerAndLogin(low.base, uniqueName())}` };
  extra.floodLow = await measureFlood(low.base, lowAuth, 'HASH_THREAD_PRIORITY=low');
  await stop(low.child);

  const clustered = await startGatehouse(sqliteUrl, { WORKERS: '2' });
  const clusteredToken = await registerAndLogin(clustered.base, uniqueName());
  await measure('Gatehouse GET /conversation, SQLite, WORKERS=2', clustered.pid, {
    url: `${clustered.base}/conversation`,
    headers: { authorization: `Bearer ${clusteredToken}` },
  });
  await stop(clustered.child);

  // Issue 4's revocation check: its extra CPU per request against the whole request's CPU.
  const revocation = JSON.parse(
    execFileSync(process.execPath, ['bench/revocation-check.ts', sqliteUrl, quick ? '5000' : '20000'], {
      cwd: root,
    }).toString(),
  ) as { userLookupCpuUs: number; userAndSessionCpuUs: number };
  extra.revocationCheck = {
    ...revocation,
    extraCpuUsPerRequest: revocation.userAndSessionCpuUs - revocation.userLookupCpuUs,
    shareOfConversationCpu:
      (revocation.userAndSessionCpuUs - revocation.userLookupCpuUs) / (sqliteRow.cpuMsPerRequest * 1000),
  };

  // The same two paths with a large user table: the indexes, not the table size, must decide their cost.
  if (extraUsers > 0) {
    const bigSqlite = `sqlite:${join(work, 'gatehouse-large.db')}`;
    seedUsers(bigSqlite, extraUsers);
    await benchLargeDatabase(bigSqlite, 'SQLite');
    const bigPostgres = await createPostgresDatabase();
    if (bigPostgres) {
      try {
        seedUsers(bigPostgres.url, extraUsers);
        await benchLargeDatabase(bigPostgres.url, 'PostgreSQL');
        extra.postgresBytesPerUser = await postgresBytesPerUser(bigPostgres.url, extraUsers);
      } finally {
        await bigPostgres.drop();
      }
    }
    extra.sqliteBytesPerUser = statSync(join(work, 'gatehouse-large.db')).size / extraUsers;
  }

  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? a / b : undefined);
  const targets = {
    sqliteVsCeilingRps: ratio(sqliteRow.requestsPerSecond, ceiling.requestsPerSecond),
    sqliteVsCeilingCpu: ratio(sqliteRow.cpuMsPerRequest, ceiling.cpuMsPerRequest),
    postgresVsCeilingRps: ratio(postgresRow?.requestsPerSecond, ceiling.requestsPerSecond),
    sqliteVsSeedRps: ratio(sqliteRow.requestsPerSecond, seedConversation?.requestsPerSecond),
    postgresVsSeedRps: ratio(postgresRow?.requestsPerSecond, seedConversation?.requestsPerSecond),
    tokenVsArgon2: ratio(tokenRow.requestsPerSecond, argon2.verifiesPerSecond),
    tokenVsSeed: ratio(tokenRow.requestsPerSecond, seedToken?.requestsPerSecond),
    floodP99Ratio: (extra.flood as { ratio: number }).ratio,
    floodP99RatioLow: (extra.floodLow as { ratio: number }).ratio,
    registerRps: registerRow.requestsPerSecond,
  };

  const fmt = (value: number, digits = 0) => value.toLocaleString('en-US', { maximumFractionDigits: digits });
  const lines = [
    `| what | req/s | p50 ms | p99 ms | errors | RSS MB | CPU ms/req | PostgreSQL CPU ms/req |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|`,
    ...rows.map(
      (row) =>
        `| ${row.name} | ${fmt(row.requestsPerSecond)} | ${row.p50Ms} | ${row.p99Ms} | ${row.errors} | ${fmt(row.rssMb)} | ${fmt(row.cpuMsPerRequest, 3)} | ${row.databaseCpuMsPerRequest === undefined ? '' : fmt(row.databaseCpuMsPerRequest, 3)} |`,
    ),
    `| raw argon2id verify, ${argon2.workers} cores | ${fmt(argon2.verifiesPerSecond, 1)} | | | | | | |`,
  ];
  const show = (value: number | undefined, digits = 2) =>
    value === undefined ? 'n/a' : `${value.toFixed(digits)}×`;
  const summary = [
    '',
    `- /conversation SQLite vs ceiling: ${show(targets.sqliteVsCeilingRps)} req/s (target ≥ 0.8×), CPU/req ${show(targets.sqliteVsCeilingCpu)} (target ≤ 1.25×)`,
    `- /conversation PostgreSQL vs ceiling: ${show(targets.postgresVsCeilingRps)} (target ≥ 0.6×)`,
    `- /conversation vs FastAPI seed: SQLite ${show(targets.sqliteVsSeedRps, 1)}, PostgreSQL ${show(targets.postgresVsSeedRps, 1)} (target ≥ 10×)`,
    `- /token vs raw argon2id: ${show(targets.tokenVsArgon2)} (target ≥ 0.9×; raw ${argon2.before.toFixed(1)}/s before and ${argon2.after.toFixed(1)}/s after the /token row); vs seed ${show(targets.tokenVsSeed, 1)} (target ≥ 30×)`,
    `- revocation check (session joined into the user lookup, SQLite): ${(extra.revocationCheck as { extraCpuUsPerRequest: number }).extraCpuUsPerRequest.toFixed(1)} µs CPU per request = ${((extra.revocationCheck as { shareOfConversationCpu: number }).shareOfConversationCpu * 100).toFixed(1)}% of /conversation's CPU (target ≤ 10%)`,
    `- /conversation p99 while /token is flooded: ${(extra.flood as { p99FloodedMs: number }).p99FloodedMs.toFixed(2)} ms vs ${(extra.flood as { p99AtRestMs: number }).p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodP99Ratio)} (target ≤ 3×)`,
    `- the same with HASH_THREAD_PRIORITY=low (nice 19 instead of SCHED_IDLE): ${(extra.floodLow as { p99FloodedMs: number }).p99FloodedMs.toFixed(2)} ms vs ${(extra.floodLow as { p99AtRestMs: number }).p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodP99RatioLow)}`,
  ];
  const byThread = (row: Row | undefined) =>
    Object.entries(row?.cpuMsPerRequestByThread ?? {})
      .sort(([, a], [, b]) => b - a)
      .map(([name, ms]) => `${name} ${ms.toFixed(3)}`)
      .join(', ');
  summary.push(
    `- /token CPU ms per login by thread: ${byThread(tokenRow)}; raw argon2id: ${argon2.cpuMsPerVerify.toFixed(3)} ms CPU per verify`,
    `- /conversation CPU ms per request by thread: SQLite ${byThread(sqliteRow)}; PostgreSQL ${byThread(postgresRow)} (+ ${postgresRow?.databaseCpuMsPerRequest?.toFixed(3) ?? 'n/a'} in PostgreSQL); ceiling ${byThread(ceiling)}`,
  );
  const table = [...lines, ...summary].join('\n');
  console.log(table);

  const date = new Date().toISOString().slice(0, 10);
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `${quick ? 'quick-' : ''}${date}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        quick,
        seconds,
        connections,
        cores: availableParallelism(),
        extraUsers,
        rows,
        extra,
        targets,
      },
      null,
      2,
    )}\n`,
  );
  log(`wrote ${file}`);
}

try {
  await main();
} finally {
  for (const child of children) await stop(child);
  rmSync(work, { recursive: true, force: true });
}
