import { createPrivateKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSecretBox } from '../../src/security/secret-box.ts';
import {
  buildTestApp,
  loginToken,
  registerUser,
  TEST_SECRET,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import {
  decodeToken,
  ed25519Sign,
  forgedTokens,
  hmacSign,
  nonCanonicalSignatureVariants,
} from '../support/forge-token.ts';

const SECRET = 'q3W9zL0vB7nX2cR5tY8uI1oP4aS6dF0gH3jK7lZ9xC2vB5nM';

describe.each(dialects)('GET /conversation on %s', (dialect) => {
  let t: TestApp;
  let alice: string;
  let bob: string;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
    await registerUser(t.app, { username: 'Alice', email: 'alice@example.com' });
    await registerUser(t.app, { username: 'Bob', email: 'bob@example.com' });
    alice = await loginToken(t.app, 'alice');
    bob = await loginToken(t.app, 'bob');
  });
  afterAll(async () => {
    await t.close();
  });

  const read = (headers: Record<string, string> = {}, url = '/conversation') =>
    t.app.inject({ method: 'GET', url, headers });

  it("answers 200 with the user's own conversation and name as registered", async () => {
    const response = await read({ authorization: `Bearer ${alice}` });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ conversation: 'This is a secure conversation', current_user: 'Alice' });
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('reads the conversation from the database', async () => {
    const user = await t.database.db
      .selectFrom('users')
      .select('id')
      .where('username_canonical', '=', 'bob')
      .executeTakeFirstOrThrow();
    const conversation = await t.database.db
      .selectFrom('conversations')
      .select('id')
      .where('user_id', '=', user.id)
      .executeTakeFirstOrThrow();
    await t.database.db
      .insertInto('messages')
      .values({ conversation_id: conversation.id, author: 'user', body: 'hello from bob', created_at_ms: 1 })
      .execute();
    const response = await read({ authorization: `Bearer ${bob}` });
    expect(response.json()).toEqual({
      conversation: 'This is a secure conversation\nhello from bob',
      current_user: 'Bob',
    });
  });

  it('never answers one user with another user’s data', async () => {
    for (let i = 0; i < 5; i += 1) {
      expect((await read({ authorization: `Bearer ${alice}` })).json().current_user).toBe('Alice');
      expect((await read({ authorization: `Bearer ${bob}` })).json().current_user).toBe('Bob');
    }
  });

  it('accepts the scheme in any letter case', async () => {
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      expect((await read({ authorization: `${scheme} ${alice}` })).statusCode).toBe(200);
    }
  });

  it('answers 401 with a bare Bearer challenge when no token was sent (RFC 6750 §3)', async () => {
    const response = await read();
    expect(response.statusCode).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer');
    expect(response.json()).toEqual({ detail: 'Not authenticated' });
  });

  it.each(['Basic YWxpY2U6cGFzc3dvcmQ=', 'Token TOKEN', 'JWT TOKEN', 'Bearer', 'Bearer '])(
    'answers 401 with a Bearer challenge for Authorization %j',
    async (value) => {
      const response = await read({ authorization: value.replace('TOKEN', alice) });
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toBe('Bearer');
    },
  );

  it('ignores an access_token in the query string', async () => {
    const response = await read({}, `/conversation?access_token=${alice}`);
    expect(response.statusCode).toBe(401);
  });

  // RFC 6750 §2: a client MUST NOT use more than one method to send its token; which one would count is ambiguous.
  it('answers 400 invalid_request to a token in the header and an access_token in the query string', async () => {
    for (const query of [
      `access_token=${alice}`,
      'access_token=garbage',
      'x=1&access%5Ftoken=',
      'access_token',
    ]) {
      const response = await read({ authorization: `Bearer ${alice}` }, `/conversation?${query}`);
      expect(response.statusCode, query).toBe(400);
      expect(response.headers['www-authenticate'], query).toBe('Bearer error="invalid_request"');
    }
    expect(
      (await read({ authorization: `Bearer ${alice}` }, '/conversation?access_tokens=1')).statusCode,
    ).toBe(200);
  });

  it('answers 401 invalid_token for garbage and for two tokens', async () => {
    for (const value of ['Bearer garbage', `Bearer ${alice} ${alice}`]) {
      const response = await read({ authorization: value });
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
      expect(response.json()).toEqual({ detail: 'Could not validate credentials' });
    }
  });

  it('answers 401 invalid_token for a signature in non-canonical base64url', async () => {
    expect((await read({ authorization: `Bearer ${alice}` })).statusCode).toBe(200);
    for (const variant of nonCanonicalSignatureVariants(alice)) {
      const response = await read({ authorization: `Bearer ${variant}` });
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    }
  });

  it('answers 401 invalid_token once the token has expired', async () => {
    const token = await loginToken(t.app, 'alice');
    // 900 s of lifetime plus the 5 s of tolerance for clock skew between instances.
    t.clock.advanceSeconds(906);
    const response = await read({ authorization: `Bearer ${token}` });
    t.clock.advanceSeconds(-906);
    expect(response.statusCode).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
  });

  it('answers 401 invalid_token when the user no longer exists', async () => {
    await registerUser(t.app, { username: 'Victor', email: 'victor@example.com' });
    const token = await loginToken(t.app, 'victor');
    await t.database.db.deleteFrom('users').where('username_canonical', '=', 'victor').execute();
    const response = await read({ authorization: `Bearer ${token}` });
    expect(response.statusCode).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
  });

  it('refuses the whole forged-token corpus with 401 invalid_token', async () => {
    const key = await t.database.db.selectFrom('signing_keys').selectAll().executeTakeFirstOrThrow();
    const privateJwk = createSecretBox([TEST_SECRET]).open(
      key.private_jwk,
      `signing_keys.private_jwk:${key.kid}`,
    );
    const privateKey = createPrivateKey({ key: JSON.parse(privateJwk), format: 'jwk' });
    const jwks = (await t.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json();
    const corpus = forgedTokens({
      valid: alice,
      other: bob,
      publicJwk: jwks.keys[0],
      signLegit: (header, payload) => ed25519Sign(header, payload, privateKey),
    });
    for (const [name, token] of corpus) {
      const response = await read({ authorization: `Bearer ${token}` });
      expect(response.statusCode, name).toBe(401);
      expect(response.headers['www-authenticate'], name).toBe('Bearer error="invalid_token"');
    }
  });

  it('answers 405 with Allow for DELETE /conversation', async () => {
    const response = await t.app.inject({ method: 'DELETE', url: '/conversation' });
    expect(response.statusCode).toBe(405);
    expect(response.headers.allow).toContain('GET');
  });
});

describe.each(dialects)('GET /conversation with HS256 on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { JWT_ALGORITHM: 'HS256', JWT_SECRET: SECRET } });
    await registerUser(t.app, { username: 'Alice', email: 'alice@example.com' });
    await registerUser(t.app, { username: 'Bob', email: 'bob@example.com' });
  });
  afterAll(async () => {
    await t.close();
  });

  it('issues HS256 tokens that work, and publishes no symmetric key', async () => {
    const token = await loginToken(t.app, 'alice');
    expect(decodeToken(token).header.alg).toBe('HS256');
    const response = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.statusCode).toBe(200);
    expect((await t.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json()).toEqual({
      keys: [],
    });
  });

  it('refuses the forged-token corpus, including HS384/HS512 re-signing with the same secret', async () => {
    const alice = await loginToken(t.app, 'alice');
    const bob = await loginToken(t.app, 'bob');
    const corpus = forgedTokens({
      valid: alice,
      other: bob,
      hmacSecret: SECRET,
      signLegit: (header, payload) => hmacSign(header, payload, SECRET),
    });
    for (const [name, token] of corpus) {
      const response = await t.app.inject({
        method: 'GET',
        url: '/conversation',
        headers: { authorization: `Bearer ${token}` },
      });
      expect(response.statusCode, name).toBe(401);
    }
  });

  it('answers 401 invalid_token for an HS256 signature in non-canonical base64url', async () => {
    const token = await loginToken(t.app, 'alice');
    const read = (bearer: string) =>
      t.app.inject({ method: 'GET', url: '/conversation', headers: { authorization: `Bearer ${bearer}` } });
    expect((await read(token)).statusCode).toBe(200);
    const variants = nonCanonicalSignatureVariants(token);
    expect(variants).toHaveLength(3);
    for (const variant of variants) {
      const response = await read(variant);
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    }
  });

  it('refuses a token signed with the FastAPI tutorial secret', async () => {
    const alice = decodeToken(await loginToken(t.app, 'alice'));
    const forged = hmacSign(
      alice.header,
      alice.payload,
      '09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7',
    );
    const response = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${forged}` },
    });
    expect(response.statusCode).toBe(401);
  });
});
