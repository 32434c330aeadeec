import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { expectLogsFreeOf, registerUser, request } from './support/client.ts';
import { DIALECTS, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 90_000, hookTimeout: 60_000 });

const jsonValue = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map((b) => Number(b)),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 }),
);

const levels = fc.oneof(fc.constantFrom('beginner', 'intermediate', 'advanced'), jsonValue);
const usernames = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9._-]{1,40}$/),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  jsonValue,
);
const passwords = fc.oneof(
  fc.string({ minLength: 0, maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 60 }),
  jsonValue,
);
const emails = fc.oneof(fc.emailAddress(), fc.string({ maxLength: 60 }), jsonValue);
const ages = fc.oneof(fc.integer({ min: -5, max: 200 }), fc.integer().map(String), jsonValue);

const registerBody = fc.record(
  {
    username: usernames,
    email: emails,
    password: passwords,
    age: ages,
    level: levels,
    extra: jsonValue,
  },
  { requiredKeys: [] },
);

const contentTypes = fc.constantFrom(
  'application/json',
  'application/json; charset=utf-8',
  'application/x-www-form-urlencoded',
  'text/plain',
  'multipart/form-data; boundary=x',
  'application/json; charset=latin1',
  '',
);

describe.each(DIALECTS)('property: random bodies never give a 5xx (%s)', (dialect) => {
  const ctx = useServer(dialect);

  it('POST /register/ with random JSON objects answers < 500', async () => {
    await fc.assert(
      fc.asyncProperty(registerBody, async (body) => {
        const r = await request(ctx.url('/register/'), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        expect(r.status, `${JSON.stringify(body)} -> ${r.text}`).toBeLessThan(500);
        expect([200, 409, 413, 422]).toContain(r.status);
      }),
      { numRuns: 150 },
    );
  });

  it('POST /register/ and /token with random raw bytes and content types answer < 500', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/register/', '/token'),
        contentTypes,
        fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.json(), fc.uint8Array({ maxLength: 200 })),
        async (p, ct, raw) => {
          const headers: Record<string, string> = ct ? { 'content-type': ct } : {};
          const r = await request(ctx.url(p), {
            method: 'POST',
            headers,
            body: typeof raw === 'string' ? raw : Buffer.from(raw),
          });
          expect(r.status, `${p} ${ct} ${JSON.stringify(raw).slice(0, 200)} -> ${r.text}`).toBeLessThan(500);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('POST /token with random form and JSON credentials answers 200 or 400 (or 413/415), never 5xx', async () => {
    const u = await registerUser(ctx);
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          {
            grant_type: fc.oneof(fc.constant('password'), fc.string({ maxLength: 20 })),
            username: fc.oneof(
              fc.constant(u.username),
              fc.string({ maxLength: 40 }),
              fc.string({ unit: 'binary', maxLength: 40 }),
            ),
            password: fc.oneof(
              fc.constant(u.password),
              fc.string({ maxLength: 40 }),
              fc.string({ unit: 'binary', maxLength: 40 }),
            ),
            scope: fc.string({ maxLength: 20 }),
            client_id: fc.string({ maxLength: 10 }),
          },
          { requiredKeys: [] },
        ),
        fc.boolean(),
        async (fields, asJson) => {
          const r = asJson
            ? await request(ctx.url('/token'), {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify(fields),
              })
            : await request(ctx.url('/token'), {
                method: 'POST',
                headers: { 'content-type': 'application/x-www-form-urlencoded' },
                body: new URLSearchParams(fields as Record<string, string>).toString(),
              });
          expect(r.status, `${JSON.stringify(fields)} -> ${r.text}`).toBeLessThan(500);
          expect([200, 400]).toContain(r.status);
          expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
          // invalid_scope: a scope this service does not know (RFC 6749 §5.2).
          if (r.status === 200) ctx.track(r.json.access_token);
          else
            expect(['invalid_request', 'invalid_grant', 'invalid_scope', 'unsupported_grant_type']).toContain(
              r.json?.error,
            );
        },
      ),
      { numRuns: 150 },
    );
  });

  it('GET /conversation with random Authorization headers answers 400/401, never 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ maxLength: 200 }).map((s) => `Bearer ${s}`),
          fc
            .tuple(fc.base64String(), fc.base64String(), fc.base64String())
            .map(([a, b, c]) => `Bearer ${a}.${b}.${c}`),
          fc.string({ maxLength: 100 }),
        ),
        async (value) => {
          let r: Awaited<ReturnType<typeof request>>;
          try {
            r = await request(ctx.url('/conversation'), { headers: { authorization: value } });
          } catch {
            return; // fetch refuses header values with CR/LF or non-latin1 characters: nothing sent
          }
          expect(r.status, `${JSON.stringify(value)} -> ${r.text}`).toBeLessThan(500);
          expect([400, 401]).toContain(r.status);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('still answers health checks afterwards', async () => {
    expect((await request(ctx.url('/healthz'))).status).toBe(200);
    expect((await request(ctx.url('/readyz'))).status).toBe(200);
  });

  it('never writes the passwords or tokens it saw to the logs', () => {
    expectLogsFreeOf(ctx);
  });
});
