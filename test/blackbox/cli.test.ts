/**
 * Issue 12, the gatehouse command: spawned for real (bin/gatehouse.js, and `npx gatehouse` as an operator types it)
 * against the database of a running server, on a SQLite file and on PostgreSQL. Help, exit codes, tables and JSON,
 * and what each operator action does to the server's users.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateSync } from 'otplib';
import pg from 'pg';
import { describe, expect, inject, it, vi } from 'vitest';
import {
  getWithToken,
  login,
  postForm,
  postJson,
  type RegisteredUser,
  registerUser,
} from './support/client.ts';
import {
  createDatabase,
  DIALECTS,
  FAST_ARGON2,
  GATEHOUSE_SECRET,
  ROOT,
  useServer,
} from './support/server.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn', ...env },
        timeout: 45_000,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('gatehouse --help', () => {
  it('runs through npx from the project directory, with the pinned Node 24', async () => {
    const result = await run('npx', ['gatehouse', '--help'], {});
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^usage: gatehouse \[COMMAND\]/);
    for (const command of [
      'users list',
      'users unlock',
      'users reset-mfa',
      'sessions revoke',
      'keys rotate',
      'migrate',
      'seed-users',
    ])
      expect(result.stdout).toContain(command);
    const version = await run('npx', ['gatehouse', 'version'], {});
    expect(version.stdout).toMatch(/^gatehouse \S+ \(Node\.js v24\./);
  });

  it('runs through npm run gatehouse --', async () => {
    const result = await run('npm', ['run', '--silent', 'gatehouse', '--', 'users', '--help'], {});
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('users grant-role');
  });

  it('gives each command its help, and a usage error exit 2 without touching a database', async () => {
    const bin = (args: string[]) => run(process.execPath, ['bin/gatehouse.js', ...args], {});
    const help = await bin(['users', 'list', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: gatehouse users list \[--search TEXT\] \[--limit N\]/);
    expect(help.stdout).toContain('example');
    for (const args of [
      ['frobnicate'],
      ['users'],
      ['users', 'frob'],
      ['users', 'show'],
      ['sessions', 'list'],
    ]) {
      const refused = await bin(args);
      expect(refused.code, args.join(' ')).toBe(2);
      expect(refused.stderr).toMatch(/^gatehouse/);
      expect(refused.stdout).toBe('');
    }
    const importHelp = await bin(['import', 'fastapi', '--help']);
    expect(importHelp.code).toBe(0);
    expect(importHelp.stdout).toMatch(/^usage: gatehouse import fastapi PATH \[--json\]/);
    expect((await bin(['import', 'fastapi'])).code).toBe(2);
    expect((await bin(['--help'])).stdout).toMatch(/^ {2}import fastapi /m);
    const unknownOption = await bin(['users', 'list', '--colour']);
    expect(unknownOption.code).toBe(2);
    expect(unknownOption.stderr).toContain('--colour');
  });
});

describe.each(DIALECTS)('gatehouse operator commands (%s)', (dialect) => {
  const redisUrl = inject('redisUrl');
  const redisPrefix = `gh_cli_${randomBytes(4).toString('hex')}:`;
  const shared: Record<string, string> = redisUrl
    ? { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: redisPrefix }
    : {};
  const ctx = useServer(dialect, { ...shared, ACCOUNT_UNTRUSTED_FAILS: '3' });
  const gatehouse = (args: string[], { redis = true } = {}) =>
    run(process.execPath, ['bin/gatehouse.js', ...args], {
      DATABASE_URL: ctx.db.url,
      GATEHOUSE_SECRET,
      ...FAST_ARGON2,
      ...(redis ? shared : {}),
    });
  const json = async (args: string[]) => {
    const result = await gatehouse([...args, '--json']);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout);
  };
  const users: RegisteredUser[] = [];

  const fresh = async (prefix: string) => {
    const user = await registerUser(ctx, { username: `${prefix}${randomBytes(3).toString('hex')}` });
    users.push(user);
    return user;
  };

  it('lists and searches users as an aligned table or JSON, a page at a time', async () => {
    const first = await fresh('lister');
    const second = await fresh('lister');
    const table = await gatehouse(['users', 'list', '--search', 'LISTER']);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+USERNAME\s+EMAIL\s+ROLES\s+STATUS\s+CREATED$/);
    expect(lines.slice(1).map((line) => line.split(/\s+/)[1])).toEqual([first.username, second.username]);
    // Aligned: every row starts its email where the heading does.
    const emailColumn = lines[0]?.indexOf('EMAIL');
    for (const line of lines.slice(1)) expect(line.indexOf('@') > (emailColumn ?? 0)).toBe(true);
    const page = await json(['users', 'list', '--search', 'lister', '--limit', '1']);
    expect(page.users.map((user: { username: string }) => user.username)).toEqual([first.username]);
    const next = await json(['users', 'list', '--search', 'lister', '--limit', '1', '--cursor', page.next]);
    expect(next.users.map((user: { username: string }) => user.username)).toEqual([second.username]);
    expect(next.next).toBeNull();
    const none = await gatehouse(['users', 'list', '--search', 'no-such-user-anywhere']);
    expect(none.stdout).toContain('no users match');
    expect((await gatehouse(['users', 'list', '--limit', '0'])).code).toBe(2);
    expect((await gatehouse(['users', 'list', '--cursor', '!!'])).code).toBe(2);
  });

  it('says a missing user clearly, on stderr, with exit 1', async () => {
    for (const args of [
      ['users', 'show', 'nobody-here'],
      ['users', 'disable', 'nobody-here'],
      ['users', 'delete', 'nobody-here', '--yes'],
      ['users', 'grant-role', 'nobody-here', 'admin'],
      ['sessions', 'list', '--user', 'nobody-here'],
    ]) {
      const result = await gatehouse(args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr).toContain('no user named "nobody-here"');
      expect(result.stdout).toBe('');
    }
  });

  it('shows a user with live sessions; disabling ends them at once, enabling lets the user back in', async () => {
    const user = await fresh('shown');
    const token = await login(ctx, user.username, user.password);
    const shown = await json(['users', 'show', user.username.toUpperCase()]);
    expect(shown).toMatchObject({ id: user.id, username: user.username, roles: [], disabled_at: null });
    expect(shown.live_sessions).toBe(1);
    expect(shown.last_login_at).toEqual(expect.any(String));

    const disabled = await gatehouse(['users', 'disable', user.username]);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(disabled.stdout).toContain('1 session(s) ended');
    expect((await getWithToken(ctx.url('/users/me'), token)).status).toBe(401);
    expect((await getWithToken(ctx.url('/conversation'), token)).status).toBe(401);
    const refused = await postForm(ctx.url('/token'), { username: user.username, password: user.password });
    expect(refused.status).toBe(400);
    expect(refused.json).toEqual({
      error: 'invalid_grant',
      error_description: 'Account disabled',
      detail: 'Account disabled',
    });
    expect((await json(['users', 'show', user.username])).disabled_at).toEqual(expect.any(String));

    const enabled = await gatehouse(['users', 'enable', user.username]);
    expect(enabled.code, enabled.stderr).toBe(0);
    expect((await json(['users', 'show', user.username])).disabled_at).toBeNull();
    await login(ctx, user.username, user.password);
  });

  it('grants and revokes the admin role (and with it the admin scope), and refuses an unknown role with exit 2', async () => {
    const user = await fresh('roled');
    const askAdmin = () =>
      postForm(ctx.url('/token'), { username: user.username, password: user.password, scope: 'admin' });
    expect((await askAdmin()).json).toMatchObject({ error: 'invalid_scope' });
    expect((await json(['users', 'grant-role', user.username, 'admin'])).roles).toEqual(['admin']);
    expect((await json(['users', 'show', user.username])).roles).toEqual(['admin']);
    const granted = await askAdmin();
    expect(granted.json.scope).toBe('admin');
    const adminToken = granted.json.access_token as string;
    expect((await getWithToken(ctx.url('/admin/users'), adminToken)).status).toBe(200);
    expect((await json(['users', 'revoke-role', user.username, 'admin'])).roles).toEqual([]);
    expect((await getWithToken(ctx.url('/admin/users'), adminToken)).status).toBe(403);
    const unknown = await gatehouse(['users', 'grant-role', user.username, 'root']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown role');
  });

  it("lists a user's sessions and ends one or all of them", async () => {
    const user = await fresh('sessioned');
    const first = await login(ctx, user.username, user.password);
    const second = await login(ctx, user.username, user.password);
    const listed = await json(['sessions', 'list', '--user', user.username]);
    expect(listed.sessions).toHaveLength(2);
    const sid = (token: string) =>
      JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).sid as string;
    const one = await gatehouse(['sessions', 'revoke', '--user', user.username, '--session', sid(first)]);
    expect(one.code, one.stderr).toBe(0);
    expect((await getWithToken(ctx.url('/users/me'), first)).status).toBe(401);
    expect((await getWithToken(ctx.url('/users/me'), second)).status).toBe(200);
    const again = await gatehouse(['sessions', 'revoke', '--user', user.username, '--session', sid(first)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('no live session');
    expect((await json(['sessions', 'revoke', '--user', user.username])).ended_sessions).toBe(1);
    expect((await getWithToken(ctx.url('/users/me'), second)).status).toBe(401);
  });

  it('deletes only with --yes when stdin is not a terminal', async () => {
    const user = await fresh('deleted');
    const unconfirmed = await gatehouse(['users', 'delete', user.username]);
    expect(unconfirmed.code).toBe(1);
    expect(unconfirmed.stderr).toContain('--yes');
    expect((await json(['users', 'show', user.username])).id).toBe(user.id);
    const deleted = await gatehouse(['users', 'delete', user.username, '--yes']);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect((await gatehouse(['users', 'show', user.username])).code).toBe(1);
    const refused = await postForm(ctx.url('/token'), { username: user.username, password: user.password });
    expect(refused.status).toBe(400);
  });

  it('records each action in the audit trail with the OS user as its actor', async () => {
    const user = await fresh('audited');
    await gatehouse(['users', 'disable', user.username]);
    await gatehouse(['users', 'enable', user.username]);
    const page = await json(['users', 'events', user.username]);
    const events = page.events.map((event: { event: string; detail: { actor?: string } }) => [
      event.event,
      event.detail.actor?.startsWith('cli:'),
    ]);
    expect(events.slice(0, 2)).toEqual([
      ['user_enabled', true],
      ['user_disabled', true],
    ]);
  });

  it.runIf(redisUrl)(
    'unlocks an account that failed logins locked for untrusted clients (Redis)',
    async () => {
      const user = await fresh('locked');
      for (let i = 0; i < 3; i += 1) {
        const wrong = await postForm(ctx.url('/token'), {
          username: user.username,
          password: 'wrong password 1',
        });
        expect(wrong.status).toBe(400);
      }
      const locked = await postForm(ctx.url('/token'), { username: user.username, password: user.password });
      expect(locked.status, locked.text).toBe(429);
      const unlocked = await gatehouse(['users', 'unlock', user.username]);
      expect(unlocked.code, unlocked.stderr).toBe(0);
      expect(unlocked.stdout).toContain(`unlocked ${user.username}`);
      await login(ctx, user.username, user.password);
    },
  );

  it('refuses to unlock with exit 1 when the counters live in the server process (no REDIS_URL)', async () => {
    const user = await fresh('memory');
    const result = await gatehouse(['users', 'unlock', user.username], { redis: false });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`/admin/users/${user.id}/unlock`);
  });

  it.runIf(redisUrl)(
    'reset-mfa clears the second-factor lock its guessers left, so the user can set up a new app (Redis)',
    async () => {
      const user = await fresh('mfalock');
      /** Sets up an authenticator app with the password alone (no factor yet); returns its confirmation's answer. */
      const enrol = async () => {
        const token = await login(ctx, user.username, user.password);
        const auth = { authorization: `Bearer ${token}` };
        const started = await postJson(ctx.url('/users/me/mfa/totp'), { password: user.password }, auth);
        expect(started.status, started.text).toBe(200);
        return postJson(
          ctx.url('/users/me/mfa/totp/confirm'),
          { code: generateSync({ secret: started.json.secret }) },
          auth,
        );
      };
      expect((await enrol()).status).toBe(200);
      for (let round = 0; round < 2; round += 1) {
        const required = await postForm(ctx.url('/token'), {
          username: user.username,
          password: user.password,
        });
        expect(required.status, required.text).toBe(403);
        for (let attempt = 0; attempt < 5; attempt += 1) {
          const wrong = await postForm(ctx.url('/token'), {
            grant_type: 'urn:gatehouse:params:oauth:grant-type:mfa',
            mfa_token: required.json.mfa_token,
            otp: '000000',
          });
          expect(wrong.status).toBe(400);
        }
      }
      const reset = await json(['users', 'reset-mfa', user.username]);
      expect(reset).toMatchObject({ username: user.username, second_factor_lock_cleared: true });
      // Still locked, the new app's right code would be refused for 15 minutes.
      const again = await enrol();
      expect(again.status, again.text).toBe(200);
    },
  );

  it('reset-mfa says where the second-factor lock is cleared when it cannot reach it (no REDIS_URL)', async () => {
    const user = await fresh('mfamemory');
    const result = await gatehouse(['users', 'reset-mfa', user.username], { redis: false });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`/admin/users/${user.id}/unlock`);
  });

  it('lists, rotates and retires signing keys as before', async () => {
    const before = await json(['keys', 'list']);
    expect(before.keys.filter((key: { state: string }) => key.state === 'signing')).toHaveLength(1);
    const rotated = await gatehouse(['keys', 'rotate']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const newKid = /new signing key (\S+):/.exec(rotated.stdout)?.[1];
    const table = await gatehouse(['keys', 'list']);
    expect(table.stdout).toMatch(/^KID\s+ALGORITHM\s+STATE\s+CREATED\s+RETIRED$/m);
    expect(table.stdout).toContain(`${newKid}`);
    const signing = await gatehouse(['keys', 'retire', newKid ?? '']);
    expect(signing.code).toBe(1);
    expect(signing.stderr).toContain('rotate first');
  });

  // Found from outside: with another secret than the servers', `keys rotate` made a key none of them could open, and
  // every next start was refused for it.
  it('refuses to rotate with a GATEHOUSE_SECRET that does not open the keys in use, and makes no key', async () => {
    const before = await json(['keys', 'list']);
    const stranger = await run(process.execPath, ['bin/gatehouse.js', 'keys', 'rotate'], {
      DATABASE_URL: ctx.db.url,
      GATEHOUSE_SECRET: randomBytes(32).toString('base64url'),
      ...FAST_ARGON2,
    });
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(/does not open signing key/);
    expect((await json(['keys', 'list'])).keys).toEqual(before.keys);
  });
});

// Found from outside: pointed at an existing but empty PostgreSQL database (a typo naming another one), `users list`
// made every table there and said "No users".
describe('gatehouse on a PostgreSQL database that holds no Gatehouse tables', () => {
  it.each([
    ['users', 'list'],
    ['keys', 'list'],
    ['mail', 'list'],
  ])('%s %s refuses with exit 1 and creates nothing; migrate creates the tables', async (...args) => {
    const database = await createDatabase('postgres');
    try {
      const env = { DATABASE_URL: database.url, GATEHOUSE_SECRET, ...FAST_ARGON2 };
      const result = await run(process.execPath, ['bin/gatehouse.js', ...args], env);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toMatch(/no Gatehouse database/i);
      expect(result.stderr).toMatch(/gatehouse migrate/);
      const client = new pg.Client(database.url);
      await client.connect();
      try {
        const tables = await client.query(
          "select table_name from information_schema.tables where table_schema = 'public'",
        );
        expect(tables.rows).toEqual([]);
      } finally {
        await client.end();
      }
      const migrated = await run(process.execPath, ['bin/gatehouse.js', 'migrate'], env);
      expect(migrated.code, migrated.stderr).toBe(0);
      const listed = await run(process.execPath, ['bin/gatehouse.js', 'users', 'list'], env);
      expect(listed.code, listed.stderr).toBe(0);
    } finally {
      await database.drop();
    }
  });
});

// Found by a reviewer: pointed at a SQLite path with no database (a typo in DATABASE_URL, the wrong directory), a
// command that reads or changes users made an empty database and a secret.key there, and `users list` said "No
// users", as if every account were gone.
describe('gatehouse on a SQLite path with no database', () => {
  const bin = (args: string[], file: string) =>
    run(process.execPath, ['bin/gatehouse.js', ...args], { DATABASE_URL: `sqlite:${file}`, ...FAST_ARGON2 });

  it.each([
    ['users', 'list'],
    ['users', 'show', 'alice'],
    ['users', 'disable', 'alice'],
    ['sessions', 'list', '--user', 'alice'],
    ['mail', 'list'],
    ['keys', 'list'],
    ['keys', 'rotate'],
    ['secret', 'rotate'],
  ])('%s %s refuses with exit 1, naming the path, and creates nothing', async (...args) => {
    const directory = mkdtempSync(path.join(os.tmpdir(), 'gh-cli-missing-'));
    try {
      const file = path.join(directory, 'typo', 'gatehouse.db');
      const result = await bin(args, file);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toContain(file);
      expect(result.stderr).toMatch(/no database/i);
      expect(result.stdout).toBe('');
      expect(readdirSync(directory)).toEqual([]);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  // Found from outside: an empty file there (a `touch`, a copy that failed) was migrated by a read command.
  it('refuses an empty file there as no database, and leaves it empty', async () => {
    const directory = mkdtempSync(path.join(os.tmpdir(), 'gh-cli-missing-'));
    try {
      const file = path.join(directory, 'gatehouse.db');
      writeFileSync(file, '');
      const result = await bin(['users', 'list'], file);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toContain(file);
      expect(result.stderr).toMatch(/no database/i);
      expect(statSync(file).size).toBe(0);
      expect(readdirSync(directory)).toEqual(['gatehouse.db']);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it('migrate creates it, as the server does', async () => {
    const directory = mkdtempSync(path.join(os.tmpdir(), 'gh-cli-missing-'));
    try {
      const file = path.join(directory, 'gatehouse.db');
      const result = await bin(['migrate'], file);
      expect(result.code, result.stderr).toBe(0);
      expect(existsSync(file)).toBe(true);
      const listed = await bin(['users', 'list'], file);
      expect(listed.code, listed.stderr).toBe(0);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
