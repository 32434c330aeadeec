/**
 * Issue 5, scale: `node src/main.ts seed-users --count N` (what `npm run seed-users -- --count N` runs) on SQLite
 * and PostgreSQL. It migrates a fresh database first, draws a progress bar on stderr, creates users named
 * seed-<n in base 36> with the password `seeded user password 0001` who can log in and read their conversation
 * through a server on the same database, adds more on a later run without clashing, and refuses a bad --count
 * without writing anything.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getWithToken, postForm, request, strongPassword, uniqueName } from './support/client.ts';
import {
  COMPILE_CACHE,
  createDatabase,
  DIALECTS,
  FAST_ARGON2,
  GATEHOUSE_SECRET,
  ROOT,
  type RunningServer,
  startServer,
  type TestDatabase,
} from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const SEEDED_PASSWORD = 'seeded user password 0001';
const seedName = (n: number) => `seed-${n.toString(36)}`;

interface SeedRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

async function seedUsers(
  databaseUrl: string,
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<SeedRun> {
  const proc = spawn(process.execPath, ['src/main.ts', 'seed-users', ...args], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...COMPILE_CACHE,
      DATABASE_URL: databaseUrl,
      GATEHOUSE_SECRET,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString('utf8');
  });
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (resolve) => {
      proc.on('exit', (c, s) => resolve({ code: c, signal: s }));
    },
  );
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

const describeRun = (r: SeedRun) =>
  `exit ${r.code} ${r.signal ?? ''}\nstdout: ${r.stdout.slice(-1500)}\nstderr: ${r.stderr.slice(-1500)}`;

async function tryLogin(server: RunningServer, username: string, password = SEEDED_PASSWORD) {
  return await postForm(server.url('/token'), { grant_type: 'password', username, password });
}

/** Logs in with the seeded password and reads /conversation; returns the conversation text. */
async function expectSeeded(server: RunningServer, username: string): Promise<string> {
  const r = await tryLogin(server, username);
  expect(r.status, `login ${username}: ${r.text}`).toBe(200);
  expect(r.json.token_type).toBe('bearer');
  expect(typeof r.json.refresh_token).toBe('string');
  const c = await getWithToken(server.url('/conversation'), r.json.access_token);
  expect(c.status, `conversation of ${username}: ${c.text}`).toBe(200);
  expect(c.json.current_user).toBe(username);
  expect(typeof c.json.conversation).toBe('string');
  return c.json.conversation as string;
}

async function expectNotSeeded(server: RunningServer, username: string): Promise<void> {
  const r = await tryLogin(server, username);
  expect(r.status, `login ${username} should fail: ${r.text}`).toBe(400);
  expect(r.json.error).toBe('invalid_grant');
}

/** How many of seed-0 .. seed-<n-1> log in with the seeded password. */
async function countSeeded(server: RunningServer, n: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i += 8) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(8, n - i) }, (_, j) => tryLogin(server, seedName(i + j))),
    );
    for (const r of batch) {
      if (r.status === 200) ok += 1;
      else expect(r.status, r.text).toBe(400);
    }
  }
  return ok;
}

async function registeredConversation(server: RunningServer): Promise<string> {
  const username = uniqueName('cmp');
  const password = strongPassword();
  const reg = await request(server.url('/register/'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      username,
      email: `${username}@example.com`,
      password,
      age: 33,
      level: 'beginner',
    }),
  });
  expect(reg.status, reg.text).toBe(200);
  const t = await tryLogin(server, username, password);
  expect(t.status, t.text).toBe(200);
  const c = await getWithToken(server.url('/conversation'), t.json.access_token);
  expect(c.status, c.text).toBe(200);
  return c.json.conversation as string;
}

describe.each(DIALECTS)('seed-users (%s)', (dialect) => {
  let mainDb: TestDatabase;
  let edgeDb: TestDatabase;
  let main: RunningServer | undefined;
  let edge: RunningServer | undefined;

  beforeAll(async () => {
    mainDb = await createDatabase(dialect);
    edgeDb = await createDatabase(dialect);
  });

  afterAll(async () => {
    try {
      await Promise.all([main?.stop(), edge?.stop()]);
    } finally {
      await Promise.all([mainDb?.drop(), edgeDb?.drop()]);
    }
  }, 30_000);

  describe('on a fresh database', () => {
    it('creates 5000 users (migrating first, production hash), drawing a progress bar on stderr', async () => {
      const r = await seedUsers(mainDb.url, ['--count', '5000']);
      expect(r.code, describeRun(r)).toBe(0);
      expect(r.stderr, 'a progress bar on stderr').toMatch(/100\s?%/);
      expect(r.stdout, 'the progress bar belongs on stderr').not.toMatch(/\r/);
    }, 60_000);

    it('lets seed-0 and the last one (seed-3uv) log in with the seeded password and read their conversation', async () => {
      main = await startServer({ databaseUrl: mainDb.url, env: { RATE_LIMITS: 'off' } });
      const first = await expectSeeded(main, 'seed-0');
      const last = await expectSeeded(main, seedName(4999));
      expect(seedName(4999)).toBe('seed-3uv');
      const middle = await expectSeeded(main, seedName(1234));
      // the same conversation a user who registered gets
      const registered = await registeredConversation(main);
      expect(first).toBe(registered);
      expect(last).toBe(registered);
      expect(middle).toBe(registered);
    });

    it('created exactly 5000: seed-3uw does not exist, and a wrong password is refused', async () => {
      if (!main) throw new Error('server not started');
      await expectNotSeeded(main, seedName(5000));
      const wrong = await tryLogin(main, 'seed-0', `${SEEDED_PASSWORD}x`);
      expect(wrong.status, wrong.text).toBe(400);
      expect(wrong.json.error).toBe('invalid_grant');
    });

    it('adds 100 more on a second run while the server runs (WORKERS=2 in its environment), without clashing', async () => {
      if (!main) throw new Error('server not started');
      // the numbering of a later run is free to skip names (a user registered in between): count what logs in
      const from = 4990;
      const span = 250;
      const seededIn = async () => {
        let ok = 0;
        for (let i = from; i < from + span; i += 10) {
          const batch = await Promise.all(
            Array.from({ length: 10 }, (_, j) => tryLogin(main!, seedName(i + j))),
          );
          ok += batch.filter((r) => r.status === 200).length;
        }
        return ok;
      };
      expect(await seededIn()).toBe(10); // seed-<4990> .. seed-<4999>
      // the database holds a registered user (registeredConversation above)
      const r = await seedUsers(mainDb.url, ['--count', '100', '--allow-real-users'], {
        WORKERS: '2',
        RATE_LIMITS: 'off',
        ...FAST_ARGON2,
      });
      expect(r.code, describeRun(r)).toBe(0);
      expect(r.stderr).toMatch(/100\s?%/);
      expect(await seededIn(), `seed-<n> users in ${from}..${from + span - 1} after adding 100`).toBe(110);
      // the first run's users are intact
      await expectSeeded(main, 'seed-0');
      await expectSeeded(main, seedName(4999));
    });

    it('two runs at the same time (1500 users each) both succeed', async () => {
      if (!main) throw new Error('server not started');
      const [a, b] = await Promise.all([
        seedUsers(mainDb.url, ['--count', '1500', '--allow-real-users'], { ...FAST_ARGON2 }),
        seedUsers(mainDb.url, ['--count', '1500', '--allow-real-users'], { ...FAST_ARGON2 }),
      ]);
      expect(a?.code, `first concurrent run: ${a && describeRun(a)}`).toBe(0);
      expect(b?.code, `second concurrent run: ${b && describeRun(b)}`).toBe(0);
      await expectSeeded(main, 'seed-0');
    });
  });

  describe('edge cases', () => {
    it.concurrent.for([
      { args: ['--count', '0'] },
      { args: ['--count', '-1'] },
      { args: ['--count', 'abc'] },
      { args: ['--count', '1.5'] },
      { args: ['--count', ''] },
      { args: ['--count'] },
      { args: [] },
    ])('refuses seed-users $args: non-zero exit, a message about --count', async ({ args }, { expect }) => {
      const r = await seedUsers(edgeDb.url, args, { ...FAST_ARGON2 }, 20_000);
      expect(r.code, describeRun(r)).not.toBe(0);
      expect(r.code, describeRun(r)).not.toBeNull();
      expect(`${r.stdout}${r.stderr}`).toMatch(/count/i);
      expect(r.stderr).not.toMatch(/100\s?%/);
    });

    it('wrote no users on those refused runs: a run of 3 then makes exactly seed-0 .. seed-2', async () => {
      const r = await seedUsers(edgeDb.url, ['--count', '3'], { ...FAST_ARGON2 });
      expect(r.code, describeRun(r)).toBe(0);
      edge = await startServer({ databaseUrl: edgeDb.url, env: { RATE_LIMITS: 'off' } });
      await expectSeeded(edge, 'seed-0');
      await expectSeeded(edge, 'seed-2');
      await expectNotSeeded(edge, 'seed-3');
    });

    it('adds users on a later run after a seeded user deleted their account', async () => {
      if (!edge) throw new Error('server not started');
      const before = await countSeeded(edge, 12);
      const t = await tryLogin(edge, 'seed-1');
      expect(t.status, t.text).toBe(200);
      const del = await request(edge.url('/users/me'), {
        method: 'DELETE',
        headers: { authorization: `Bearer ${t.json.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ password: SEEDED_PASSWORD }),
      });
      expect(del.status, del.text).toBe(204);
      await expectNotSeeded(edge, 'seed-1');
      const r = await seedUsers(edgeDb.url, ['--count', '3'], { ...FAST_ARGON2 });
      expect(r.code, `a second run after a deletion: ${describeRun(r)}`).toBe(0);
      expect(await countSeeded(edge, 12)).toBe(before - 1 + 3);
    });

    it('adds users on a later run when registered users already hold names of the seed-<n> form', async () => {
      if (!edge) throw new Error('server not started');
      // someone registered seed-like names (with their own password) a little ahead of the seeded ones: a run
      // numbering from the count of users would land among them
      for (let n = 40; n < 120; n += 1) {
        const username = seedName(n);
        const reg = await request(edge.url('/register/'), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            username,
            email: `squatter-${n}-${Date.now()}@example.com`,
            password: strongPassword(),
            age: 25,
            level: 'beginner',
          }),
        });
        expect([200, 409], `register ${username}: ${reg.text}`).toContain(reg.status);
      }
      const before = await countSeeded(edge, 200);
      const refused = await seedUsers(edgeDb.url, ['--count', '3'], { ...FAST_ARGON2 });
      expect(refused.code, `a run without --allow-real-users: ${describeRun(refused)}`).not.toBe(0);
      expect(refused.stderr, 'a refusal goes to stderr').toMatch(/--allow-real-users/);
      expect(await countSeeded(edge, 200)).toBe(before);
      const r = await seedUsers(edgeDb.url, ['--count', '3', '--allow-real-users'], { ...FAST_ARGON2 });
      expect(r.code, `a run after seed-like registrations: ${describeRun(r)}`).toBe(0);
      expect(await countSeeded(edge, 200)).toBe(before + 3);
    });
  });
});
