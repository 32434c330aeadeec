import { generateKeyPairSync, randomBytes, randomUUID, sign } from 'node:crypto';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import {
  b64url,
  expectInvalidToken,
  expectLogsFreeOf,
  getWithToken,
  hmacSign,
  type Json,
  login,
  nowSeconds,
  postForm,
  type RegisteredUser,
  registerUser,
  request,
  splitToken,
} from './support/client.ts';
import { DIALECTS, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const SECRET = randomBytes(32).toString('base64url');
const ISSUER = 'https://gatehouse.test';
const AUDIENCE = 'gatehouse-api-test';
const TTL = 120;
const TUTORIAL_SECRET = '09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7';

describe.each(DIALECTS)('HS256 tokens and forged claims (%s)', (dialect) => {
  const ctx = useServer(dialect, {
    JWT_ALGORITHM: 'HS256',
    JWT_SECRET: SECRET,
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    ACCESS_TOKEN_TTL_SECONDS: String(TTL),
  });
  ctx.track(SECRET);
  let alice: RegisteredUser;
  let bob: RegisteredUser;
  let token: string;
  let header: Json;
  let payload: Json;
  let controlStatus = 0;

  /** Re-signs the genuine token's header/claims with changes; `undefined` deletes a member. */
  const forge = (
    h: Json = {},
    p: Json = {},
    opts: { alg?: 'HS256' | 'HS384' | 'HS512'; key?: Buffer | string } = {},
  ): string => {
    const hh: Json = { ...header, ...h };
    const pp: Json = { ...payload, jti: randomUUID(), ...p };
    for (const [k, v] of Object.entries(h)) if (v === undefined) delete hh[k];
    for (const [k, v] of Object.entries(p)) if (v === undefined) delete pp[k];
    return hmacSign(hh, pp, opts.key ?? SECRET, opts.alg ?? 'HS256');
  };
  const conv = (t: string) => getWithToken(ctx.url('/conversation'), t);
  const expectRefused = async (t: string, what: string) => {
    expect(controlStatus, 'control token re-signed with the secret must be accepted first').toBe(200);
    expectInvalidToken(await conv(t), what);
  };

  beforeAll(async () => {
    alice = await registerUser(ctx);
    bob = await registerUser(ctx);
    token = await login(ctx, alice.username, alice.password);
    ({ header, payload } = splitToken(token));
    controlStatus = (await conv(forge())).status;
  }, 60_000);

  describe('issued tokens follow the configuration', () => {
    it('uses HS256, typ at+jwt, a kid, and the configured issuer, audience and TTL', async () => {
      expect(header.alg).toBe('HS256');
      expect(header.typ).toBe('at+jwt');
      expect(typeof header.kid).toBe('string');
      expect(payload.iss).toBe(ISSUER);
      expect(Array.isArray(payload.aud) ? payload.aud : [payload.aud]).toContain(AUDIENCE);
      expect(payload.exp - payload.iat).toBe(TTL);
      const r = await postForm(ctx.url('/token'), { username: alice.username, password: alice.password });
      expect(r.json.expires_in).toBe(TTL);
      ctx.track(r.json.access_token);
    });

    it('accepts the genuine token and a faithful re-signing of it (control for the forged corpus)', async () => {
      expect((await conv(token)).status).toBe(200);
      expect(controlStatus).toBe(200);
    });

    it('never publishes the HMAC secret (JWKS, OpenAPI)', async () => {
      for (const p of ['/.well-known/jwks.json', '/openapi.json']) {
        const r = await request(ctx.url(p));
        expect(r.text).not.toContain(SECRET);
        expect(r.text).not.toContain(b64url(SECRET));
        if (p.includes('jwks') && r.status === 200) {
          for (const k of (r.json.keys ?? []) as Json[]) {
            expect(k).not.toHaveProperty('k');
            expect(k.kty).not.toBe('oct');
          }
        }
      }
    });
  });

  describe('time claims (RFC 7519, checklist 64)', () => {
    it('rejects an expired token (exp an hour ago, and 2 minutes ago)', async () => {
      const now = nowSeconds();
      await expectRefused(forge({}, { iat: now - 7200, exp: now - 3600 }), 'exp -3600');
      await expectRefused(forge({}, { iat: now - 240, exp: now - 120 }), 'exp -120');
    });

    it('rejects a token without exp', async () => {
      await expectRefused(forge({}, { exp: undefined }), 'no exp');
    });

    it('rejects exp of the wrong type', async () => {
      const later = nowSeconds() + 600;
      await expectRefused(forge({}, { exp: String(later) }), 'exp string');
      await expectRefused(forge({}, { exp: true }), 'exp true');
      await expectRefused(forge({}, { exp: null }), 'exp null');
    });

    it('rejects nbf in the future', async () => {
      await expectRefused(forge({}, { nbf: nowSeconds() + 3600 }), 'nbf +3600');
    });

    it('rejects iat far in the future', async () => {
      const now = nowSeconds();
      await expectRefused(forge({}, { iat: now + 3600, exp: now + 3700 }), 'iat +3600');
    });
  });

  describe('issuer, audience, type (RFC 8725 §3.8, §3.9, §3.11)', () => {
    it('rejects a wrong or missing iss', async () => {
      await expectRefused(forge({}, { iss: 'https://evil.example' }), 'iss evil');
      await expectRefused(forge({}, { iss: 'http://localhost:8000' }), 'iss default, not configured');
      await expectRefused(forge({}, { iss: `${ISSUER}/` }), 'iss trailing slash');
      await expectRefused(forge({}, { iss: undefined }), 'no iss');
    });

    it('rejects a wrong or missing aud', async () => {
      await expectRefused(forge({}, { aud: 'other-api' }), 'aud other');
      await expectRefused(forge({}, { aud: ['other-api', 'another'] }), 'aud array without us');
      await expectRefused(forge({}, { aud: 'gatehouse' }), 'aud default, not configured');
      await expectRefused(forge({}, { aud: undefined }), 'no aud');
    });

    it('rejects typ JWT, rt+jwt, other or missing typ', async () => {
      for (const typ of ['JWT', 'jwt', 'rt+jwt', 'id+jwt', 'application/jwt', undefined]) {
        await expectRefused(forge({ typ }), `typ ${typ}`);
      }
    });
  });

  describe('algorithm and key pinning (RFC 8725 §3.1)', () => {
    it('rejects HS384 and HS512 with the same secret', async () => {
      await expectRefused(forge({ alg: 'HS384' }, {}, { alg: 'HS384' }), 'HS384');
      await expectRefused(forge({ alg: 'HS512' }, {}, { alg: 'HS512' }), 'HS512');
    });

    it('rejects a header alg that disagrees with the signature', async () => {
      await expectRefused(forge({ alg: 'HS512' }), 'alg HS512, HS256 signature');
      await expectRefused(forge({ alg: 'hs256' }), 'alg hs256 lower case');
      await expectRefused(forge({ alg: 'none' }), 'alg none with HS256 signature');
      await expectRefused(forge({ alg: undefined }), 'no alg');
    });

    it('rejects alg none in case variants', async () => {
      for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
        const t = forge({ alg });
        const [h, p] = t.split('.');
        await expectRefused(`${h}.${p}.`, `alg ${alg}`);
      }
    });

    it('rejects tokens signed with the FastAPI tutorial secret or a near-miss of the secret', async () => {
      await expectRefused(forge({}, {}, { key: TUTORIAL_SECRET }), 'tutorial secret');
      await expectRefused(forge({}, {}, { key: `${SECRET}x` }), 'secret + x');
      await expectRefused(forge({}, {}, { key: SECRET.slice(0, -1) }), 'secret - 1 char');
      await expectRefused(forge({}, {}, { key: '' }), 'empty key');
    });

    it('rejects an EdDSA token signed by an attacker', async () => {
      const { privateKey } = generateKeyPairSync('ed25519');
      const h = b64url(JSON.stringify({ ...header, alg: 'EdDSA' }));
      const p = b64url(JSON.stringify(payload));
      const t = `${h}.${p}.${sign(null, Buffer.from(`${h}.${p}`), privateKey).toString('base64url')}`;
      await expectRefused(t, 'EdDSA by attacker');
    });

    it('rejects an unknown, missing or injected kid (verification pins kid)', async () => {
      for (const kid of [
        'unknown-kid',
        undefined,
        '../../../../dev/null',
        "' OR '1'='1",
        123,
        {},
        'k'.repeat(10_000),
      ]) {
        await expectRefused(forge({ kid }), `kid ${String(kid).slice(0, 20)}`);
      }
    });

    it('rejects embedded jwk / jku headers', async () => {
      await expectRefused(
        forge(
          { jwk: { kty: 'oct', k: b64url('attacker-secret-attacker-secret!') } },
          {},
          { key: 'attacker-secret-attacker-secret!' },
        ),
        'jwk oct',
      );
      await expectRefused(forge({ jku: 'http://127.0.0.1:1/jwks.json' }, {}, { key: 'x' }), 'jku');
    });

    it('rejects unknown crit extensions even when correctly signed', async () => {
      await expectRefused(forge({ crit: ['foo'], foo: 1 }), 'crit foo');
      await expectRefused(forge({ b64: false, crit: ['b64'] }), 'b64 false');
    });
  });

  describe('subject (RFC 8725 §3.8)', () => {
    it('rejects a correctly signed token whose user does not exist', async () => {
      await expectRefused(forge({}, { sub: '999999999' }), 'sub 999999999');
      await expectRefused(forge({}, { sub: '0' }), 'sub 0');
      await expectRefused(forge({}, { sub: '-1' }), 'sub -1');
    });

    it('rejects subs that overflow or confuse the id column type (no 5xx)', async () => {
      for (const sub of [
        '9223372036854775808',
        '99999999999999999999999999',
        '1e3',
        '0x10',
        '1.0',
        '+1',
        'abc\u0000',
        '\ud800',
      ]) {
        await expectRefused(forge({}, { sub }), `sub ${JSON.stringify(sub)}`);
      }
    });

    it('rejects a sub of the wrong type or shape', async () => {
      for (const sub of [
        alice.id,
        [String(alice.id)],
        { id: alice.id },
        null,
        '',
        ` ${alice.id}`,
        `${alice.id}abc`,
        "1' OR '1'='1",
        undefined,
      ]) {
        await expectRefused(forge({}, { sub }), `sub ${JSON.stringify(sub)}`);
      }
    });

    it('rejects a signed payload that is not valid UTF-8 JSON', async () => {
      const h = b64url(JSON.stringify(header));
      const p = Buffer.from([
        0x7b, 0x22, 0x73, 0x75, 0x62, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d,
      ]).toString('base64url');
      const { createHmac } = await import('node:crypto');
      const s = createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url');
      await expectRefused(`${h}.${p}.${s}`, 'invalid UTF-8');
      const p2 = b64url('[1,2,3]');
      const s2 = createHmac('sha256', SECRET).update(`${h}.${p2}`).digest('base64url');
      await expectRefused(`${h}.${p2}.${s2}`, 'payload array');
    });

    it('handles duplicate claim names consistently (RFC 7519 §4: reject or last wins)', async () => {
      const h = b64url(JSON.stringify(header));
      const pObj: Json = { ...payload, jti: randomUUID() };
      const { sub: _sub, ...rest } = pObj;
      const text = `{"sub":${JSON.stringify(String(bob.id))},${JSON.stringify(rest).slice(1, -1)},"sub":${JSON.stringify(String(alice.id))}}`;
      const p = b64url(text);
      const { createHmac } = await import('node:crypto');
      const sig = createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url');
      const r = await conv(`${h}.${p}.${sig}`);
      expect([200, 401]).toContain(r.status);
      if (r.status === 200) expect(r.json.current_user).toBe(alice.username);
    });

    it('names the user from sub, never from preferred_username', async () => {
      const t = forge({}, { sub: String(bob.id), preferred_username: alice.username });
      const r = await conv(t);
      expect([200, 401]).toContain(r.status);
      if (r.status === 200) expect(r.json.current_user).toBe(bob.username);
      const t2 = forge({}, { preferred_username: bob.username });
      const r2 = await conv(t2);
      if (r2.status === 200) expect(r2.json.current_user).toBe(alice.username);
    });
  });

  it('never writes the passwords, tokens or secret to the logs', () => {
    expectLogsFreeOf(ctx);
  });
});
