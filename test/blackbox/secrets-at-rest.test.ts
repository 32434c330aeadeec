/**
 * Issue 9 §1 from outside: file permissions of the embedded database, the key-encryption secret made on first start
 * beside it, the refusal to start on PostgreSQL without GATEHOUSE_SECRET, and `secret rotate` through the CLI.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { generateSync } from 'otplib';
import { afterAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { getWithToken, login, postForm, postJson, registerUser } from './support/client.ts';
import {
  COMPILE_CACHE,
  createDatabase,
  ROOT,
  type RunningServer,
  runUntilExit,
  startServer,
} from './support/server.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function freshDataDirectory(): { root: string; data: string; databaseUrl: string } {
  const root = mkdtempSync(path.join(os.tmpdir(), 'gh_secrets_'));
  directories.push(root);
  const data = path.join(root, 'data');
  return { root, data, databaseUrl: `sqlite:${path.join(data, 'gatehouse.db')}` };
}

const mode = (file: string) => statSync(file).mode & 0o777;
const context = (server: RunningServer) => ({
  url: (p: string) => server.url(p),
  track: (s: string) => s,
});

/** Starts a server, registers a user and logs in; returns the access token and the stopped server. */
async function tokenFromAStoppedServer(databaseUrl: string, env: Record<string, string | undefined>) {
  const server = await startServer({ databaseUrl, env });
  const ctx = context(server);
  const user = await registerUser(ctx as never);
  const token = await login(ctx as never, user.username, user.password);
  await server.stop();
  return { token, server };
}

function cli(env: Record<string, string>, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['src/main.ts', ...args],
      {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...COMPILE_CACHE, ...env },
        timeout: 30_000,
      },
      (error, stdout, stderr) =>
        resolve({
          code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
          out: `${stdout}${stderr}`,
        }),
    );
  });
}

describe('the embedded database without GATEHOUSE_SECRET', () => {
  it('creates data/ 0700, the database 0600 and a secret.key 0600 that a restart reuses', async () => {
    const { data, databaseUrl } = freshDataDirectory();
    const env = { GATEHOUSE_SECRET: undefined };
    const { token, server: first } = await tokenFromAStoppedServer(databaseUrl, env);
    expect(mode(data)).toBe(0o700);
    expect(mode(path.join(data, 'gatehouse.db'))).toBe(0o600);
    const secretFile = path.join(data, 'secret.key');
    expect(mode(secretFile)).toBe(0o600);
    const secret = readFileSync(secretFile, 'utf8').trim();
    expect(Buffer.from(secret, 'base64url').length).toBeGreaterThanOrEqual(32);
    expect(first.output()).toContain('secret.key');
    expect(first.output()).not.toContain(secret);

    const database = new DatabaseSync(path.join(data, 'gatehouse.db'), { readOnly: true });
    const rows = database.prepare('select private_jwk from signing_keys').all() as { private_jwk: string }[];
    database.close();
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) expect(row.private_jwk).not.toMatch(/"d"/);

    const second = await startServer({ databaseUrl, env });
    try {
      expect(readFileSync(secretFile, 'utf8').trim()).toBe(secret);
      expect((await getWithToken(second.url('/conversation'), token)).status).toBe(200);
    } finally {
      await second.stop();
    }
  });

  it('tightens an existing database directory and files that others can read, with a warning', async () => {
    const { data, databaseUrl } = freshDataDirectory();
    const first = await startServer({ databaseUrl, env: { GATEHOUSE_SECRET: undefined } });
    await first.stop();
    chmodSync(data, 0o755);
    chmodSync(path.join(data, 'gatehouse.db'), 0o644);
    chmodSync(path.join(data, 'secret.key'), 0o644);
    const second = await startServer({ databaseUrl, env: { GATEHOUSE_SECRET: undefined } });
    await second.stop();
    expect(mode(data)).toBe(0o700);
    expect(mode(path.join(data, 'gatehouse.db'))).toBe(0o600);
    expect(mode(path.join(data, 'secret.key'))).toBe(0o600);
    expect(second.output()).toMatch(/warning: .*data was readable by other users/);
  });

  // Found from outside: `DATABASE_URL=sqlite:/etc/passwd gatehouse users list` made /etc/passwd 0600 (and, without
  // GATEHOUSE_SECRET, a secret.key in /etc) before saying the file was no database.
  it('changes nothing beside a file that is no SQLite database: no chmod, no secret.key, and says why', async () => {
    const { root } = freshDataDirectory();
    const notDatabase = path.join(root, 'notes.txt');
    writeFileSync(notDatabase, 'hello, not a database\n');
    chmodSync(notDatabase, 0o644);
    const databaseUrl = `sqlite:${notDatabase}`;
    const listed = await cli({ DATABASE_URL: databaseUrl }, ['users', 'list']);
    expect(listed.code).toBe(1);
    const served = await runUntilExit({ DATABASE_URL: databaseUrl, GATEHOUSE_SECRET: undefined });
    expect(served.code).toBe(1);
    const withSecret = await cli(
      { DATABASE_URL: databaseUrl, GATEHOUSE_SECRET: randomBytes(32).toString('base64url') },
      ['users', 'list'],
    );
    expect(withSecret.code).toBe(1);
    for (const output of [listed.out, served.output, withSecret.out])
      expect(output).toMatch(/notes\.txt is not a SQLite database/);
    expect(mode(notDatabase)).toBe(0o644);
    expect(readFileSync(notDatabase, 'utf8')).toBe('hello, not a database\n');
    expect(readdirSync(root).sort()).toEqual(['notes.txt']);
  });

  it('leaves a shared directory as it is, and warns', async () => {
    const { root } = freshDataDirectory();
    chmodSync(root, 0o755);
    writeFileSync(path.join(root, 'someone-elses-file'), 'x');
    const server = await startServer({ databaseUrl: `sqlite:${path.join(root, 'gatehouse.db')}` });
    await server.stop();
    expect(mode(root)).toBe(0o755);
    expect(mode(path.join(root, 'gatehouse.db'))).toBe(0o600);
    expect(server.output()).toMatch(/readable by other users .* left as it is/);
  });

  // Found from outside: one `secret rotate` left only the new secret in the file while the server still sealed with
  // the old one in memory; what it sealed before its restart (a mail, an authenticator app) could never be opened.
  it('rotates secret.key in two runs around a restart, as GATEHOUSE_SECRET rotates, losing nothing sealed between', {
    timeout: 150_000,
  }, async () => {
    const { data, databaseUrl } = freshDataDirectory();
    const env = { GATEHOUSE_SECRET: undefined };
    const secretFile = path.join(data, 'secret.key');
    const running = await startServer({ databaseUrl, env });
    // Stopped below; this stops it too when an expectation fails first.
    onTestFinished(async () => {
      await running.stop();
    });
    const user = await registerUser(context(running) as never);
    const token = await login(context(running) as never, user.username, user.password);
    // An authenticator app sealed with the old secret, which the running server alone holds.
    const auth = { authorization: `Bearer ${token}` };
    const started = await postJson(running.url('/users/me/mfa/totp'), { password: user.password }, auth);
    expect(started.status, started.text).toBe(200);
    const secret = started.json.secret as string;
    const confirmed = await postJson(
      running.url('/users/me/mfa/totp/confirm'),
      { code: generateSync({ secret }) },
      auth,
    );
    expect(confirmed.status, confirmed.text).toBe(200);
    /** A whole login with the app's code, on `server`: 200, or what it answered. */
    // A code is taken once (the enrolment took the current step's): each login takes the next step's, within the one
    // step of drift allowed.
    const loginWithApp = async (server: RunningServer) => {
      const first = await postForm(server.url('/token'), {
        username: user.username,
        password: user.password,
      });
      expect(first.status, first.text).toBe(403);
      const second = await postForm(server.url('/token'), {
        grant_type: 'urn:gatehouse:params:oauth:grant-type:mfa',
        mfa_token: first.json.mfa_token,
        otp: generateSync({ secret, epoch: Math.floor(Date.now() / 1000) + 30 }),
      });
      return second.status;
    };
    const before = readFileSync(secretFile, 'utf8').trim();

    const first = await cli({ DATABASE_URL: databaseUrl }, ['secret', 'rotate']);
    expect(first.code, first.out).toBe(0);
    expect(first.out).toMatch(/restart/i);
    const during = readFileSync(secretFile, 'utf8').trim().split(',');
    expect(during).toHaveLength(2);
    expect(during[1]).toBe(before);
    expect(mode(secretFile)).toBe(0o600);
    // Until its restart the server holds the old secret alone: what it must open stays sealed with that one.
    expect(await loginWithApp(running)).toBe(200);

    // Sealed by the server still running on the old secret alone.
    const forgot = await fetch(running.url('/password/forgot'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: user.email }),
    });
    expect(forgot.status).toBe(202);
    await running.stop();
    const mails = JSON.parse((await cli({ DATABASE_URL: databaseUrl }, ['mail', 'list', '--json'])).out);
    const mailId = String(mails.mails[0].id);

    const restarted = await startServer({ databaseUrl, env });
    try {
      expect((await getWithToken(restarted.url('/conversation'), token)).status).toBe(200);
      const second = await cli({ DATABASE_URL: databaseUrl }, ['secret', 'rotate']);
      expect(second.code, second.out).toBe(0);
      expect(readFileSync(secretFile, 'utf8').trim()).toBe(during[0]);
      const shown = await cli({ DATABASE_URL: databaseUrl }, ['mail', 'show', mailId]);
      expect(shown.code, shown.out).toBe(0);
      expect(shown.out).toMatch(/password\/reset|reset/i);
      // The next step's code was taken by the first login: this one waits for a step of its own.
      await new Promise((resolve) => setTimeout(resolve, 30_000 - (Date.now() % 30_000) + 500));
      expect(await loginWithApp(restarted)).toBe(200);
    } finally {
      await restarted.stop();
    }
    const last = await startServer({ databaseUrl, env });
    try {
      expect((await getWithToken(last.url('/conversation'), token)).status).toBe(200);
    } finally {
      await last.stop();
    }
  });
});

describe('PostgreSQL and GATEHOUSE_SECRET', () => {
  it('refuses to start without GATEHOUSE_SECRET and shows how to make one', async () => {
    const database = await createDatabase('postgres');
    try {
      const result = await runUntilExit({ DATABASE_URL: database.url, GATEHOUSE_SECRET: undefined });
      expect(result.timedOut).toBe(false);
      expect(result.code).toBe(1);
      expect(result.output).toMatch(/GATEHOUSE_SECRET is required/);
      expect(result.output).toMatch(/randomBytes\(32\)\.toString\('base64url'\)|secret generate/);
    } finally {
      await database.drop();
    }
  });

  it('rotates GATEHOUSE_SECRET with "new,old" and `secret rotate`, then serves with the new one alone', async () => {
    const database = await createDatabase('postgres');
    const oldSecret = randomBytes(32).toString('base64url');
    const generated = await cli({}, ['secret', 'generate']);
    const newSecret = generated.out.trim();
    expect(Buffer.from(newSecret, 'base64url').length).toBe(32);
    try {
      const { token } = await tokenFromAStoppedServer(database.url, { GATEHOUSE_SECRET: oldSecret });

      const alone = await cli({ DATABASE_URL: database.url, GATEHOUSE_SECRET: newSecret }, [
        'secret',
        'rotate',
      ]);
      expect(alone.code).toBe(1);
      const rotated = await cli(
        { DATABASE_URL: database.url, GATEHOUSE_SECRET: `${newSecret},${oldSecret}` },
        ['secret', 'rotate'],
      );
      expect(rotated.code, rotated.out).toBe(0);
      expect(rotated.out).not.toContain(newSecret);

      const refused = await runUntilExit({ DATABASE_URL: database.url, GATEHOUSE_SECRET: oldSecret });
      expect(refused.code).toBe(1);
      expect(refused.output).toMatch(/cannot be decrypted/);

      const second = await startServer({ databaseUrl: database.url, env: { GATEHOUSE_SECRET: newSecret } });
      try {
        expect((await getWithToken(second.url('/conversation'), token)).status).toBe(200);
      } finally {
        await second.stop();
      }
    } finally {
      await database.drop();
    }
  });
});
