/**
 * Issue 12, the migration from the FastAPI seed, end to end: the reference FastAPI app (test/fixtures/reference-fastapi,
 * run by Debian's python3) registers users over HTTP and writes its SQLite database; `node src/main.ts import fastapi`
 * imports that file into a fresh Gatehouse database on SQLite and on PostgreSQL; a Gatehouse server on it then logs
 * the imported users in with their old passwords (their bcrypt hash becomes argon2id), refuses the old app's tokens,
 * and registers newcomers under fresh ids. Needs the reference app's Python packages: skipped with a warning when
 * they are missing, except with CI=true, where that is a failure (`.ci/run` installs them).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getWithToken, postForm, postJson, request } from './support/client.ts';
import {
  COMPILE_CACHE,
  createDatabase,
  DIALECTS,
  FAST_ARGON2,
  GATEHOUSE_SECRET,
  getFreePort,
  ROOT,
  type RunningServer,
  startServer,
  type TestDatabase,
} from './support/server.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 120_000 });

const PYTHON = process.env.PYTHON ?? '/usr/bin/python3';
// A copy of ../shared/reference-fastapi kept in the repository, so that a clone anywhere runs this test.
const REFERENCE_APP = path.resolve(ROOT, 'test', 'fixtures', 'reference-fastapi');
// The modules the reference app imports, as its README's apt-get line installs them.
const PYTHON_MODULES = 'fastapi, uvicorn, jose, passlib, bcrypt, sqlalchemy, multipart, email_validator';

function findMissing(): string | undefined {
  if (!existsSync(path.join(REFERENCE_APP, 'run.sh'))) return `the reference app at ${REFERENCE_APP}`;
  const probe = spawnSync(PYTHON, ['-c', `import ${PYTHON_MODULES}`], { encoding: 'utf8' });
  if (probe.status !== 0)
    return `${PYTHON} with ${PYTHON_MODULES} (${(probe.stderr || String(probe.error)).trim()})`;
  return undefined;
}

const missing = findMissing();
if (missing && !process.env.CI) {
  console.warn(
    `\n*** ${missing} is missing: the import of a database written by the FastAPI app is SKIPPED. Install it with ` +
      '`apt-get install -y python3-fastapi python3-uvicorn python3-jose python3-passlib python3-bcrypt ' +
      'python3-sqlalchemy python3-multipart python3-email-validator`.\n',
  );
}

interface SeedUser {
  username: string;
  email: string;
  password: string;
  age: number;
  level: string;
}

// What the seed lets in and Gatehouse does not: a space in a name, an email that differs only in case, an age.
const USERS: SeedUser[] = [
  {
    username: 'alice',
    email: 'alice@example.com',
    password: 'alice has a long password',
    age: 34,
    level: 'advanced',
  },
  {
    username: 'Bob Smith',
    email: 'bob@example.com',
    password: 'bob has a long password',
    age: 40,
    level: 'beginner',
  },
  {
    username: 'carol',
    email: 'Carol@Example.com',
    password: 'carol has a long password',
    age: 27,
    level: 'beginner',
  },
  {
    username: 'dave',
    email: 'carol@example.com',
    password: 'dave has a long password',
    age: 51,
    level: 'beginner',
  },
  {
    username: 'erin',
    email: 'erin@example.com',
    password: 'erin has a long password',
    age: 200,
    level: 'beginner',
  },
  // passlib hashed the raw bytes: Gatehouse must not NFKC (ﬁ → fi) a password before checking a bcrypt hash.
  {
    username: 'frank',
    email: 'frank@example.com',
    password: 'Fuß ﬁnal wörd 42',
    age: 63,
    level: 'intermediate',
  },
];
const IMPORTED = ['alice', 'carol', 'frank'];

interface ImportSummary {
  read: number;
  imported: number;
  already_present: number;
  skipped: { source_id: number; username: string | null; code: string; reason: string }[];
  renumbered: { source_id: number; id: number; username: string }[];
}

interface ReferenceApp {
  proc: ChildProcess;
  databasePath: string;
  ids: Map<string, number>;
  /** A token the old app issued to alice. */
  oldToken: string;
  directory: string;
}

async function runReferenceApp(): Promise<ReferenceApp> {
  const directory = mkdtempSync(path.join(os.tmpdir(), 'gh-reference-'));
  const port = await getFreePort();
  const proc = spawn(path.join(REFERENCE_APP, 'run.sh'), [String(port)], {
    env: { ...process.env, TMPDIR: directory },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    output += chunk;
  });
  proc.stderr?.on('data', (chunk: Buffer) => {
    output += chunk;
  });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the reference app exited (${proc.exitCode}):\n${output}`);
    if (Date.now() > deadline) throw new Error(`the reference app did not answer within 60 s:\n${output}`);
    try {
      if ((await request(`${base}/openapi.json`)).status === 200) break;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const ids = new Map<string, number>();
  for (const user of USERS) {
    const reply = await postJson(`${base}/register/`, user);
    expect(reply.status, `the reference app registers ${user.username}: ${reply.text}`).toBe(200);
    ids.set(user.username, reply.json.id);
  }
  const token = await postForm(`${base}/token`, { username: 'alice', password: USERS[0]?.password ?? '' });
  expect(token.status, token.text).toBe(200);
  return {
    proc,
    databasePath: path.join(directory, `reference-fastapi-${port}`, 'app.db'),
    ids,
    oldToken: token.json.access_token,
    directory,
  };
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function importFastapi(databaseUrl: string, source: string): Promise<ImportSummary> {
  const proc = spawn(process.execPath, ['src/main.ts', 'import', 'fastapi', source, '--json'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: databaseUrl,
      GATEHOUSE_SECRET,
      ...COMPILE_CACHE,
      ...FAST_ARGON2,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk;
  });
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => proc.on('exit', resolve));
  expect(code, `import: ${stdout}${stderr}`).toBe(0);
  return JSON.parse(stdout);
}

async function query(
  db: TestDatabase,
  text: string,
  params: unknown[] = [],
): Promise<Record<string, unknown>[]> {
  if (db.dialect === 'sqlite') {
    const sqlite = new DatabaseSync(db.sqlitePath ?? '', { readOnly: true });
    try {
      return sqlite.prepare(text.replace(/\$\d/g, '?')).all(...(params as string[])) as Record<
        string,
        unknown
      >[];
    } finally {
      sqlite.close();
    }
  }
  const client = new pg.Client(db.url);
  await client.connect();
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}

describe.skipIf(missing && !process.env.CI)(
  'import of a database written by the reference FastAPI app',
  () => {
    let reference: ReferenceApp | undefined;

    beforeAll(async () => {
      if (missing) throw new Error(`CI=true needs ${missing}: see .ci/run`);
      reference = await runReferenceApp();
      // Step one of the migration: the old app is stopped before its file is read.
      await stop(reference.proc);
    });
    afterAll(async () => {
      if (reference) {
        await stop(reference.proc);
        rmSync(reference.directory, { recursive: true, force: true });
      }
    });

    describe.each(DIALECTS)('into %s', (dialect) => {
      let db: TestDatabase;
      let server: RunningServer | undefined;
      let first: ImportSummary;

      beforeAll(async () => {
        db = await createDatabase(dialect);
        first = await importFastapi(db.url, reference?.databasePath ?? '');
        server = await startServer({ databaseUrl: db.url });
      });
      afterAll(async () => {
        await server?.stop();
        await db?.drop();
      });

      it('imports the users Gatehouse can take, under the ids they had, and reports the others', async () => {
        expect(first).toMatchObject({
          read: USERS.length,
          imported: IMPORTED.length,
          already_present: 0,
          renumbered: [],
        });
        expect(first.skipped.map((row) => [row.username, row.code])).toEqual([
          ['Bob Smith', 'invalid_username'],
          ['dave', 'duplicate_email'],
          ['erin', 'invalid_age'],
        ]);
        const rows = await query(
          db,
          'select id, username, email, age, level, password_hash from users order by id',
        );
        expect(
          rows.map((row) => [Number(row.id), row.username, row.email, Number(row.age), row.level]),
        ).toEqual(
          IMPORTED.map((name) => {
            const user = USERS.find((candidate) => candidate.username === name);
            return [reference?.ids.get(name), name, user?.email, user?.age, user?.level];
          }),
        );
        for (const row of rows) expect(row.password_hash).toMatch(/^\$2b\$12\$/);
      });

      it('logs an imported user in with their old password, and their hash becomes argon2id', async () => {
        for (const name of IMPORTED) {
          const password = USERS.find((user) => user.username === name)?.password ?? '';
          const reply = await postForm(server!.url('/token'), {
            grant_type: 'password',
            username: name,
            password,
          });
          expect(reply.status, `${name}: ${reply.text}`).toBe(200);
          const conversation = await getWithToken(server!.url('/conversation'), reply.json.access_token);
          expect(conversation.status).toBe(200);
          expect(conversation.json).toEqual({
            conversation: 'This is a secure conversation',
            current_user: name,
          });
        }
        const hashes = await query(db, 'select username, password_hash from users order by id');
        for (const row of hashes) expect(row.password_hash, String(row.username)).toMatch(/^\$argon2id\$/);
        const wrong = await postForm(server!.url('/token'), {
          username: 'alice',
          password: 'not her password',
        });
        expect(wrong.status).toBe(400);
        expect(wrong.json.error).toBe('invalid_grant');
      });

      it("refuses the old app's tokens: users log in again", async () => {
        const reply = await getWithToken(server!.url('/conversation'), reference?.oldToken ?? '');
        expect(reply.status).toBe(401);
      });

      it('imports nothing on a second run and reports the users already present', async () => {
        const second = await importFastapi(db.url, reference?.databasePath ?? '');
        expect(second).toMatchObject({ imported: 0, already_present: IMPORTED.length, renumbered: [] });
        expect(second.skipped).toHaveLength(3);
        const [count] = await query(db, 'select count(*) as count from users');
        expect(Number(count?.count)).toBe(IMPORTED.length);
      });

      it('registers a newcomer under a fresh id, past the imported ones', async () => {
        const reply = await postJson(server!.url('/register/'), {
          username: 'newcomer',
          email: 'newcomer@example.com',
          password: 'a newcomer with a long password',
          age: 22,
          level: 'beginner',
        });
        expect(reply.status, reply.text).toBe(200);
        expect(reply.json.id).toBeGreaterThan(Math.max(...(reference?.ids.values() ?? [])));
      });
    });
  },
);
