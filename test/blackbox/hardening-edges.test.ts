/**
 * Hardening issue, part 5: framework errors through the one error table with the standard headers, deterministic
 * conflict field, HS256 secret decoding and kid, canonical base64url signatures, request time limits, /docs CSP,
 * logs, compare-and-swap on DELETE /users/me, and seed-users on a database with real users.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { DatabaseSync } from 'node:sqlite';
import { hashSync as bcryptHash } from '@node-rs/bcrypt';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  expectInvalidToken,
  getWithToken,
  header,
  login,
  postForm,
  postJson,
  type RawReply,
  type RegisteredUser,
  rawHead,
  rawHttp,
  registerUser,
  request,
  splitToken,
  strongPassword,
  uniqueName,
} from './support/client.ts';
import {
  COMPILE_CACHE,
  createDatabase,
  DIALECTS,
  ROOT,
  type RunningServer,
  runUntilExit,
  type ServerContext,
  setPasswordHash,
  startServer,
  type TestDatabase,
  useServer,
} from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const STANDARD = ['x-content-type-options', 'referrer-policy', 'cache-control'] as const;

describe('framework errors go through the one error table, with the standard headers (sqlite)', () => {
  const ctx = useServer('sqlite');
  const normal: Record<string, string> = {};
  beforeAll(async () => {
    const r = await request(ctx.url(`/no-such-route-${uniqueName()}`));
    expect(r.status).toBe(404);
    for (const h of STANDARD) normal[h] = r.headers.get(h) ?? '';
    expect(normal['x-content-type-options']).toBe('nosniff');
  });
  const expectStandard = (r: RawReply, what: string) => {
    expect(header(r, 'x-request-id'), `${what}: x-request-id`).toBeTruthy();
    for (const h of STANDARD) expect(header(r, h), `${what}: ${h}`).toBe(normal[h]);
    expect(header(r, 'content-type') ?? '', what).toMatch(/^application\/json/);
  };
  const raw = (method: string, p: string) => rawHttp(ctx.server.port, rawHead(method, p, []));

  it.each(['/%zz', '/users/%zz', '/register/%E0%A4%A'])(
    'GET %s: a FastAPI-shaped error, no FST_ERR code',
    async (p) => {
      const r = await raw('GET', p);
      expect(r.status, r.body).toBeGreaterThanOrEqual(400);
      expect(r.status, r.body).toBeLessThan(500);
      expect(r.body).not.toMatch(/FST_ERR|statusCode/);
      expect(JSON.parse(r.body)).toHaveProperty('detail');
      expectStandard(r, p);
    },
  );

  it('GET /docs/static/../../../package.json is a 404 with the standard headers, not a 422 JSON decode error', async () => {
    const r = await raw('GET', '/docs/static/../../../package.json');
    expect(r.status, r.body).toBe(404);
    expect(r.body).not.toContain('"gatehouse"');
    expect(JSON.parse(r.body)).toHaveProperty('detail');
    expectStandard(r, 'dot-dot path');
  });

  it.each(['GET', 'HEAD'])(
    '%s of a missing static file under /docs is a 404 (not 405) with the standard headers',
    async (method) => {
      const r = await raw(method, `/docs/static/no-such-file-${uniqueName()}.js`);
      expect(r.status, r.body).toBe(404);
      expect(header(r, 'allow')).toBeUndefined();
      for (const h of STANDARD) expect(header(r, h), h).toBe(normal[h]);
      expect(header(r, 'x-request-id')).toBeTruthy();
    },
  );

  it('/docs has no upgrade-insecure-requests and no third-party validator image', async () => {
    for (const p of ['/docs', '/docs/static/index.html', '/docs/static/swagger-initializer.js']) {
      const r = await request(ctx.url(p));
      const csp = r.headers.get('content-security-policy') ?? '';
      expect(csp, p).not.toMatch(/upgrade-insecure-requests/i);
      expect(csp, p).not.toMatch(/validator\.swagger\.io/i);
      expect(r.text, p).not.toMatch(/validator\.swagger\.io/i);
    }
  });
});

describe.each(DIALECTS)('conflicts report the username first (%s)', (dialect) => {
  const ctx = useServer(dialect);
  it('a registration with both a taken username and a taken email answers 409 username_taken', async () => {
    const a = await registerUser(ctx);
    const b = await registerUser(ctx);
    for (const [username, email] of [
      [a.username, a.email],
      [a.username.toUpperCase(), a.email.toUpperCase()],
      [a.username, b.email],
    ] as const) {
      const r = await postJson(ctx.url('/register/'), {
        username,
        email,
        password: strongPassword(),
        age: 30,
        level: 'beginner',
      });
      expect(r.status, r.text).toBe(409);
      expect(r.json.code, `${username} / ${email}: ${r.text}`).toBe('username_taken');
    }
  });
});

describe('HS256 secrets are decoded bytes, and the kid does not fingerprint the secret', () => {
  const dbs: TestDatabase[] = [];
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });

  it('refuses the passphrase abcdefghijklmnopqrstuvwxyz012345 and a phrase with spaces, naming JWT_SECRET', async () => {
    const db = await createDatabase('sqlite');
    dbs.push(db);
    const results = await Promise.all(
      ['abcdefghijklmnopqrstuvwxyz012345', 'a long passphrase with spaces is not random bytes'].map(
        async (s) => ({
          s,
          r: await runUntilExit({ DATABASE_URL: db.url, JWT_ALGORITHM: 'HS256', JWT_SECRET: s }, 10_000),
        }),
      ),
    );
    for (const { s, r } of results) {
      expect.soft(r.timedOut, `${s}: the server started`).toBe(false);
      expect.soft(r.code, `${s}: ${r.output.slice(-500)}`).not.toBe(0);
      expect.soft(r.output, s).toContain('JWT_SECRET');
    }
  });

  const bytes = randomBytes(32);
  it.each([
    ['base64url', bytes.toString('base64url')],
    ['base64', randomBytes(33).toString('base64')],
    ['hex', bytes.toString('hex')],
  ])(
    'accepts 32 random bytes in %s; the kid is no prefix of sha256(secret); non-canonical signatures are refused',
    async (_enc, secret) => {
      const db = await createDatabase('sqlite');
      dbs.push(db);
      const server = await startServer({
        databaseUrl: db.url,
        env: { JWT_ALGORITHM: 'HS256', JWT_SECRET: secret },
      });
      try {
        const ctx: ServerContext = {
          server,
          db,
          secrets: new Set(),
          track: (x) => x,
          url: (p) => server.url(p),
        };
        const u = await registerUser(ctx);
        const token = await login(ctx, u.username, u.password);
        // The part after any prefix such as `hs256-` is what could fingerprint the secret.
        const kid = String(splitToken(token).header.kid ?? '').replace(/^[a-z0-9]+-/, '');
        const digests = [Buffer.from(secret, 'utf8')];
        for (const enc of ['base64url', 'base64', 'hex'] as const) digests.push(Buffer.from(secret, enc));
        for (const input of digests) {
          const d = createHash('sha256').update(input).digest();
          for (const form of [d.toString('hex'), d.toString('base64'), d.toString('base64url')]) {
            if (kid.length > 0)
              expect(form.startsWith(kid), `kid ${kid} is a prefix of sha256(secret)`).toBe(false);
          }
        }
        await expectNonCanonicalRefused(server, token);
      } finally {
        await server.stop();
      }
    },
  );
});

/** Rewrites the signature's last character to others that decode to the same bytes; each must be refused. */
async function expectNonCanonicalRefused(server: RunningServer, token: string): Promise<void> {
  const ok = await getWithToken(server.url('/conversation'), token);
  expect(ok.status, ok.text).toBe(200);
  const [h, p, sig = ''] = token.split('.');
  const bytes = Buffer.from(sig, 'base64url');
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const variants = [...alphabet]
    .map((c) => sig.slice(0, -1) + c)
    .filter((s) => s !== sig && Buffer.from(s, 'base64url').equals(bytes));
  expect(variants.length, 'no non-canonical spelling exists: the check would be vacuous').toBeGreaterThan(0);
  for (const v of variants.slice(0, 4)) {
    expectInvalidToken(
      await getWithToken(server.url('/conversation'), `${h}.${p}.${v}`),
      `signature …${v.slice(-3)}`,
    );
  }
}

describe('EdDSA access tokens with a non-canonical base64url signature are refused (sqlite)', () => {
  const ctx = useServer('sqlite');
  it('refuses every other last character that decodes to the same signature bytes', async () => {
    const u = await registerUser(ctx);
    const token = await login(ctx, u.username, u.password);
    await expectNonCanonicalRefused(ctx.server, token);
  });
});

describe('request time limits: a dripping client is cut off by 30 s (sqlite)', () => {
  const ctx = useServer('sqlite');
  it('drips of headers and of a body are both closed within 30 s (+ margin)', {
    timeout: 60_000,
  }, async () => {
    const drip = (initial: string, byte: string) =>
      new Promise<number>((resolve) => {
        const t0 = Date.now();
        const sock = net.connect(ctx.server.port, '127.0.0.1');
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          clearInterval(timer);
          clearTimeout(cap);
          sock.destroy();
          resolve((Date.now() - t0) / 1000);
        };
        sock.on('data', finish);
        sock.on('end', finish);
        sock.on('close', finish);
        sock.on('error', finish);
        sock.write(initial);
        const timer = setInterval(() => {
          if (!sock.destroyed) sock.write(byte);
        }, 1000);
        const cap = setTimeout(finish, 45_000);
      });
    const [headers, body] = await Promise.all([
      drip('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ', 'a'),
      drip(rawHead('POST', '/register/', ['Content-Type: application/json'], 4000), ' '),
    ]);
    expect(headers, `header drip cut after ${headers} s`).toBeLessThanOrEqual(36);
    expect(body, `body drip cut after ${body} s`).toBeLessThanOrEqual(36);
    const h = await request(ctx.url('/healthz'));
    expect(h.status).toBe(200);
  });
});

describe('logs (sqlite)', () => {
  const ctx = useServer('sqlite');
  const lines = () =>
    ctx.server
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  it('a failed login logs the submitted username only when it is a syntactically valid username', async () => {
    const typedPassword = `my secret ${randomBytes(6).toString('hex')} pass!`;
    await postForm(ctx.url('/token'), { username: typedPassword, password: 'whatever password' });
    const valid = uniqueName('nobody');
    await postForm(ctx.url('/token'), { username: valid, password: 'whatever password' });
    await new Promise((r) => setTimeout(r, 200));
    expect(ctx.server.output()).not.toContain(typedPassword);
    const failed = lines().filter((l) => l.event === 'login_failed');
    expect(
      failed.some((l) => l.username === valid),
      'a valid attempted username is still logged',
    ).toBe(true);
  });

  it('user_registered carries the client IP; login_succeeded comes after the session exists', async () => {
    const u = await registerUser(ctx);
    await login(ctx, u.username, u.password);
    await new Promise((r) => setTimeout(r, 200));
    const all = lines();
    const reg = all.find((l) => l.event === 'user_registered' && l.userId === u.id);
    expect(reg, 'user_registered line').toBeDefined();
    expect(reg?.ip).toBe('127.0.0.1');
    const iSucc = all.findIndex((l) => l.event === 'login_succeeded' && l.userId === u.id);
    const iSess = all.findIndex((l) => l.event === 'session_started' && l.userId === u.id);
    expect(iSucc).toBeGreaterThanOrEqual(0);
    expect(iSess).toBeGreaterThanOrEqual(0);
    expect(iSucc, 'login_succeeded must be logged after session_started').toBeGreaterThan(iSess);
  });
});

describe.each(DIALECTS)('DELETE /users/me cannot race a password change (%s)', (dialect) => {
  it('never answers 204 to both a password change and a deletion that verified the old password', {
    timeout: 90_000,
  }, async () => {
    const db = await createDatabase(dialect);
    let server = await startServer({ databaseUrl: db.url });
    try {
      let ctx: ServerContext = { server, db, secrets: new Set(), track: (x) => x, url: (p) => server.url(p) };
      const oldPassword = `old ${strongPassword()}`;
      const users: { u: RegisteredUser; token: string }[] = [];
      for (let i = 0; i < 4; i++) {
        const u = await registerUser(ctx);
        users.push({ u, token: await login(ctx, u.username, u.password) });
      }
      await server.stop();
      // a slow (bcrypt, cost 12) hash widens the window between verifying the password and writing
      await setPasswordHash(
        db,
        users.map((x) => x.u.id),
        bcryptHash(oldPassword, 12),
      );
      server = await startServer({ databaseUrl: db.url });
      ctx = { server, db, secrets: new Set(), track: (x) => x, url: (p) => server.url(p) };
      const both: string[] = [];
      const delays = [0, 80, 160, 240];
      await Promise.all(
        users.map(async ({ u, token }, i) => {
          const auth = { authorization: `Bearer ${token}` };
          const change = postJson(
            server.url('/users/me/password'),
            { current_password: oldPassword, new_password: `new ${strongPassword()}` },
            auth,
          );
          await new Promise((r) => setTimeout(r, delays[i] ?? 0));
          const del = request(server.url('/users/me'), {
            method: 'DELETE',
            headers: { 'content-type': 'application/json', ...auth },
            body: JSON.stringify({ password: oldPassword }),
          });
          const [c, d] = await Promise.all([change, del]);
          if (c.status === 204 && d.status === 204) both.push(`${u.username} (delay ${delays[i]} ms)`);
        }),
      );
      expect(both, 'a deletion verified against the old hash committed after the password change').toEqual(
        [],
      );
    } finally {
      await server.stop();
      await db.drop();
    }
  });
});

describe.each(DIALECTS)('seed-users on a database with real users (%s)', (dialect) => {
  it('refuses (non-zero, saying so) or gives each seeded user a random password', {
    timeout: 90_000,
  }, async () => {
    const db = await createDatabase(dialect);
    let server = await startServer({ databaseUrl: db.url });
    try {
      const ctx: ServerContext = {
        server,
        db,
        secrets: new Set(),
        track: (x) => x,
        url: (p) => server.url(p),
      };
      const registered = await registerUser(ctx);
      const stopped = await server.stop();
      // A CI run once saw seed-users count no real user here: this tells a registration missing from the file apart
      // from a command that did not see it.
      expect(stopped, server.output().slice(-2000)).toEqual({ code: 0, signal: null });
      if (db.sqlitePath) {
        const file = new DatabaseSync(db.sqlitePath, { readOnly: true });
        try {
          const row = file.prepare('SELECT count(*) AS n FROM users WHERE id = ?').get(registered.id);
          expect(row?.n, 'the registration is in the database file').toBe(1);
        } finally {
          file.close();
        }
      }
      const proc = spawn(process.execPath, ['src/main.ts', 'seed-users', '--count', '12'], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          ...COMPILE_CACHE,
          DATABASE_URL: db.url,
          GATEHOUSE_SECRET:
            process.env.GATEHOUSE_SECRET ?? (await import('./support/server.ts')).GATEHOUSE_SECRET,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      proc.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      proc.stderr?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
      const code = await new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
      clearTimeout(timer);
      server = await startServer({ databaseUrl: db.url });
      const known = await Promise.all(
        Array.from({ length: 12 }, (_, n) =>
          postForm(server.url('/token'), {
            username: `seed-${n.toString(36)}`,
            password: 'seeded user password 0001',
          }),
        ),
      );
      const loggedIn = known.filter((r) => r.status === 200).length;
      if (code !== 0) {
        expect(out.trim().length, 'a refusal must say why').toBeGreaterThan(0);
        expect(out, 'the refusal should be about existing users').toMatch(/user/i);
      }
      expect(
        loggedIn,
        `seeded users log in with the shared published password (exit ${code}):\n${out.slice(-600)}`,
      ).toBe(0);
    } finally {
      await server.stop();
      await db.drop();
    }
  });
});
