import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  generateOneTimeToken,
  hashOneTimeToken,
  ONE_TIME_TOKEN_TTL_SECONDS,
} from '../../src/security/one-time-tokens.ts';

describe('one-time tokens', () => {
  it('are 32 random bytes as unpadded base64url, stored as the base64url SHA-256 of the token', () => {
    const { token, tokenHash } = generateOneTimeToken();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
    expect(tokenHash).toBe(createHash('sha256').update(token).digest('base64url'));
    expect(hashOneTimeToken(token)).toBe(tokenHash);
    expect(tokenHash).not.toContain(token);
  });

  it('differ every time', () => {
    const tokens = new Set(Array.from({ length: 100 }, () => generateOneTimeToken().token));
    expect(tokens.size).toBe(100);
  });

  it('refuse to hash what cannot be a token, so that nothing else is looked up', () => {
    const { token } = generateOneTimeToken();
    for (const bad of ['', 'short', `${token}=`, `${token}A`, token.slice(1), `${token.slice(0, 42)}+`]) {
      expect(hashOneTimeToken(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });

  it('live 24 hours for email verification and one hour for a password reset', () => {
    expect(ONE_TIME_TOKEN_TTL_SECONDS).toEqual({ verify_email: 86400, reset_password: 3600 });
  });
});
