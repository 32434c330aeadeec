import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import http from 'node:http';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import {
  BARE_BEARER_CHALLENGE,
  b64url,
  expectInvalidToken,
  expectJsonContentType,
  expectLogsFreeOf,
  expectNoStore,
  getWithToken,
  hmacSign,
  type Json,
  login,
  type RegisteredUser,
  rawHead,
  rawHttp,
  registerUser,
  request,
  sleep,
  splitToken,
} from './support/client.ts';
import { DIALECTS, getFreePort, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

function edSign(header: Json, payload: Json, key: KeyObject): string {
  const h = b64url(JSON.stringify(header));
  const p = b64url(JSON.stringify(payload));
  return `${h}.${p}.${sign(null, Buffer.from(`${h}.${p}`), key).toString('base64url')}`;
}

describe.each(DIALECTS)('GET /conversation (%s, EdDSA)', (dialect) => {
  const ctx = useServer(dialect);
  let alice: RegisteredUser;
  let bob: RegisteredUser;
  let aliceToken: string;
  let bobToken: string;
  let jwks: { keys: Json[] };

  beforeAll(async () => {
    alice = await registerUser(ctx);
    bob = await registerUser(ctx);
    aliceToken = await login(ctx, alice.username, alice.password);
    bobToken = await login(ctx, bob.username, bob.password);
    jwks = (await request(ctx.url('/.well-known/jwks.json'))).json;
  }, 60_000);

  const conv = (token: string, scheme = 'Bearer') => getWithToken(ctx.url('/conversation'), token, scheme);

  describe('valid token', () => {
    it('answers 200 {conversation, current_user} with exactly these fields', async () => {
      const r = await conv(aliceToken);
      expect(r.status, r.text).toBe(200);
      expectJsonContentType(r);
      expect(Object.keys(r.json).sort()).toEqual(['conversation', 'current_user']);
      expect(r.json.current_user).toBe(alice.username);
      expect(typeof r.json.conversation).toBe('string');
      expect(r.json.conversation.length).toBeGreaterThan(0);
    });

    it('returns each user their own conversation (swap tokens in a loop, checklist 50)', async () => {
      for (let i = 0; i < 5; i++) {
        const a = await conv(aliceToken);
        const b = await conv(bobToken);
        expect(a.json.current_user).toBe(alice.username);
        expect(b.json.current_user).toBe(bob.username);
      }
    });

    it('marks the reply as not cacheable (checklist 3)', async () => {
      const r = await conv(aliceToken);
      expect(r.status).toBe(200);
      expectNoStore(r);
    });

    it('accepts the scheme in any case: bearer, BEARER (RFC 9110 §11.1)', async () => {
      expect((await conv(aliceToken, 'bearer')).status).toBe(200);
      expect((await conv(aliceToken, 'BEARER')).status).toBe(200);
    });

    it('keeps the conversation after a second login (stored, not regenerated per token)', async () => {
      const first = await conv(aliceToken);
      const again = await login(ctx, alice.username, alice.password);
      const second = await conv(again);
      expect(second.json.conversation).toBe(first.json.conversation);
    });
  });

  describe('no or unusable credentials', () => {
    it('answers 401 with a bare Bearer challenge (no error attribute) when no token is sent (RFC 6750 §3)', async () => {
      const r = await request(ctx.url('/conversation'));
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(BARE_BEARER_CHALLENGE);
      expect(r.headers.get('www-authenticate')).not.toMatch(/error=/);
      expectJsonContentType(r);
      expect(typeof r.json.detail).toBe('string');
    });

    it.each([
      ['Basic', () => Buffer.from(`${alice.username}:${alice.password}`).toString('base64')],
      ['Token', () => aliceToken],
      ['JWT', () => aliceToken],
      ['Digest', () => aliceToken],
    ])('does not accept the %s scheme', async (scheme, value) => {
      const r = await request(ctx.url('/conversation'), {
        headers: { authorization: `${scheme} ${value()}` },
      });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate') ?? '').toMatch(/^Bearer\b/);
      expect(r.json).not.toHaveProperty('conversation');
    });

    it('does not accept the token without a scheme', async () => {
      const r = await request(ctx.url('/conversation'), { headers: { authorization: aliceToken } });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate') ?? '').toMatch(/^Bearer\b/);
    });

    it('does not accept the token in the query string (RFC 6750 §2.3, checklist 6)', async () => {
      const r = await request(ctx.url(`/conversation?access_token=${aliceToken}`));
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(BARE_BEARER_CHALLENGE);
    });

    it.each([
      '/conversation/',
      '/Conversation',
      '/CONVERSATION',
      '//conversation',
      '/./conversation',
      '/conversation;x',
      '/conversation%2F',
      '/%63onversation',
      '/conversation?',
      '/conversation#x',
    ])('never answers 200 without a token on the path variant %s', async (p) => {
      const r = await rawHttp(ctx.server.port, rawHead('GET', p, []));
      expect(r.status).not.toBe(200);
      expect(r.status).toBeLessThan(500);
      expect(r.body).not.toContain('current_user');
    });

    it('does not accept the token in a cookie', async () => {
      const r = await request(ctx.url('/conversation'), {
        headers: { cookie: `access_token=${aliceToken}` },
      });
      expect(r.status).toBe(401);
    });

    it.each([
      ['an empty Bearer', () => 'Bearer'],
      ['Bearer with a space only', () => 'Bearer '],
      ['two tokens', () => 'Bearer a b'],
      ['a token with a space inside', () => `Bearer ${aliceToken.slice(0, 20)} ${aliceToken.slice(20)}`],
      ['a non-b64token character', () => 'Bearer abc{def}.ghi.jkl'],
    ])('answers 401 (or 400 invalid_request) for %s, never 200', async (_n, value) => {
      const r = await request(ctx.url('/conversation'), { headers: { authorization: value() } });
      expect([400, 401], r.text).toContain(r.status);
      expect(r.headers.get('www-authenticate') ?? '').toMatch(/^Bearer\b/);
      if (r.status === 400) expect(r.headers.get('www-authenticate')).toMatch(/error="invalid_request"/);
    });

    it('answers 401/400 for two Authorization headers (RFC 6750 §2)', async () => {
      const r = await rawHttp(
        ctx.server.port,
        rawHead('GET', '/conversation', [
          `Authorization: Bearer ${aliceToken}`,
          `Authorization: Bearer ${bobToken}`,
        ]),
      );
      expect([400, 401]).toContain(r.status);
      expect(r.body).not.toContain('conversation"');
    });

    it('answers 401 invalid_token for garbage', async () => {
      for (const t of [
        'garbage',
        'a.b.c',
        '...',
        'eyJhbGciOiJIUzI1NiJ9',
        'eyJ.eyJ.eyJ',
        aliceToken.toUpperCase(),
      ]) {
        expectInvalidToken(await conv(t), t.slice(0, 20));
      }
    });
  });

  const parts = () => aliceToken.split('.') as [string, string, string];

  describe('forged tokens (RFC 8725, checklist G)', () => {
    it('rejects alg none with empty and original signature, in case variants', async () => {
      const [, p, s] = parts();
      const { header } = splitToken(aliceToken);
      for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
        const h = b64url(JSON.stringify({ ...header, alg }));
        expectInvalidToken(await conv(`${h}.${p}.`), `alg ${alg} empty sig`);
        expectInvalidToken(await conv(`${h}.${p}.${s}`), `alg ${alg} original sig`);
        expectInvalidToken(await conv(`${h}.${p}`), `alg ${alg} two parts`);
      }
    });

    it('rejects HS256/384/512 signed with the public key in every encoding (key confusion)', async () => {
      const { header, payload } = splitToken(aliceToken);
      const jwk = jwks.keys.find((k) => k.kid === header.kid) ?? jwks.keys[0];
      expect(jwk).toBeDefined();
      const pub = createPublicKey({ key: jwk as Json & { kty: string }, format: 'jwk' });
      const pem = pub.export({ type: 'spki', format: 'pem' }).toString();
      const der = pub.export({ type: 'spki', format: 'der' });
      const raw = Buffer.from(jwk?.x as string, 'base64url');
      const keys: [string, Buffer | string][] = [
        ['PEM', pem],
        ['PEM with leading newline', `\n${pem}`],
        ['PEM with leading space', ` ${pem}`],
        ['PEM with leading tab', `\t${pem}`],
        ['PEM with # prefix', `#${pem}`],
        ['PEM with zero-width prefix', `\u200b${pem}`],
        ['PEM trimmed', pem.trim()],
        ['DER', der],
        ['raw 32 bytes', raw],
        ['x as base64url text', jwk?.x as string],
        ['JWK JSON', JSON.stringify(jwk)],
        ['JWKS document', JSON.stringify(jwks)],
      ];
      for (const [name, key] of keys) {
        for (const alg of ['HS256', 'HS384', 'HS512'] as const) {
          const t = hmacSign({ ...header, alg }, payload, key, alg);
          expectInvalidToken(await conv(t), `${alg} with ${name}`);
        }
      }
    });

    it('rejects a stripped, truncated, flipped or padded signature', async () => {
      const [h, p, s] = parts();
      const sig = Buffer.from(s, 'base64url');
      const flipped = Buffer.from(sig);
      flipped[0] = (flipped[0] ?? 0) ^ 1;
      const flippedLast = Buffer.from(sig);
      flippedLast[flippedLast.length - 1] = (flippedLast[flippedLast.length - 1] ?? 0) ^ 0x80;
      const zero = Buffer.alloc(sig.length);
      const cases: [string, string][] = [
        ['stripped', `${h}.${p}.`],
        ['two parts', `${h}.${p}`],
        ['truncated', `${h}.${p}.${s.slice(0, -4)}`],
        ['first bit flipped', `${h}.${p}.${flipped.toString('base64url')}`],
        ['last byte flipped', `${h}.${p}.${flippedLast.toString('base64url')}`],
        ['all-zero signature', `${h}.${p}.${zero.toString('base64url')}`],
        ['padded with =', `${h}.${p}.${s}=`],
        ['standard base64', `${h}.${p}.${sig.toString('base64')}`],
        ['doubled', `${h}.${p}.${s}${s}`],
        ['trailing dot', `${aliceToken}.`],
        ['leading dot', `.${aliceToken}`],
      ];
      for (const [name, t] of cases) {
        if (t === aliceToken) continue;
        expectInvalidToken(await conv(t), name);
      }
    });

    it('rejects payloads swapped between two users and an edited sub', async () => {
      const [ha, pa, sa] = parts();
      const [, pb, sb] = bobToken.split('.') as [string, string, string];
      expectInvalidToken(await conv(`${ha}.${pb}.${sa}`), 'bob payload, alice signature');
      expectInvalidToken(await conv(`${ha}.${pa}.${sb}`), 'alice payload, bob signature');
      const { payload } = splitToken(aliceToken);
      const edited = b64url(JSON.stringify({ ...payload, sub: String(bob.id) }));
      expectInvalidToken(await conv(`${ha}.${edited}.${sa}`), 'sub edited');
      const longer = b64url(JSON.stringify({ ...payload, exp: payload.exp + 86400 }));
      expectInvalidToken(await conv(`${ha}.${longer}.${sa}`), 'exp extended');
    });

    it('rejects a token signed by an attacker key, plain or with an embedded jwk header', async () => {
      const { header, payload } = splitToken(aliceToken);
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const attackerJwk = publicKey.export({ format: 'jwk' });
      expectInvalidToken(await conv(edSign(header, payload, privateKey)), 'attacker key, real kid');
      expectInvalidToken(
        await conv(edSign({ ...header, jwk: attackerJwk }, payload, privateKey)),
        'embedded jwk, real kid',
      );
      expectInvalidToken(
        await conv(edSign({ alg: 'EdDSA', typ: 'at+jwt', jwk: attackerJwk }, payload, privateKey)),
        'embedded jwk, no kid',
      );
      expectInvalidToken(
        await conv(edSign({ alg: 'EdDSA', typ: 'at+jwt', kid: 'attacker' }, payload, privateKey)),
        'attacker kid',
      );
      const fakeCert = randomBytes(300).toString('base64');
      expectInvalidToken(await conv(edSign({ ...header, x5c: [fakeCert] }, payload, privateKey)), 'x5c');
    });

    it('never fetches jku / x5u URLs named in the token (no outbound request)', async () => {
      const { header, payload } = splitToken(aliceToken);
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const attackerJwk = { ...publicKey.export({ format: 'jwk' }), kid: 'evil', alg: 'EdDSA', use: 'sig' };
      let hits = 0;
      const listener = http.createServer((_req, res) => {
        hits += 1;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: [attackerJwk] }));
      });
      const port = await getFreePort();
      await new Promise<void>((r) => listener.listen(port, '127.0.0.1', r));
      try {
        const url = `http://127.0.0.1:${port}/jwks.json`;
        for (const extra of [{ jku: url }, { x5u: url }, { jku: url, kid: 'evil' }]) {
          const t = edSign({ ...header, ...extra }, payload, privateKey);
          expectInvalidToken(await conv(t), JSON.stringify(extra));
        }
        const withIss = edSign(
          { ...header, kid: 'evil' },
          { ...payload, iss: `http://127.0.0.1:${port}` },
          privateKey,
        );
        expectInvalidToken(await conv(withIss), 'attacker iss');
        await sleep(300);
        expect(hits).toBe(0);
      } finally {
        await new Promise((r) => listener.close(r));
      }
    });

    it('rejects kid injection strings and non-string kids, fast', async () => {
      const { header, payload } = splitToken(aliceToken);
      const { privateKey } = generateKeyPairSync('ed25519');
      for (const kid of [
        '../../../../dev/null',
        '/proc/self/environ',
        "' OR '1'='1",
        "x'; DROP TABLE users; --",
        `\${jndi:ldap://127.0.0.1/a}`,
        'k'.repeat(10_000),
        123,
        {},
        [],
        null,
        '',
      ]) {
        const t0 = performance.now();
        expectInvalidToken(
          await conv(edSign({ ...header, kid }, payload, privateKey)),
          `kid ${String(kid).slice(0, 20)}`,
        );
        const [h, p, s] = parts();
        const reheadered = `${b64url(JSON.stringify({ ...header, kid }))}.${p}.${s}`;
        expect(h).toBeDefined();
        expectInvalidToken(await conv(reheadered), `kid swap ${String(kid).slice(0, 20)}`);
        expect(performance.now() - t0).toBeLessThan(2000);
      }
      expect((await conv(aliceToken)).status).toBe(200);
    });

    it('rejects crit and b64:false headers (RFC 7515 §4.1.11, checklist 68)', async () => {
      const [, p, s] = parts();
      const { header } = splitToken(aliceToken);
      for (const extra of [{ crit: ['exp'] }, { crit: ['foo'], foo: 1 }, { b64: false, crit: ['b64'] }]) {
        const h = b64url(JSON.stringify({ ...header, ...extra }));
        expectInvalidToken(await conv(`${h}.${p}.${s}`), JSON.stringify(extra));
      }
    });

    it('rejects JWE-shaped, JSON-serialised, nested and malformed-segment tokens', async () => {
      const [h, p, s] = parts();
      const jweHeader = b64url(
        JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid: splitToken(aliceToken).header.kid }),
      );
      const cases: [string, string][] = [
        ['5-part JWE', `${jweHeader}.${b64url('x')}.${b64url('iv')}.${b64url('ct')}.${b64url('tag')}`],
        [
          '5-part PBES2',
          `${b64url(JSON.stringify({ alg: 'PBES2-HS256+A128KW', enc: 'A128GCM', p2c: 2_000_000_000, p2s: 'AAAA' }))}.a.b.c.d`,
        ],
        ['4 parts', `${h}.${p}.${s}.${s}`],
        ['JWS JSON serialisation', b64url(JSON.stringify({ payload: p, protected: h, signature: s }))],
        ['nested JWT as payload', `${h}.${b64url(aliceToken)}.${s}`],
        ['header not JSON', `${b64url('not json')}.${p}.${s}`],
        ['header a JSON array', `${b64url('[]')}.${p}.${s}`],
        ['payload not JSON', `${h}.${b64url('not json')}.${s}`],
        [
          'invalid UTF-8 payload',
          `${h}.${Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]).toString('base64url')}.${s}`,
        ],
      ];
      for (const [name, t] of cases) expectInvalidToken(await conv(t), name);
    });

    it('rejects a 1 MiB token quickly with a 4xx (or closes the connection) and keeps serving', async () => {
      const big = `${parts()[0]}.${'A'.repeat(1024 * 1024)}.${parts()[2]}`;
      const t0 = performance.now();
      let status: number | undefined;
      try {
        const r = await rawHttp(
          ctx.server.port,
          rawHead('GET', '/conversation', [`Authorization: Bearer ${big}`]),
        );
        status = r.status;
      } catch (e) {
        expect(String(e)).toMatch(/ECONNRESET|EPIPE|socket hang up|closed/i);
      }
      if (status !== undefined) {
        expect(status).toBeGreaterThanOrEqual(400);
        expect(status).toBeLessThan(500);
      }
      expect(performance.now() - t0).toBeLessThan(3000);
      expect((await conv(aliceToken)).status).toBe(200);
    });

    it('rejects a 12 KiB token (under the header limit) with 401 invalid_token', async () => {
      const big = `${parts()[0]}.${'A'.repeat(12 * 1024)}.${parts()[2]}`;
      expectInvalidToken(await conv(big), '12 KiB');
    });

    it('still accepts the genuine token after the whole corpus (control)', async () => {
      expect((await conv(aliceToken)).status).toBe(200);
      expect((await conv(bobToken)).json.current_user).toBe(bob.username);
    });
  });

  describe('methods and hygiene', () => {
    it.each(['POST', 'PUT', 'DELETE', 'PATCH'])(
      'answers 405 with Allow for %s /conversation',
      async (method) => {
        const r = await request(ctx.url('/conversation'), {
          method,
          headers: { authorization: `Bearer ${aliceToken}` },
        });
        expect(r.status).toBe(405);
        expect(r.headers.get('allow') ?? '').toMatch(/GET/);
      },
    );

    it('sends X-Content-Type-Options: nosniff and no X-Powered-By on 200 and 401', async () => {
      for (const r of [
        await conv(aliceToken),
        await conv('garbage'),
        await request(ctx.url('/conversation')),
      ]) {
        expect(r.headers.get('x-content-type-options')).toBe('nosniff');
        expect(r.headers.get('x-powered-by')).toBeNull();
      }
    });

    it('401 bodies do not leak library messages or token content', async () => {
      const r = await conv(`${parts()[0]}.${parts()[1]}.`);
      expect(r.status).toBe(401);
      expect(r.text).not.toMatch(/JWS|JWT[A-Z]|jose|ERR_|signature verification|\n\s+at /);
      expect(r.text).not.toContain(parts()[1]);
    });
  });

  it('never writes the passwords or tokens it saw to the logs', () => {
    expectLogsFreeOf(ctx);
  });
});
