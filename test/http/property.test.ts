import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, registerUser, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

const text = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', ' ', '\u0000', '\ud800', 'alice', 'ALICE', '42', 'beginner', 'a@b.c', '__proto__'),
);
const value = fc.oneof(
  text,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map((n) => Number(n)),
  fc.array(text, { maxLength: 3 }),
  fc.dictionary(text, text, { maxKeys: 3 }),
);
const registerBody = fc.record(
  { username: value, email: value, password: value, age: value, level: value, extra: value },
  { requiredKeys: [] },
);
const tokenBody = fc.record(
  { grant_type: value, username: value, password: value, scope: value },
  { requiredKeys: [] },
);

describe.each(dialects)('random bodies never give a 5xx on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
    await registerUser(t.app, { username: 'alice', email: 'alice@example.com' });
  });
  afterAll(async () => {
    await t.close();
  });

  it('POST /register/ answers below 500 for any JSON body', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(registerBody, value), async (body) => {
        const response = await t.app.inject({
          method: 'POST',
          url: '/register/',
          payload: JSON.stringify(body),
          headers: { 'content-type': 'application/json' },
        });
        expect(response.statusCode).toBeLessThan(500);
      }),
      { numRuns: 150 },
    );
  });

  it('POST /token answers below 500 for any JSON or form body', async () => {
    await fc.assert(
      fc.asyncProperty(tokenBody, fc.boolean(), async (body, asForm) => {
        const payload = asForm
          ? new URLSearchParams(
              Object.entries(body).map(([key, v]): [string, string] => [
                key,
                typeof v === 'string' ? v : (JSON.stringify(v) ?? ''),
              ]),
            ).toString()
          : JSON.stringify(body);
        const response = await t.app.inject({
          method: 'POST',
          url: '/token',
          payload,
          headers: { 'content-type': asForm ? 'application/x-www-form-urlencoded' : 'application/json' },
        });
        expect(response.statusCode).toBeLessThan(500);
        expect([200, 400]).toContain(response.statusCode);
      }),
      { numRuns: 150 },
    );
  });

  it('GET /conversation answers 401, never 5xx, for any Authorization header', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary-ascii', maxLength: 200 }), async (header) => {
        const clean = header.replace(/[^\x20-\x7e]/g, '');
        const response = await t.app.inject({
          method: 'GET',
          url: '/conversation',
          headers: { authorization: `Bearer ${clean}` },
        });
        expect(response.statusCode).toBe(401);
      }),
      { numRuns: 150 },
    );
  });
});
