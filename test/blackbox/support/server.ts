/**
 * Black-box harness: spawns `node src/main.ts` as a child process on a free port, against a fresh
 * SQLite file or a fresh PostgreSQL database, and talks to it over real HTTP. Nothing from src/ is imported.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';

export const ROOT = path.resolve(import.meta.dirname, '..', '..', '..');
export const PG_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/test';
export const PG_BASE_URL = 'postgres://postgres@127.0.0.1:5432';

export type Dialect = 'sqlite' | 'postgres';
export const DIALECTS: Dialect[] = ['sqlite', 'postgres'];

/** Low argon2 cost for speed; the production parameters are checked in config.test.ts. */
export const FAST_ARGON2 = {
  ARGON2_MEMORY_KIB: '1024',
  ARGON2_TIME_COST: '1',
  ARGON2_PARALLELISM: '1',
};

export function randomId(bytes = 5): string {
  return randomBytes(bytes).toString('hex');
}

export async function getFreePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        reject(new Error('no port'));
        return;
      }
      const { port } = addr;
      srv.close(() => resolve(port));
    });
  });
}

export interface TestDatabase {
  dialect: Dialect;
  url: string;
  sqlitePath?: string;
  pgName?: string;
  drop(): Promise<void>;
}

export async function createDatabase(dialect: Dialect): Promise<TestDatabase> {
  if (dialect === 'sqlite') {
    const file = path.join(os.tmpdir(), `gh_bb_${process.pid}_${randomId(6)}.db`);
    return {
      dialect,
      url: `sqlite:${file}`,
      sqlitePath: file,
      async drop() {
        for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(file + suffix, { force: true });
      },
    };
  }
  const name = `gh_bb_${randomId(6)}`;
  const admin = new pg.Client(PG_ADMIN_URL);
  await admin.connect(); // no skip: PostgreSQL being down is a failure
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return {
    dialect,
    url: `${PG_BASE_URL}/${name}`,
    pgName: name,
    async drop() {
      const c = new pg.Client(PG_ADMIN_URL);
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * The key-encryption key the servers of this test file share: required with PostgreSQL, and a server restarted on
 * the same database must be given the same one.
 */
export const GATEHOUSE_SECRET = randomBytes(32).toString('base64url');

/**
 * Node's compile cache for every server and command the suites start, as npm start has it: without it each of the
 * hundreds of starts compiles every module again (1.45 s against 0.85 s to `version` on a slow 2-core host).
 */
export const COMPILE_CACHE = {
  NODE_COMPILE_CACHE: path.join(ROOT, 'node_modules', '.cache', 'node-compile'),
};

/**
 * Every black-box client is 127.0.0.1, so the per-address limits would refuse the suites' own set-up and their timing
 * and load tests: servers throttle (the code runs, device tokens are handed out) with limits no suite reaches. A suite
 * that tests throttling passes PRODUCTION_LIMITS (or its own numbers) in its env.
 */
const LOOSE_LIMITS: Record<string, string> = {
  LOGIN_FREE_FAILS: '1000',
  ACCOUNT_UNTRUSTED_FAILS: '1000',
  IP_FAILS_PER_MIN: '100000',
  IP_FAILS_PER_DAY: '1000000',
  TOKEN_PASSWORD_PER_IP: '1000000/60s',
  REGISTER_PER_IP: '1000000/60s',
  REFRESH_PER_FAMILY: '1000000/60s',
  REFRESH_PER_IP: '1000000/60s',
};

/** Unsets the harness's loose limits: the server runs with the defaults of the README. */
export const PRODUCTION_LIMITS: Record<string, undefined> = Object.fromEntries(
  Object.keys(LOOSE_LIMITS).map((name) => [name, undefined]),
);

function baseEnv(): Record<string, string> {
  const env: Record<string, string> = { GATEHOUSE_SECRET, ...COMPILE_CACHE, ...LOOSE_LIMITS };
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ']) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  return env;
}

export interface RunningServer {
  port: number;
  baseUrl: string;
  proc: ChildProcess;
  url(p: string): string;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartOptions {
  databaseUrl: string;
  env?: Record<string, string | undefined>;
  /** Set to false to leave the ARGON2_* variables unset (production defaults). */
  fastArgon2?: boolean;
  readyTimeoutMs?: number;
  /** The port to listen on (from getFreePort), for a setting that must name it before start (PUBLIC_URL); a free one by default. */
  port?: number;
}

export async function startServer(opts: StartOptions): Promise<RunningServer> {
  const server = await spawnServer(opts);
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  let exited = false;
  void server.exited.then(() => {
    exited = true;
  });
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(
        `server exited before ready (code ${server.proc.exitCode}):\n${server.output().slice(-4000)}`,
      );
    }
    try {
      const r = await fetch(`${server.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === 200) return server;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 75));
  }
  server.proc.kill('SIGKILL');
  throw new Error(`server not ready within timeout:\n${server.output().slice(-4000)}`);
}

/** Spawns the server like startServer, without waiting for it to listen. */
export async function spawnServer(opts: StartOptions): Promise<RunningServer> {
  const port = opts.port ?? (await getFreePort());
  const env: Record<string, string> = {
    ...baseEnv(),
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: opts.databaseUrl,
    LOG_LEVEL: 'info',
    // Stopped servers exit at once; shutdown-under-load.test.ts exercises the drain.
    SHUTDOWN_DRAIN_MS: '0',
    // At the default (SCHED_IDLE) a hash runs only on a core nothing else wants, and beside the other suites'
    // servers no core is ever free: a CI run saw a login wait seconds, past a 2 s session lifetime and the hash
    // queue's 1 s. The suites that are about the priority set it themselves.
    HASH_THREAD_PRIORITY: 'normal',
    ...(opts.fastArgon2 === false ? {} : FAST_ARGON2),
  };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const proc = spawn(process.execPath, ['src/main.ts'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => {
    out += d.toString('utf8');
  });
  proc.stderr?.on('data', (d: Buffer) => {
    out += d.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const server: RunningServer = {
    port,
    baseUrl,
    proc,
    url: (p: string) => baseUrl + p,
    output: () => out,
    exited,
    async stop() {
      if (hasExited && proc.exitCode !== 0) {
        console.error(
          `server on port ${port} had already exited (code ${proc.exitCode}); last output:\n${out.slice(-6000)}`,
        );
      }
      if (!hasExited) proc.kill('SIGTERM');
      // Past the server's own 10 s bound for requests still running, with room for a cluster's workers to exit on a
      // loaded machine: a kill here reads as a failed shutdown (code null).
      const timer = setTimeout(() => {
        if (!hasExited) proc.kill('SIGKILL');
      }, 20_000);
      const r = await exited;
      clearTimeout(timer);
      return r;
    },
  };
  return server;
}

/** Runs the server with the given environment and expects it to exit by itself (bad configuration). */
export async function runUntilExit(
  env: Record<string, string | undefined>,
  timeoutMs = 15_000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string; timedOut: boolean }> {
  const port = await getFreePort();
  const full: Record<string, string> = {
    ...baseEnv(),
    HOST: '127.0.0.1',
    PORT: String(port),
    ...FAST_ARGON2,
  };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete full[k];
    else full[k] = v;
  }
  const proc = spawn(process.execPath, ['src/main.ts'], {
    cwd: ROOT,
    env: full,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => {
    out += d.toString('utf8');
  });
  proc.stderr?.on('data', (d: Buffer) => {
    out += d.toString('utf8');
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill('SIGKILL');
  }, timeoutMs);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (resolve) => {
      // 'close', not 'exit': at exit the last of the output may still be in the pipes (a CI run read none of it)
      proc.on('close', (c, s) => resolve({ code: c, signal: s }));
    },
  );
  clearTimeout(timer);
  return { code, signal, output: out, timedOut };
}

/**
 * Registers beforeAll/afterAll inside the current describe: a fresh database and a server on it.
 * `secrets` collects passwords and tokens the tests used; the logs are checked against them.
 */
export interface ServerContext {
  readonly server: RunningServer;
  readonly db: TestDatabase;
  secrets: Set<string>;
  /** Register a distinctive secret (password, token) that must never appear in logs or other responses. */
  track(s: string): string;
  url(p: string): string;
}

export function useServer(dialect: Dialect, env: Record<string, string | undefined> = {}): ServerContext {
  let server: RunningServer | undefined;
  let db: TestDatabase | undefined;
  const ctx: ServerContext = {
    get server() {
      if (!server) throw new Error('server not started');
      return server;
    },
    get db() {
      if (!db) throw new Error('database not created');
      return db;
    },
    secrets: new Set<string>(),
    track(s: string) {
      ctx.secrets.add(s);
      return s;
    },
    url(p: string) {
      return ctx.server.url(p);
    },
  };
  beforeAll(async () => {
    db = await createDatabase(dialect);
    server = await startServer({ databaseUrl: db.url, env });
  }, 60_000);
  afterAll(async () => {
    try {
      if (server) await server.stop();
    } finally {
      if (db) await db.drop();
    }
  }, 30_000);
  return ctx;
}

/** Writes `hash` as the password hash of the given users, straight into the database (an import, say). */
export async function setPasswordHash(db: TestDatabase, ids: number[], hash: string): Promise<void> {
  if (db.dialect === 'sqlite') {
    const d = new DatabaseSync(db.sqlitePath ?? '');
    try {
      for (const id of ids) d.prepare('update users set password_hash = ? where id = ?').run(hash, id);
    } finally {
      d.close();
    }
    return;
  }
  const c = new pg.Client(db.url);
  await c.connect();
  try {
    for (const id of ids) await c.query('update users set password_hash = $1 where id = $2', [hash, id]);
  } finally {
    await c.end();
  }
}
