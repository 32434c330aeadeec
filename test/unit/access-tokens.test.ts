import { createHash, createHmac, createPrivateKey } from 'node:crypto';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.ts';
import { createAccessTokens, type KeyRing } from '../../src/security/access-tokens.ts';
import {
  generateEd25519KeyPair,
  hmacSigningKey,
  importEd25519KeyPair,
  type SigningKey,
} from '../../src/security/signing-keys.ts';
import { createTestClock } from '../support/clock.ts';
import {
  decodeToken,
  ed25519Sign,
  forgedTokens,
  hmacSign,
  nonCanonicalSignatureVariants,
} from '../support/forge-token.ts';

const ringOf = (key: SigningKey, active = { value: true }): KeyRing => ({
  algorithm: key.algorithm,
  signingKey: async () => key,
  find: (kid) => (kid === key.kid && active.value ? key : undefined),
  has: (kid) => kid === key.kid && active.value,
});
const SECRET = 'q3W9zL0vB7nX2cR5tY8uI1oP4aS6dF0gH3jK7lZ9xC2vB5nM';

async function setups() {
  const stored = await generateEd25519KeyPair();
  const edKey = await importEd25519KeyPair(stored);
  const edPrivate = createPrivateKey({ key: stored.privateJwk as never, format: 'jwk' });
  return [
    {
      name: 'EdDSA',
      ring: ringOf(edKey),
      publicJwk: edKey.publicJwk as Record<string, unknown>,
      signLegit: (h: Record<string, unknown>, p: Record<string, unknown>) => ed25519Sign(h, p, edPrivate),
      hmacSecret: undefined,
    },
    {
      name: 'HS256',
      ring: ringOf(hmacSigningKey(SECRET)),
      publicJwk: undefined,
      signLegit: (h: Record<string, unknown>, p: Record<string, unknown>) => hmacSign(h, p, SECRET),
      hmacSecret: SECRET,
    },
  ];
}

const options = { issuer: 'https://gatehouse.test', audience: 'gatehouse', ttlSeconds: 900 };

describe.each(await setups())('access tokens ($name)', (setup) => {
  const clock = createTestClock();
  const tokens = createAccessTokens({ ...options, keys: setup.ring, clock });

  // Both algorithms sign deterministically: the same claims must give the same token, byte for byte.
  it.each([
    { amr: undefined, authTime: undefined },
    { amr: ['pwd', 'otp', 'mfa'], authTime: new Date('2026-12-01T11:58:20.500Z') },
  ])('writes what jose SignJWT writes for the same claims (amr $amr)', async ({ amr, authTime }) => {
    const issued = await tokens.issue({
      userId: 42,
      username: 'Zoë',
      sessionId: 'sess-1',
      scope: 'conversation:read conversation:write',
      emailVerified: false,
      amr,
      authTime,
    });
    const { payload } = decodeToken(issued.token);
    const key = await setup.ring.signingKey();
    const iat = payload.iat as number;
    const expected = await new SignJWT({
      preferred_username: 'Zoë',
      sid: 'sess-1',
      scope: 'conversation:read conversation:write',
      email_verified: false,
      client_id: 'gatehouse',
      ...(amr ? { amr, auth_time: Math.floor((authTime as Date).getTime() / 1000) } : {}),
    })
      .setProtectedHeader({ alg: key.algorithm, typ: 'at+jwt', kid: key.kid })
      .setIssuer(options.issuer)
      .setAudience(options.audience)
      .setSubject('42')
      .setIssuedAt(iat)
      .setExpirationTime(iat + options.ttlSeconds)
      .setJti(issued.jti)
      .sign(key.signingKey);
    expect(issued.token).toBe(expected);
  });

  it('issues an RFC 9068 token: typ at+jwt, kid, iss, aud, sub, iat, exp, jti, scope, email_verified', async () => {
    const issued = await tokens.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    const { header, payload } = decodeToken(issued.token);
    expect(header).toEqual({ alg: setup.name, typ: 'at+jwt', kid: (await setup.ring.signingKey()).kid });
    expect(payload).toMatchObject({
      iss: options.issuer,
      aud: options.audience,
      sub: '7',
      preferred_username: 'Alice',
      scope: 'conversation',
      email_verified: false,
    });
    expect((payload.exp as number) - (payload.iat as number)).toBe(900);
    expect(issued.expiresInSeconds).toBe(900);
    expect(payload.jti).toBe(issued.jti);
  });

  it('gives every token its own jti', async () => {
    const a = await tokens.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    const b = await tokens.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    expect(a.jti).not.toBe(b.jti);
  });

  it('verifies its own token', async () => {
    const issued = await tokens.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    await expect(tokens.verify(issued.token)).resolves.toMatchObject({ userId: 7, jti: issued.jti });
  });

  it('refuses a token once it has expired, by the injected clock', async () => {
    const local = createTestClock();
    const localTokens = createAccessTokens({ ...options, keys: setup.ring, clock: local });
    const issued = await localTokens.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    local.advanceSeconds(899);
    // Verified twice: the second answer comes from the cache, which must expire the token all the same.
    await expect(localTokens.verify(issued.token)).resolves.toBeDefined();
    await expect(localTokens.verify(issued.token)).resolves.toBeDefined();
    local.advanceSeconds(10);
    await expect(localTokens.verify(issued.token)).rejects.toMatchObject({ code: 'invalid_token' });
  });

  it('refuses a signature written in non-canonical base64url, even while the canonical token is cached', async () => {
    const issued = await tokens.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    await expect(tokens.verify(issued.token)).resolves.toBeDefined();
    const variants = nonCanonicalSignatureVariants(issued.token);
    expect(variants.length).toBeGreaterThan(0);
    for (const variant of variants) {
      await expect(tokens.verify(variant), variant.slice(-3)).rejects.toMatchObject({
        code: 'invalid_token',
      });
    }
  });

  it('refuses a cached token once its key has left the ring', async () => {
    const active = { value: true };
    const local = createAccessTokens({
      ...options,
      keys: ringOf(await setup.ring.signingKey(), active),
      clock,
    });
    const issued = await local.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    await expect(local.verify(issued.token)).resolves.toBeDefined();
    await expect(local.verify(issued.token)).resolves.toBeDefined();
    active.value = false;
    await expect(local.verify(issued.token)).rejects.toMatchObject({ code: 'invalid_token' });
  });

  it('refuses a token from another issuer configuration signed with the same key', async () => {
    const elsewhere = createAccessTokens({
      ...options,
      issuer: 'https://staging.test',
      keys: setup.ring,
      clock,
    });
    const issued = await elsewhere.issue({
      userId: 7,
      username: 'Alice',
      sessionId: 's1',
      scope: 'conversation',
      emailVerified: false,
    });
    await expect(tokens.verify(issued.token)).rejects.toMatchObject({ code: 'invalid_token' });
  });

  it('refuses every token of the forged corpus with invalid_token', async () => {
    const valid = (
      await tokens.issue({
        userId: 7,
        username: 'Alice',
        sessionId: 's1',
        scope: 'conversation',
        emailVerified: false,
      })
    ).token;
    const other = (
      await tokens.issue({
        userId: 8,
        username: 'Bob',
        sessionId: 's1',
        scope: 'conversation',
        emailVerified: false,
      })
    ).token;
    const corpus = forgedTokens({ valid, other, ...setup }).filter(([name]) => name !== 'sub of nobody');
    expect(corpus.length).toBeGreaterThan(40);
    for (const [name, token] of corpus) {
      const outcome = await tokens.verify(token).then(
        () => 'accepted',
        (error: unknown) => (error instanceof AppError ? error.code : `threw ${error}`),
      );
      expect(outcome, name).toBe('invalid_token');
    }
  });
});

describe('HS256 key id', () => {
  it('is stable for one secret and differs between secrets', () => {
    expect(hmacSigningKey(SECRET).kid).toBe(hmacSigningKey(SECRET).kid);
    expect(hmacSigningKey(SECRET).kid).not.toBe(hmacSigningKey(`${SECRET}x`).kid);
  });

  it('is an HMAC keyed by the secret, not a plain hash of the secret that fingerprints it', () => {
    const kid = hmacSigningKey(SECRET).kid;
    for (const encoding of ['hex', 'base64url', 'base64'] as const) {
      const digest = createHash('sha256').update(SECRET).digest(encoding);
      expect(kid).not.toContain(digest.slice(0, 8));
    }
    const expected = createHmac('sha256', SECRET)
      .update('gatehouse hs256 kid')
      .digest('base64url')
      .slice(0, 16);
    expect(kid).toBe(`hs256-${expected}`);
  });
});
