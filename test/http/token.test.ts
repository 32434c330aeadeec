import { hashSync as bcryptHashSync } from '@node-rs/bcrypt';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPasswordHasher, type PasswordHasher } from '../../src/security/passwords.ts';
import {
  buildTestApp,
  FAST_ARGON2,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { decodeToken } from '../support/forge-token.ts';

const events = (logs: string[], event: string) =>
  logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.event === event);
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const INVALID_GRANT = {
  error: 'invalid_grant',
  error_description: 'Incorrect username or password',
  detail: 'Incorrect username or password',
};

describe.each(dialects)('POST /token on %s', (dialect) => {
  let t: TestApp;
  let dummyCalls = 0;
  beforeAll(async () => {
    const real = createPasswordHasher(FAST_ARGON2);
    const counting: PasswordHasher = {
      ...real,
      verifyDummy: async (password) => {
        dummyCalls += 1;
        await real.verifyDummy(password);
      },
    };
    t = await buildTestApp(dialect, { passwords: counting });
    await registerUser(t.app, { username: 'Alice', email: 'alice@example.com' });
  });
  afterAll(async () => {
    await t.close();
  });

  const token = (payload: string | object, headers: Record<string, string> = FORM, url = '/token') =>
    t.app.inject({ method: 'POST', url, headers, payload });

  /** A multipart/form-data body as curl -F or a browser FormData sends it: its bytes and its content type. */
  const multipart = async (fields: [string, string | Blob][]) => {
    const data = new FormData();
    for (const [name, value] of fields) data.append(name, value);
    const encoded = new Response(data);
    return {
      payload: Buffer.from(await encoded.arrayBuffer()),
      headers: { 'content-type': encoded.headers.get('content-type') as string },
    };
  };

  it('issues a bearer token for a multipart/form-data body, which the seed (FastAPI Form fields) accepts', async () => {
    const { payload, headers } = await multipart([
      ['grant_type', 'password'],
      ['username', 'Alice'],
      ['password', STRONG_PASSWORD],
    ]);
    const response = await token(payload, headers);
    expect(response.statusCode).toBe(200);
    expect(response.json().token_type).toBe('bearer');
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('answers a wrong password sent as multipart as it answers a form: 400 invalid_grant', async () => {
    const { payload, headers } = await multipart([
      ['username', 'Alice'],
      ['password', 'not the password at all'],
    ]);
    const response = await token(payload, headers);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toEqual(INVALID_GRANT);
  });

  it.each([
    [
      'a file part',
      [
        ['username', 'Alice'],
        ['password', new Blob([STRONG_PASSWORD])],
      ] as [string, string | Blob][],
    ],
    [
      'a repeated field',
      [
        ['username', 'Alice'],
        ['password', STRONG_PASSWORD],
        ['password', 'x'],
      ] as [string, string | Blob][],
    ],
  ])('refuses a multipart body with %s: 400 invalid_request', async (_what, fields) => {
    const { payload, headers } = await multipart(fields);
    const response = await token(payload, headers);
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  /** A multipart body with Alice's right credentials, its parts written out; `extra` goes into the password's part. */
  const credentialsBody = (extraPasswordHeaders = '', tail = '--x--\r\n') =>
    '--x\r\nContent-Disposition: form-data; name="username"\r\n\r\nAlice\r\n' +
    `--x\r\nContent-Disposition: form-data; name="password"\r\n${extraPasswordHeaders}\r\n${STRONG_PASSWORD}\r\n${tail}`;

  // Found from outside: 1,790 empty parts in 16 KB were each read (20 ms of the event loop) before any was refused.
  it('reads a multipart body of 32 parts, and refuses one of 33: 400 invalid_request', async () => {
    const parts = (count: number) =>
      Array.from(
        { length: count - 2 },
        (_, index) => `--x\r\nContent-Disposition: form-data; name="p${index}"\r\n\r\nv\r\n`,
      ).join('') + credentialsBody();
    const headers = { 'content-type': 'multipart/form-data; boundary=x' };
    expect((await token(parts(32), headers)).statusCode).toBe(200);
    const refused = await token(parts(33), headers);
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toBe('invalid_request');
  });

  it('refuses a multipart body of more delimiters than 32 parts: 400 invalid_request', async () => {
    const body = `${'--x\r\n\r\n\r\n'.repeat(1000)}${credentialsBody()}`;
    const response = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  it('reads the credentials of a hand-written multipart body: 200', async () => {
    const response = await token(credentialsBody(), { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode, response.body).toBe(200);
  });

  it.each([
    ['no boundary', 'multipart/form-data', credentialsBody()],
    [
      'a body cut short',
      'multipart/form-data; boundary=x',
      credentialsBody('', '--x\r\nContent-Disposition: form-data; name="scope"\r\n\r\nconv'),
    ],
    [
      'a part in another charset',
      'multipart/form-data; boundary=x',
      credentialsBody('Content-Type: text/plain; charset=iso-8859-1\r\n'),
    ],
    [
      'a part with a transfer encoding',
      'multipart/form-data; boundary=x',
      credentialsBody('Content-Transfer-Encoding: quoted-printable\r\n'),
    ],
  ])(
    'refuses a malformed multipart body (%s), right credentials and all: 400 invalid_request',
    async (_what, type, body) => {
      const response = await token(body, { 'content-type': type });
      expect(response.statusCode, response.body).toBe(400);
      expect(response.json().error).toBe('invalid_request');
    },
  );

  it.each([
    ['a file part', 'name="f"; filename="a"\r\n'],
    ['an octet-stream part', 'name="username"\r\nContent-Type: application/octet-stream\r\n'],
  ])('survives %s cut short: 400, and the app still answers', async (_what, disposition) => {
    const body = `--x\r\nContent-Disposition: form-data; ${disposition}\r\nx`;
    const response = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode).toBe(400);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const after = await token(credentialsBody(), { 'content-type': 'multipart/form-data; boundary=x' });
    expect(after.statusCode).toBe(200);
  });

  it.each([
    ['UTF-16', credentialsBody('Content-Type: text/plain; charset=utf-16le\r\n')],
    [
      'a field name past 100 characters',
      `--x\r\nContent-Disposition: form-data; name="${'n'.repeat(200)}"\r\n\r\nx\r\n${credentialsBody()}`,
    ],
  ])('refuses %s in a multipart body: 400 invalid_request', async (_what, body) => {
    const response = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  it.each([
    ['no name', 'Content-Disposition: form-data'],
    ['an empty name', 'Content-Disposition: form-data; name=""'],
  ])('refuses a part with %s, and the app still answers', async (_what, disposition) => {
    const body = `--x\r\n${disposition}\r\n\r\nx\r\n${credentialsBody()}`;
    const response = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json().error).toBe('invalid_request');
    await new Promise((resolve) => setTimeout(resolve, 20));
    const after = await token(credentialsBody(), { 'content-type': 'multipart/form-data; boundary=x' });
    expect(after.statusCode).toBe(200);
  });

  // Found from outside: the charset check found the boundary and the part's charset with regular expressions that
  // matched inside quoted parameters, while busboy reads parameters properly and decoded the part in that charset.
  it.each([
    [
      'a boundary hidden in a quoted parameter',
      'multipart/form-data; x="; boundary=QQQ"; boundary=x',
      credentialsBody('Content-Type: text/plain; charset=utf-16le\r\n'),
    ],
    [
      'a UTF-8 charset hidden in a quoted parameter after the real one',
      'multipart/form-data; boundary=x',
      credentialsBody('Content-Type: text/plain; charset=utf-16le; x="; charset=utf-8"\r\n'),
    ],
    [
      'a charset in RFC 2231 form',
      'multipart/form-data; boundary=x',
      credentialsBody("Content-Type: text/plain; charset*=utf-8''utf-16le\r\n"),
    ],
    [
      'a charset on a folded header line',
      'multipart/form-data; boundary=x',
      credentialsBody('Content-Type: text/plain;\r\n charset=utf-16le\r\n'),
    ],
  ])('refuses %s naming another charset: 400 invalid_request', async (_what, type, body) => {
    const response = await token(body, { 'content-type': type });
    expect(response.statusCode, response.body).toBe(400);
    // Not invalid_grant: the right password decoded in that charset, and counted as a failure.
    expect(response.json().error).toBe('invalid_request');
  });

  it('accepts a part that names UTF-8 as its charset', async () => {
    const body = credentialsBody('Content-Type: text/plain; charset="UTF-8"\r\n');
    const response = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode, response.body).toBe(200);
  });

  it('answers a field named __proto__ as the form parser does', async () => {
    const asForm = await token(`__proto__=x&username=Alice&password=${encodeURIComponent(STRONG_PASSWORD)}`);
    const body = `--x\r\nContent-Disposition: form-data; name="__proto__"\r\n\r\nx\r\n${credentialsBody()}`;
    const asMultipart = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(asMultipart.statusCode).toBe(asForm.statusCode);
  });

  it('refuses a multipart field that is not UTF-8, as a form field: 400', async () => {
    const body = Buffer.concat([
      Buffer.from('--x\r\nContent-Disposition: form-data; name="username"\r\n\r\nAlice\r\n--x\r\n'),
      Buffer.from('Content-Disposition: form-data; name="password"\r\n\r\n'),
      Buffer.from([0x70, 0xe9, 0x73]),
      Buffer.from('\r\n--x--\r\n'),
    ]);
    const response = await token(body, { 'content-type': 'multipart/form-data; boundary=x' });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  it('keeps multipart off the routes that take JSON: POST /register/ answers 415 as before', async () => {
    const { payload, headers } = await multipart([
      ['username', 'Multi'],
      ['email', 'multi@example.com'],
      ['password', STRONG_PASSWORD],
    ]);
    const response = await t.app.inject({ method: 'POST', url: '/register/', headers, payload });
    expect(response.statusCode).toBe(415);
    expect(response.json()).toHaveProperty('detail');
  });

  it('issues a bearer token for the form body OAuth2 clients and Swagger UI send', async () => {
    const response = await token(
      form({
        grant_type: 'password',
        username: 'Alice',
        password: STRONG_PASSWORD,
        scope: '',
        client_id: '',
        client_secret: '',
      }),
    );
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body.token_type).toBe('bearer');
    expect(typeof body.access_token).toBe('string');
    const { payload } = decodeToken(body.access_token);
    expect(body.expires_in).toBe((payload.exp as number) - (payload.iat as number));
    expect(body.expires_in).toBe(900);
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers.pragma).toBe('no-cache');
  });

  it('answers a wrong method on /token with 405 and, as every /token answer, no-store and Pragma: no-cache', async () => {
    for (const method of ['GET', 'PUT', 'DELETE'] as const) {
      const response = await t.app.inject({ method, url: '/token' });
      expect(response.statusCode, method).toBe(405);
      expect(response.headers.allow, method).toBe('POST');
      expect(response.headers['cache-control'], method).toBe('no-store');
      expect(response.headers.pragma, method).toBe('no-cache');
    }
  });

  // The router decodes percent-encoded letters, so /%74oken is the token endpoint: its answers keep its headers.
  it("gives a percent-encoded path to /token the token endpoint's headers, and its 405", async () => {
    const issued = await t.app.inject({
      method: 'POST',
      url: '/%74oken',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: form({ username: 'Alice', password: STRONG_PASSWORD }),
    });
    expect(issued.statusCode).toBe(200);
    expect(issued.headers['cache-control']).toBe('no-store');
    expect(issued.headers.pragma).toBe('no-cache');
    const wrongMethod = await t.app.inject({ method: 'GET', url: '/%74oken?x=1' });
    expect(wrongMethod.statusCode).toBe(405);
    expect(wrongMethod.headers.allow).toBe('POST');
    expect(wrongMethod.headers.pragma).toBe('no-cache');
  });

  it('issues a token for a JSON body, and without grant_type', async () => {
    const response = await token({ username: 'Alice', password: STRONG_PASSWORD }, {});
    expect(response.statusCode).toBe(200);
    expect(response.json().token_type).toBe('bearer');
  });

  // Found in a differential test against the seed: its own LoginData(...).dict() sends its unset fields as null, and
  // the seed logs such a body in. RFC 6749 §3.2: a parameter without a value is treated as omitted.
  it('takes a JSON member whose value is null for an omitted parameter', async () => {
    const response = await token(
      {
        username: 'Alice',
        password: STRONG_PASSWORD,
        grant_type: null,
        scope: null,
        client_id: null,
        client_secret: null,
      },
      {},
    );
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json().scope).toBe('conversation:read conversation:write');
    const missing = await token({ username: 'Alice', password: null }, {});
    expect(missing.statusCode).toBe(400);
    expect(missing.json().error).toBe('invalid_request');
  });

  it('logs in with the username in any case or width', async () => {
    for (const username of ['alice', 'ALICE', 'ａｌｉｃｅ', ' alice ']) {
      const response = await token(form({ username, password: STRONG_PASSWORD }));
      expect(response.statusCode, username).toBe(200);
      expect(decodeToken(response.json().access_token).payload.preferred_username).toBe('Alice');
    }
  });

  // RFC 9068 §2.2 names the claims an at+jwt MUST carry; client_id is one. Clients are not registered: a client_id sent
  // with the request is no identity (anyone can write one), so the token names the one client the password grant serves.
  it('writes every claim RFC 9068 requires of an at+jwt, client_id a fixed one whatever the request sends', async () => {
    const response = await token(form({ username: 'alice', password: STRONG_PASSWORD, client_id: 'evil' }));
    const { header, payload } = decodeToken(response.json().access_token);
    expect(header.typ).toBe('at+jwt');
    for (const claim of ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'])
      expect(payload, claim).toHaveProperty(claim);
    expect(payload.client_id).toBe('gatehouse');
  });

  it('gives each login a new token with its own jti', async () => {
    const a = (await token(form({ username: 'alice', password: STRONG_PASSWORD }))).json().access_token;
    const b = (await token(form({ username: 'alice', password: STRONG_PASSWORD }))).json().access_token;
    expect(decodeToken(a).payload.jti).not.toBe(decodeToken(b).payload.jti);
  });

  it('answers a wrong password and an unknown user identically with 400 invalid_grant', async () => {
    const wrong = await token(form({ username: 'alice', password: 'wrong password here' }));
    const unknown = await token(form({ username: 'nobody', password: 'wrong password here' }));
    for (const response of [wrong, unknown]) {
      expect(response.statusCode).toBe(400);
      expect(response.json()).toEqual(INVALID_GRANT);
      expect(response.headers['cache-control']).toBe('no-store');
      expect(response.headers.pragma).toBe('no-cache');
      expect(response.headers['www-authenticate']).toBeUndefined();
    }
    const strip = (headers: Record<string, unknown>) => {
      const { date, 'x-request-id': _id, ...rest } = headers;
      return rest;
    };
    expect(strip(wrong.headers)).toEqual(strip(unknown.headers));
    expect(wrong.body).toBe(unknown.body);
  });

  it('verifies against a dummy hash for an unknown user, so both take one hash time', async () => {
    const before = dummyCalls;
    await token(form({ username: 'ghost', password: 'whatever it is' }));
    expect(dummyCalls).toBe(before + 1);
    await token(form({ username: 'a', password: 'a username that cannot exist' }));
    expect(dummyCalls).toBe(before + 2);
    await token(form({ username: 'alice', password: 'whatever it is' }));
    expect(dummyCalls).toBe(before + 2);
  });

  it.each([
    ['no username', { password: STRONG_PASSWORD }],
    ['no password', { username: 'alice' }],
    ['an empty username', { username: '', password: STRONG_PASSWORD }],
    ['a whitespace-only username', { username: '   ', password: STRONG_PASSWORD }],
    ['an empty password', { username: 'alice', password: '' }],
    ['nothing at all', {}],
  ])('answers 400 invalid_request for %s', async (_label, fields) => {
    const response = await token(form(fields as Record<string, string>));
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('answers 400 invalid_request when a parameter is repeated', async () => {
    const response = await token(
      `username=alice&username=bob&password=${encodeURIComponent(STRONG_PASSWORD)}`,
    );
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  // RFC 6749 §3.2: a parameter sent without a value is treated as omitted, so its empty copies repeat nothing (found
  // in a differential test against the seed, which logs these in).
  it.each([
    ['two empty scopes', `scope=&scope=&username=Alice&password=${encodeURIComponent(STRONG_PASSWORD)}`],
    [
      'an empty and a given username',
      `username=&username=Alice&password=${encodeURIComponent(STRONG_PASSWORD)}`,
    ],
    [
      'a given and an empty grant_type',
      `grant_type=password&grant_type=&username=Alice&password=${encodeURIComponent(STRONG_PASSWORD)}`,
    ],
  ])('takes a form with %s as one parameter: 200', async (_what, payload) => {
    const response = await token(payload);
    expect(response.statusCode, response.body).toBe(200);
    expect(response.json().scope).toBe('conversation:read conversation:write');
  });

  it('refuses a username over 256 characters and a password over 4,096 without checking them: 400 invalid_request', async () => {
    for (const fields of [
      { username: 'a'.repeat(257), password: STRONG_PASSWORD },
      { username: 'Alice', password: 'p'.repeat(4097) },
    ]) {
      const response = await token(form(fields));
      expect(response.statusCode).toBe(400);
      expect(response.json().error).toBe('invalid_request');
    }
    expect(
      (await token(form({ username: ` ${'a'.repeat(250)} `, password: STRONG_PASSWORD }))).json().error,
    ).toBe('invalid_grant');
  });

  it('still refuses a JSON array of one value: 400 invalid_request', async () => {
    const response = await token(JSON.stringify({ username: ['Alice'], password: STRONG_PASSWORD }), {
      'content-type': 'application/json',
    });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  it('takes a multipart body with an empty copy of a parameter as one parameter: 200', async () => {
    const { payload, headers } = await multipart([
      ['username', ''],
      ['username', 'Alice'],
      ['password', STRONG_PASSWORD],
      ['scope', ''],
      ['scope', ''],
    ]);
    const response = await token(payload, headers);
    expect(response.statusCode, response.body).toBe(200);
  });

  it('still refuses two different values of a parameter beside an empty one: 400 invalid_request', async () => {
    const response = await token(
      `username=&username=Alice&username=bob&password=${encodeURIComponent(STRONG_PASSWORD)}`,
    );
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  // Found from outside: normalisation sorts a run of combining marks in time that grows with its square, and a 16 KB
  // username of them held the event loop 0.1-1 s, throttled (429) or not.
  it('never normalises a username or password holding thousands of combining marks: a wrong login, as any', async () => {
    // As UTF-8 in the form, not escaped: 16 KB holds 7,900 marks.
    const marks = `a${'\u0344'.repeat(3950)}${'\u0334'.repeat(3950)}`;
    const normalize = vi.spyOn(String.prototype, 'normalize');
    try {
      // NFKC makes marks of the half-width katakana sound marks: they count (review).
      const halfWidth = `a${'\u0301\uFF9E'.repeat(100)}`;
      for (const payload of [
        `username=${marks.slice(0, 250)}&password=${encodeURIComponent(STRONG_PASSWORD)}`,
        `username=Alice&password=${marks.slice(0, 4000)}`,
        `username=${halfWidth}&password=${encodeURIComponent(STRONG_PASSWORD)}`,
        `username=Alice&password=${halfWidth}`,
      ]) {
        const response = await token(payload);
        expect(response.statusCode).toBe(400);
        expect(response.json().error).toBe('invalid_grant');
      }
      const long = normalize.mock.contexts.filter((text) => String(text).length > 200);
      expect(long).toHaveLength(0);
    } finally {
      normalize.mockRestore();
    }
  });

  it('never takes credentials from the query string', async () => {
    const query = `?username=alice&password=${encodeURIComponent(STRONG_PASSWORD)}`;
    const empty = await token('', FORM, `/token${query}`);
    expect(empty.statusCode).toBe(400);
    expect(empty.json().error).toBe('invalid_request');
    const both = await token(form({ username: 'alice', password: STRONG_PASSWORD }), FORM, `/token${query}`);
    expect(both.statusCode).toBe(400);
    expect(both.json()).not.toHaveProperty('access_token');
  });

  it.each(['client_credentials', 'authorization_code', 'foo', 'PASSWORD'])(
    'answers 400 unsupported_grant_type for grant_type=%s',
    async (grantType) => {
      const response = await token(
        form({ grant_type: grantType, username: 'alice', password: STRONG_PASSWORD }),
      );
      expect(response.statusCode).toBe(400);
      expect(response.json().error).toBe('unsupported_grant_type');
      // The answer names every grant there is, the second-factor and passkey ones too.
      expect(response.json().error_description).toContain('urn:gatehouse:params:oauth:grant-type:mfa');
      expect(response.json().error_description).toContain('urn:gatehouse:params:oauth:grant-type:webauthn');
    },
  );

  it.each(['text', 'invalid/@@##', 'text/[html]', 'application/xml', ''])(
    'answers 400 invalid_request for Content-Type %j',
    async (contentType) => {
      const response = await token('username=alice&password=x', { 'content-type': contentType });
      expect(response.statusCode).toBe(400);
      expect(response.json().error).toBe('invalid_request');
    },
  );

  it.each([
    ['malformed JSON', '{"username":'],
    ['a JSON array', '[1]'],
    ['a number for the password', '{"username":"alice","password":12345678}'],
  ])('answers 400 invalid_request for %s', async (_label, payload) => {
    const response = await token(payload, { 'content-type': 'application/json' });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  // RFC 8259 §8.1: JSON between systems is UTF-8. A decoder that replaces a stray byte with U+FFFD makes every such
  // byte the same character, so two different passwords would log in alike.
  it.each([
    [
      'a JSON body',
      'application/json',
      (password: Buffer) =>
        Buffer.concat([Buffer.from('{"username":"alice","password":"'), password, Buffer.from('"}')]),
    ],
    [
      'a form body',
      'application/x-www-form-urlencoded',
      (password: Buffer) => Buffer.concat([Buffer.from('username=alice&password='), password]),
    ],
  ])(
    'answers 400 invalid_request, without hashing, for %s that is not UTF-8',
    async (_label, contentType, body) => {
      const before = dummyCalls;
      const password = Buffer.concat([
        Buffer.from('correct horse b'),
        Buffer.from([0xe4]),
        Buffer.from('ttery staple'),
      ]);
      const response = await token(body(password) as unknown as string, { 'content-type': contentType });
      expect(response.statusCode).toBe(400);
      expect(response.json()).toMatchObject({ error: 'invalid_request' });
      expect(response.headers['cache-control']).toBe('no-store');
      expect(dummyCalls).toBe(before);
    },
  );

  it('takes a form body whose UTF-8 is percent-encoded, and refuses percent-encoded bytes that are not UTF-8', async () => {
    const accented = await token(
      `username=alice&password=${encodeURIComponent('correct horse bättery staple')}`,
    );
    expect(accented.statusCode).toBe(400);
    expect(accented.json().error).toBe('invalid_grant');
    const stray = await token('username=alice&password=correct%20horse%20b%E4ttery%20staple');
    expect(stray.statusCode).toBe(400);
    expect(stray.json().error).toBe('invalid_request');
  });

  // RFC 6749 §3.2 for JSON too: a proxy that reads the first "username" and a server that takes the last would not
  // agree on who logged in.
  it.each([
    ['a repeated name', `{"username":"bob","username":"alice","password":"${STRONG_PASSWORD}"}`],
    [
      'a repeated name spelled with an escape',
      `{"username":"bob","\\u0075sername":"alice","password":"${STRONG_PASSWORD}"}`,
    ],
    ['a repeated password', `{"username":"alice","password":"x","password":"${STRONG_PASSWORD}"}`],
  ])('answers 400 invalid_request, without hashing, for a JSON body with %s', async (_label, payload) => {
    const before = dummyCalls;
    const response = await token(payload, { 'content-type': 'application/json' });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
    expect(dummyCalls).toBe(before);
  });

  // Python's json module reads them, and a seed client's body may hold one (found in a differential test).
  it('ignores an unknown member holding NaN, Infinity or -Infinity', async () => {
    const response = await token(
      `{"username":"alice","password":"${STRONG_PASSWORD}","x":Infinity,"y":[NaN,-Infinity]}`,
      { 'content-type': 'application/json' },
    );
    expect(response.statusCode, response.body).toBe(200);
  });

  it('takes the same name in different objects and inside strings', async () => {
    const response = await token(
      `{"username":"alice","password":"${STRONG_PASSWORD}","extra":{"username":"x","list":[{"a":1},{"a":"\\"username\\":"}]}}`,
      { 'content-type': 'application/json' },
    );
    expect(response.statusCode).toBe(200);
  });

  it('ignores unknown parameters', async () => {
    const response = await token(
      form({ username: 'alice', password: STRONG_PASSWORD, foo: 'bar', client_id: 'x' }),
    );
    expect(response.statusCode).toBe(200);
  });

  it('answers 413 before hashing a 2 MiB password', async () => {
    const before = dummyCalls;
    const response = await token(form({ username: 'nobody', password: 'x'.repeat(2 * 1024 * 1024) }));
    expect(dummyCalls).toBe(before);
    expect(response.statusCode).toBe(413);
    expect(response.json().error).toBe('invalid_request');
  });

  it('answers 405 with Allow for GET /token', async () => {
    const response = await t.app.inject({ method: 'GET', url: '/token' });
    expect(response.statusCode).toBe(405);
    expect(response.headers.allow).toBe('POST');
  });

  it('logs logins without passwords or tokens', async () => {
    const response = await token(form({ username: 'alice', password: STRONG_PASSWORD }));
    const accessToken = response.json().access_token as string;
    const refreshToken = response.json().refresh_token as string;
    await token(form({ username: 'alice', password: 'a wrong one for the log' }));
    const logs = t.logs.join('\n');
    expect(logs).toMatch(/"event":"login_succeeded"/);
    expect(logs).toMatch(/"event":"login_failed".*"username":"alice"/);
    expect(logs).not.toContain(STRONG_PASSWORD);
    expect(logs).not.toContain('a wrong one for the log');
    expect(logs).not.toContain(accessToken.split('.')[2]);
    expect(logs).not.toContain(refreshToken.split('.')[1]);
  });

  it("logs a failed login's username only when it is a valid username, never a password typed into it", async () => {
    const typedPassword = 'Tr0ub4dor&3 horse';
    await token(form({ username: typedPassword, password: 'whatever it was' }));
    const failures = events(t.logs, 'login_failed');
    expect(failures.at(-1)).not.toHaveProperty('username');
    expect(t.logs.join('\n')).not.toContain(typedPassword);
  });

  it('logs login_succeeded once the session exists, after session_started', async () => {
    const before = t.logs.length;
    expect((await token(form({ username: 'alice', password: STRONG_PASSWORD }))).statusCode).toBe(200);
    const lines = t.logs.slice(before).map((line) => JSON.parse(line) as Record<string, unknown>);
    const started = lines.findIndex((line) => line.event === 'session_started');
    const succeeded = lines.findIndex((line) => line.event === 'login_succeeded');
    expect(started).toBeGreaterThanOrEqual(0);
    expect(succeeded).toBeGreaterThan(started);
    expect(lines[succeeded]).toMatchObject({ userId: expect.any(Number), ip: expect.any(String) });
  });
});

describe.each(dialects)('password upgrades at login on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const storedHash = async (canonical: string) =>
    (
      await t.database.db
        .selectFrom('users')
        .select('password_hash')
        .where('username_canonical', '=', canonical)
        .executeTakeFirstOrThrow()
    ).password_hash;

  const storeHash = (canonical: string, passwordHash: string) =>
    t.database.db
      .updateTable('users')
      .set({ password_hash: passwordHash })
      .where('username_canonical', '=', canonical)
      .execute();
  const logIn = (username: string, password: string) =>
    t.app.inject({ method: 'POST', url: '/token', payload: { username, password } });

  it('logs in a user imported with a passlib bcrypt hash and upgrades it to argon2id', async () => {
    await registerUser(t.app, { username: 'seeduser', email: 'seed@example.com' });
    const bcryptHash = bcryptHashSync('seed-password', 4);
    await storeHash('seeduser', bcryptHash);
    const wrong = await logIn('seeduser', 'nope');
    expect(wrong.statusCode).toBe(400);
    expect(await storedHash('seeduser')).toBe(bcryptHash);
    const right = await logIn('seeduser', 'seed-password');
    expect(right.statusCode).toBe(200);
    expect(await storedHash('seeduser')).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$/);
    const again = await logIn('seeduser', 'seed-password');
    expect(again.statusCode).toBe(200);
  });

  it('refuses a stored bcrypt hash dearer than cost 14 without running it, and warns of the account', async () => {
    const user = await registerUser(t.app, { username: 'dearuser', email: 'dear@example.com' });
    // Verifying cost 15 takes seconds, cost 31 hours of a hash thread: neither may run at a login.
    const dear = bcryptHashSync('seed-password', 4).replace(/^\$2b\$04\$/, '$2b$15$');
    await storeHash('dearuser', dear);
    const response = await logIn('dearuser', 'seed-password');
    expect(response.statusCode).toBe(400);
    expect(response.json()).toEqual(INVALID_GRANT);
    expect(await storedHash('dearuser')).toBe(dear);
    const warnings = t.logs
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.level === 40 && line.userId === user.id);
    expect(warnings).toEqual([expect.objectContaining({ problem: expect.stringMatching(/cost 15/) })]);
  });

  it('rehashes an argon2id hash with outdated parameters at the next login', async () => {
    await registerUser(t.app, { username: 'olduser', email: 'old@example.com' });
    const outdated = await createPasswordHasher({ memoryKib: 32, timeCost: 1, parallelism: 1 }).hash(
      STRONG_PASSWORD,
    );
    await t.database.db
      .updateTable('users')
      .set({ password_hash: outdated })
      .where('username_canonical', '=', 'olduser')
      .execute();
    const response = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: 'olduser', password: STRONG_PASSWORD },
    });
    expect(response.statusCode).toBe(200);
    expect(await storedHash('olduser')).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$/);
  });

  // Found from outside: the first of parallel logins to upgrade the hash won, and the others, their password right,
  // were answered invalid_grant and audited as wrong_password (a double submit, two tabs, the day after an import).
  it.each([
    ['a bcrypt hash imported from the seed', () => bcryptHashSync(STRONG_PASSWORD, 4)],
    [
      'an argon2id hash with outdated parameters',
      () => createPasswordHasher({ memoryKib: 32, timeCost: 1, parallelism: 1 }).hash(STRONG_PASSWORD),
    ],
  ])('logs in every one of parallel logins while %s is upgraded', async (_label, outdated) => {
    const name = `par${Math.random().toString(36).slice(2, 10)}`;
    await registerUser(t.app, { username: name, email: `${name}@example.com` });
    await storeHash(name, await outdated());
    t.logs.length = 0;
    const answers = await Promise.all(Array.from({ length: 8 }, () => logIn(name, STRONG_PASSWORD)));
    expect(answers.map((answer) => answer.statusCode)).toEqual(Array(8).fill(200));
    expect(events(t.logs, 'login_failed')).toEqual([]);
    expect(await storedHash(name)).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$/);
  });

  /** Four new users, each signed in, whose stored hash is then a bcrypt one, upgraded at their next login. */
  const signedInWithImportedHashes = async (prefix: string) => {
    const names = Array.from({ length: 4 }, () => `${prefix}${Math.random().toString(36).slice(2, 10)}`);
    const tokens = await Promise.all(
      names.map(async (name) => {
        await registerUser(t.app, { username: name, email: `${name}@example.com` });
        const token = (await logIn(name, STRONG_PASSWORD)).json().access_token as string;
        await storeHash(name, bcryptHashSync(STRONG_PASSWORD, 4));
        return token;
      }),
    );
    return { names, tokens };
  };

  it('changes the password, with the right current one, while a login upgrades its hash', async () => {
    const { names, tokens } = await signedInWithImportedHashes('chg');
    const changes = await Promise.all(
      names.map(async (name, index) => {
        const [change, login] = await Promise.all([
          t.app.inject({
            method: 'POST',
            url: '/users/me/password',
            headers: { authorization: `Bearer ${tokens[index]}` },
            payload: { current_password: STRONG_PASSWORD, new_password: 'an entirely new passphrase 31' },
          }),
          logIn(name, STRONG_PASSWORD),
        ]);
        expect([200, 400]).toContain(login.statusCode);
        return change.statusCode;
      }),
    );
    expect(changes).toEqual([204, 204, 204, 204]);
    for (const name of names)
      expect((await logIn(name, 'an entirely new passphrase 31')).statusCode).toBe(200);
  });

  it.each([
    ['deletes the account', 'DELETE', '/users/me', { password: STRONG_PASSWORD }, 204],
    ['asks for a new email address', 'PATCH', '/users/me', { current_password: STRONG_PASSWORD }, 200],
  ] as const)(
    '%s, with the right password, while a login upgrades its hash',
    async (_label, method, url, body, status) => {
      const { names, tokens } = await signedInWithImportedHashes('up');
      const answers = await Promise.all(
        names.map(async (name, index) => {
          const payload = method === 'PATCH' ? { ...body, email: `${name}@example.org` } : body;
          const [answer] = await Promise.all([
            t.app.inject({ method, url, headers: { authorization: `Bearer ${tokens[index]}` }, payload }),
            logIn(name, STRONG_PASSWORD),
          ]);
          return answer.statusCode;
        }),
      );
      expect(answers).toEqual(Array(4).fill(status));
    },
  );
});
