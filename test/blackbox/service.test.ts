import { readdirSync, readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify } from 'jose';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  expectJsonContentType,
  expectLogsFreeOf,
  getWithToken,
  type Json,
  login,
  registerUser,
  request,
} from './support/client.ts';
import {
  createDatabase,
  DIALECTS,
  PG_ADMIN_URL,
  type RunningServer,
  startServer,
  useServer,
} from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

describe.each(DIALECTS)('service endpoints (%s)', (dialect) => {
  const ctx = useServer(dialect);

  describe('health', () => {
    it('GET /healthz answers 200 JSON', async () => {
      const r = await request(ctx.url('/healthz'));
      expect(r.status).toBe(200);
      expectJsonContentType(r);
    });

    it('GET /readyz answers 200 JSON while the database is reachable', async () => {
      const r = await request(ctx.url('/readyz'));
      expect(r.status).toBe(200);
      expectJsonContentType(r);
    });

    it('health replies carry nosniff and no X-Powered-By', async () => {
      const r = await request(ctx.url('/healthz'));
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      expect(r.headers.get('x-powered-by')).toBeNull();
    });
  });

  describe('JWKS', () => {
    it('publishes Ed25519 public keys only, with unique kids, alg and use (checklist 55)', async () => {
      const r = await request(ctx.url('/.well-known/jwks.json'));
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type') ?? '').toMatch(/^application\/(jwk-set\+)?json/);
      const keys = r.json.keys as Json[];
      expect(Array.isArray(keys)).toBe(true);
      expect(keys.length).toBeGreaterThan(0);
      for (const k of keys) {
        expect(k.kty).toBe('OKP');
        expect(k.crv).toBe('Ed25519');
        expect(typeof k.x).toBe('string');
        expect(typeof k.kid).toBe('string');
        for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(k).not.toHaveProperty(priv);
      }
      expect(new Set(keys.map((k) => k.kid)).size).toBe(keys.length);
      for (const k of keys) {
        expect(k.alg).toBe('EdDSA');
        expect(k.use).toBe('sig');
      }
    });

    it('is cacheable for a bounded time (Cache-Control max-age)', async () => {
      const r = await request(ctx.url('/.well-known/jwks.json'));
      expect(r.headers.get('cache-control') ?? '').toMatch(/max-age=\d+/);
    });

    it('shares the signing key with a second instance on the same database (and across restarts)', async () => {
      const u = await registerUser(ctx);
      const t = await login(ctx, u.username, u.password);
      const second = await startServer({ databaseUrl: ctx.db.url });
      try {
        const jwksA = (await request(ctx.url('/.well-known/jwks.json'))).json;
        const jwksB = (await request(second.url('/.well-known/jwks.json'))).json;
        expect((jwksB.keys as Json[]).map((k) => k.kid).sort()).toEqual(
          (jwksA.keys as Json[]).map((k) => k.kid).sort(),
        );
        const r = await getWithToken(second.url('/conversation'), t);
        expect(r.status, r.text).toBe(200);
        expect(r.json.current_user).toBe(u.username);
        // a token from B verifies with A's published keys
        const tb = (
          await request(second.url('/token'), {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ username: u.username, password: u.password }).toString(),
          })
        ).json.access_token as string;
        ctx.track(tb);
        await jwtVerify(tb, createLocalJWKSet(jwksA), { algorithms: ['EdDSA'], typ: 'at+jwt' });
        expect((await getWithToken(ctx.url('/conversation'), tb)).status).toBe(200);
      } finally {
        const exit = await second.stop();
        expect(exit.code).toBe(0);
      }
    });
  });

  it('refuses a token from an instance with another issuer/audience on the same key (RFC 8725 §3.8, §3.9)', async () => {
    const u = await registerUser(ctx);
    const mine = await login(ctx, u.username, u.password);
    const other = await startServer({
      databaseUrl: ctx.db.url,
      env: { JWT_ISSUER: 'https://other.example', JWT_AUDIENCE: 'other-api' },
    });
    try {
      const tr = await request(other.url('/token'), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ username: u.username, password: u.password }).toString(),
      });
      expect(tr.status).toBe(200);
      const theirs = ctx.track(tr.json.access_token as string);
      const a = await getWithToken(other.url('/conversation'), mine);
      expect(a.status).toBe(401);
      expect(a.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
      const b = await getWithToken(ctx.url('/conversation'), theirs);
      expect(b.status).toBe(401);
      expect(b.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
    } finally {
      await other.stop();
    }
  });

  describe('OpenAPI and docs', () => {
    it('serves /openapi.json with the three paths and an OAuth2 password flow with tokenUrl /token', async () => {
      const r = await request(ctx.url('/openapi.json'));
      expect(r.status).toBe(200);
      expectJsonContentType(r);
      const doc = r.json as Json;
      expect(String(doc.openapi ?? doc.swagger)).toMatch(/^3\./);
      const paths = Object.keys(doc.paths ?? {});
      expect(paths.some((p) => p === '/register/' || p === '/register')).toBe(true);
      expect(paths).toContain('/token');
      expect(paths).toContain('/conversation');
      const schemes = Object.values(doc.components?.securitySchemes ?? {}) as Json[];
      const oauth = schemes.find((s) => s.type === 'oauth2' && s.flows?.password);
      expect(oauth, JSON.stringify(doc.components?.securitySchemes)).toBeDefined();
      expect(oauth?.flows.password.tokenUrl).toMatch(/^(https?:\/\/[^/]+)?\/token$/);
      const convGet = doc.paths['/conversation']?.get as Json | undefined;
      expect(convGet).toBeDefined();
      const security = (convGet?.security ?? doc.security ?? []) as Json[];
      expect(security.length).toBeGreaterThan(0);
      expect(JSON.stringify(doc)).not.toMatch(/hashed_password|password_hash/);
    });

    it('documents the token request body as form-urlencoded', async () => {
      const doc = (await request(ctx.url('/openapi.json'))).json as Json;
      const content = doc.paths['/token']?.post?.requestBody?.content ?? {};
      expect(Object.keys(content)).toContain('application/x-www-form-urlencoded');
    });

    it('serves Swagger UI HTML at /docs', async () => {
      const r = await fetch(ctx.url('/docs'), { redirect: 'follow' });
      const text = await r.text();
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type') ?? '').toMatch(/^text\/html/);
      expect(text.toLowerCase()).toContain('swagger');
    });

    it('sends nosniff and a Content-Security-Policy with the docs HTML (checklist 90)', async () => {
      const r = await fetch(ctx.url('/docs'), { redirect: 'follow' });
      await r.text();
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      expect(r.headers.get('content-security-policy')).toBeTruthy();
    });
  });

  describe('HTTP hygiene', () => {
    it('answers unknown paths with a JSON 404 {detail}', async () => {
      const r = await request(ctx.url('/no-such-path'));
      expect(r.status).toBe(404);
      expectJsonContentType(r);
      expect(typeof r.json.detail).toBe('string');
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    });

    it.each([
      ['PUT', '/register/'],
      ['GET', '/register/'],
      ['DELETE', '/register'],
      ['GET', '/token'],
      ['DELETE', '/token'],
      ['DELETE', '/conversation'],
    ])('answers 405 with an Allow header for %s %s (checklist 5)', async (method, p) => {
      const r = await request(ctx.url(p), { method });
      expect(r.status).toBe(405);
      expect(r.headers.get('allow')).toBeTruthy();
      expectJsonContentType(r);
    });

    it('sends no X-Powered-By and no version in Server (checklist 11)', async () => {
      for (const p of ['/healthz', '/token', '/conversation', '/register/', '/nope']) {
        const r = await request(ctx.url(p));
        expect(r.headers.get('x-powered-by')).toBeNull();
        expect(r.headers.get('server') ?? '').not.toMatch(/\d/);
      }
    });
  });

  it('logs successful and failed logins as structured events with a request id (checklist 87)', async () => {
    const u = await registerUser(ctx);
    await login(ctx, u.username, u.password);
    const bad = await request(ctx.url('/token'), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: u.username, password: 'Wrong-password-987' }).toString(),
    });
    expect(bad.status).toBe(400);
    await new Promise((r) => setTimeout(r, 200));
    const events = ctx.server
      .output()
      .split('\n')
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Json];
        } catch {
          return [];
        }
      })
      .filter(
        (o) => o.reqId !== undefined && (o.event !== undefined || /login|token|grant/i.test(String(o.msg))),
      );
    const text = events.map((e) => JSON.stringify(e));
    expect(
      text.some((t) => /fail|invalid_grant|denied|rejected|incorrect/i.test(t)),
      text.join('\n'),
    ).toBe(true);
    expect(text.some((t) => /login|token_issued|issued|succeed|success/i.test(t) && !/fail/i.test(t))).toBe(
      true,
    );
  });

  it('starts three instances at once on a fresh database: all ready, one shared signing key', async () => {
    const db = await createDatabase(dialect);
    const servers: RunningServer[] = [];
    try {
      const started = await Promise.allSettled([0, 1, 2].map(() => startServer({ databaseUrl: db.url })));
      for (const s of started) if (s.status === 'fulfilled') servers.push(s.value);
      expect(
        started.map((s) => (s.status === 'fulfilled' ? 'ready' : String(s.reason).slice(0, 600))),
      ).toEqual(['ready', 'ready', 'ready']);
      const kids = await Promise.all(
        servers.map(async (s) =>
          ((await request(s.url('/.well-known/jwks.json'))).json.keys as Json[]).map((k) => k.kid).sort(),
        ),
      );
      expect(kids[1]).toEqual(kids[0]);
      expect(kids[2]).toEqual(kids[0]);
      const [a, b] = servers as [RunningServer, RunningServer];
      const body = {
        username: 'triplet',
        email: 'triplet@example.com',
        password: ctx.track(`Pw-${Date.now()}-tri`),
        age: 9,
        level: 'beginner',
      };
      const reg = await request(a.url('/register/'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(reg.status).toBe(200);
      const tok = await request(b.url('/token'), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ username: body.username, password: body.password }).toString(),
      });
      expect(tok.status).toBe(200);
      const t = ctx.track(tok.json.access_token as string);
      for (const s of servers) expect((await getWithToken(s.url('/conversation'), t)).status).toBe(200);
    } finally {
      for (const s of servers) await s.stop();
      await db.drop();
    }
  });

  it('never logs Authorization header values, even for refused tokens', async () => {
    await getWithToken(ctx.url('/conversation'), 'refused-token-value-for-the-log-check');
    await new Promise((r) => setTimeout(r, 100));
    const out = ctx.server.output();
    expect(out).not.toContain('refused-token-value-for-the-log-check');
    expect(out).not.toMatch(/"authorization"\s*:\s*"(?!\[Redacted\])[^"]+"/i);
  });

  it('documents the register response as exactly the five public fields', async () => {
    const doc = (await request(ctx.url('/openapi.json'))).json as Json;
    const op = (doc.paths['/register/'] ?? doc.paths['/register'])?.post as Json;
    const schema = op?.responses?.['200']?.content?.['application/json']?.schema as Json;
    const resolve = (sc: Json): Json =>
      sc?.$ref ? resolve(doc.components.schemas[String(sc.$ref).split('/').pop() as string]) : sc;
    const props = Object.keys(resolve(schema)?.properties ?? {}).sort();
    expect(props).toEqual(['age', 'email', 'id', 'level', 'username']);
  });

  it('writes pino JSON log lines with request ids', () => {
    const lines = ctx.server
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(0);
    const parsed = lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Json];
      } catch {
        return [];
      }
    });
    expect(
      parsed.some((o) => o.reqId !== undefined || o.req_id !== undefined || o.requestId !== undefined),
    ).toBe(true);
    expect(ctx.server.output()).not.toMatch(/authorization"\s*:\s*"Bearer ey/i);
  });

  it('never writes the passwords or tokens it saw to the logs', () => {
    expectLogsFreeOf(ctx);
  });
});

describe('GET /readyz when PostgreSQL goes away', () => {
  let server: RunningServer | undefined;
  afterAll(async () => {
    await server?.stop();
  });

  it('answers 503 on /readyz (and 200 on /healthz) after the database is dropped', async () => {
    const db = await createDatabase('postgres');
    server = await startServer({ databaseUrl: db.url });
    expect((await request(server.url('/readyz'))).status).toBe(200);
    const admin = new pg.Client(PG_ADMIN_URL);
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE ${db.pgName} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
    const t0 = performance.now();
    const ready = await request(server.url('/readyz'));
    expect(ready.status).toBe(503);
    expectJsonContentType(ready);
    expect(ready.text).not.toMatch(/postgres:\/\/|\n\s+at /);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect((await request(server.url('/healthz'))).status).toBe(200);
    // requests needing the database fail cleanly, never hang
    const reg = await request(server.url('/register/'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        username: 'gone1',
        email: 'gone1@example.com',
        password: 'Pw-gone-db-1',
        age: 3,
        level: 'beginner',
      }),
    });
    expect(reg.status).toBeGreaterThanOrEqual(500);
    expect(reg.text).not.toMatch(/\n\s+at |postgres:\/\/|database ".*" does not exist/);
  });
});

describe('hashing threads (issue 5: logins must not slow reads down)', () => {
  const SCHED_IDLE = 5;
  const SCHED_OTHER = 0;
  /** Scheduling policy and nice value of each libuv threadpool thread of a process, from /proc. */
  const hashingThreads = (pid: number) =>
    readdirSync(`/proc/${pid}/task`)
      .filter((tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'libuv-worker')
      .map((tid) => {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return { nice: Number(fields[16]), policy: Number(fields[38]) };
      });

  it.each([
    [undefined, SCHED_IDLE, 19],
    ['low', SCHED_OTHER, 19],
    ['normal', SCHED_OTHER, 0],
  ] as const)(
    'HASH_THREAD_PRIORITY=%s runs them with policy %i at nice %i',
    async (setting, policy, nice) => {
      const db = await createDatabase('sqlite');
      const server = await startServer({ databaseUrl: db.url, env: { HASH_THREAD_PRIORITY: setting } });
      try {
        const threads = hashingThreads(server.proc.pid as number);
        expect(threads.length).toBeGreaterThanOrEqual(4);
        expect(threads).toEqual(threads.map(() => ({ nice, policy })));
      } finally {
        await server.stop();
        await db.drop();
      }
    },
  );
});
