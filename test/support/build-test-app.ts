import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import { type AppOptions, buildApp } from '../../src/app.ts';
import { type Config, loadConfig } from '../../src/config.ts';
import type { Dialect } from '../../src/db/schema.ts';
import { createPasswordHasher, type PasswordHasher } from '../../src/security/passwords.ts';
import { createTestClock, type TestClock } from './clock.ts';
import { createTestDatabase, type TestDatabase } from './dialects.ts';

// The production algorithm at its minimum cost: the hasher's own tests use the real parameters.
export const FAST_ARGON2 = { memoryKib: 64, timeCost: 1, parallelism: 1 };

/** The GATEHOUSE_SECRET of every app this test file builds, so that apps sharing a database open its keys. */
export const TEST_SECRET = randomBytes(32).toString('base64url');

export interface TestApp {
  app: FastifyInstance;
  config: Config;
  clock: TestClock;
  database: TestDatabase;
  passwords: PasswordHasher;
  /** Everything the app logged, one JSON line each. */
  logs: string[];
  close(): Promise<void>;
}

export interface TestAppOptions {
  env?: Record<string, string>;
  passwords?: PasswordHasher;
  database?: TestDatabase;
  clock?: TestClock;
  /** Shortens the request time limit, for tests that let a client run out of it. */
  requestTimeoutMs?: number;
  /** Lowers the event-loop limits of the outer load-shedding guard. */
  pressure?: AppOptions['pressure'];
  /** Serves the account page from here instead of dist/web. */
  accountPageDirectory?: string;
}

export async function buildTestApp(dialect: Dialect, options: TestAppOptions = {}): Promise<TestApp> {
  const config = loadConfig({
    DATABASE_URL: 'sqlite::memory:',
    GATEHOUSE_SECRET: TEST_SECRET,
    LOG_LEVEL: 'debug',
    ARGON2_MEMORY_KIB: String(FAST_ARGON2.memoryKib),
    ARGON2_TIME_COST: String(FAST_ARGON2.timeCost),
    // Test hashes take well under a millisecond: the production queue bounds would only shed the races the suites
    // stage on purpose. The shedding suite sets its own limits.
    HASH_QUEUE_MAX: '100000',
    HASH_QUEUE_TIMEOUT_MS: '60000',
    // Every injected request comes from one address, so the per-address limits would refuse most suites' set-up:
    // the throttling suites turn it on (RATE_LIMITS=on) and choose their addresses.
    RATE_LIMITS: 'off',
    ...options.env,
  });
  const database = options.database ?? (await createTestDatabase(dialect));
  const clock = options.clock ?? createTestClock();
  // Imported bcrypt hashes in these tests are made at cost 4, so failures need not wait for cost 12.
  const passwords =
    options.passwords ??
    createPasswordHasher(config.passwords.argon2, { ...config.hashing, importedBcryptCost: 4 });
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _encoding, done) {
      logs.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const app = await buildApp(
    config,
    { db: database, clock, passwords, logStream },
    {
      requestTimeoutMs: options.requestTimeoutMs,
      pressure: options.pressure,
      accountPageDirectory: options.accountPageDirectory,
    },
  );
  await app.ready();
  return {
    app,
    config,
    clock,
    database,
    passwords,
    logs,
    async close() {
      await app.close();
      if (!options.database) await database.destroy();
    },
  };
}

export const STRONG_PASSWORD = 'correct horse battery staple';

export function registration(overrides: Record<string, unknown> = {}) {
  return {
    username: 'alice',
    email: 'alice@example.com',
    password: STRONG_PASSWORD,
    age: 30,
    level: 'beginner',
    ...overrides,
  };
}

export async function registerUser(app: FastifyInstance, overrides: Record<string, unknown> = {}) {
  const response = await app.inject({ method: 'POST', url: '/register/', payload: registration(overrides) });
  if (response.statusCode !== 200)
    throw new Error(`registration failed: ${response.statusCode} ${response.body}`);
  return response.json() as { id: number; username: string; email: string; age: number; level: string };
}

/** A request with the access token as its Bearer credential, and a JSON body when one is given. */
export function bearerRequest(
  app: FastifyInstance,
  method: 'GET' | 'PATCH' | 'POST' | 'PUT' | 'DELETE',
  url: string,
  accessToken: string,
  payload?: object,
) {
  return app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${accessToken}` },
    ...(payload ? { payload } : {}),
  });
}

/** Asserts the answer to a request whose session or account is gone: 401 invalid_token, as for any request after. */
export function expectSignedOut(response: {
  statusCode: number;
  headers: Record<string, unknown>;
  body: string;
}) {
  expect(response.statusCode, response.body).toBe(401);
  expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
  expect(JSON.parse(response.body)).toEqual({ detail: 'Could not validate credentials' });
}

export async function loginToken(app: FastifyInstance, username = 'alice', password = STRONG_PASSWORD) {
  const response = await app.inject({ method: 'POST', url: '/token', payload: { username, password } });
  if (response.statusCode !== 200) throw new Error(`login failed: ${response.statusCode} ${response.body}`);
  return (response.json() as { access_token: string }).access_token;
}
