import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import {
  generateRecoveryCode,
  generateTotpSecret,
  hashRecoveryCode,
  matchTotpStep,
  normaliseRecoveryCode,
  recoveryCodeMatches,
  totpUri,
} from '../../src/security/totp.ts';
import { FAST_ARGON2 } from '../support/build-test-app.ts';

const RFC_SECRET = new TextEncoder().encode('12345678901234567890');

// RFC 6238 appendix B, SHA-1 rows: Unix time → 8-digit TOTP.
const RFC_6238_SHA1 = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
] as const;

describe('TOTP', () => {
  it.each(RFC_6238_SHA1)('matches the RFC 6238 appendix B SHA-1 vector at %i s', async (seconds, code) => {
    const step = await matchTotpStep(RFC_SECRET, code, new Date(seconds * 1000), 8);
    expect(step).toBe(Math.floor(seconds / 30));
    // The 6-digit code apps show is the vector's last six digits (RFC 4226 §5.3: modulo 10^digits).
    expect(await matchTotpStep(RFC_SECRET, code.slice(2), new Date(seconds * 1000))).toBe(
      Math.floor(seconds / 30),
    );
  });

  it('accepts a code one step (30 s) early or late and refuses it two steps (60 s) away', async () => {
    const at = 1234567890;
    const code = '005924';
    for (const offset of [-30, 30]) {
      expect(await matchTotpStep(RFC_SECRET, code, new Date((at + offset) * 1000))).toBe(Math.floor(at / 30));
    }
    for (const offset of [-60, 60]) {
      expect(await matchTotpStep(RFC_SECRET, code, new Date((at + offset) * 1000))).toBeUndefined();
    }
  });

  it('refuses what is not six digits', async () => {
    for (const bad of ['', '00592', '0059240', 'abcdef', ' 005924', '005924\n']) {
      expect(await matchTotpStep(RFC_SECRET, bad, new Date(1234567890 * 1000)), bad).toBeUndefined();
    }
  });

  it('makes 160-bit base32 secrets and an otpauth URI with the standard parameters', () => {
    const secret = generateTotpSecret();
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(generateTotpSecret()).not.toBe(secret);
    const uri = new URL(totpUri(secret, 'Gatehouse', 'alice'));
    expect(uri.protocol).toBe('otpauth:');
    expect(uri.searchParams.get('secret')).toBe(secret);
    expect(uri.searchParams.get('issuer')).toBe('Gatehouse');
  });
});

describe('recovery codes', () => {
  const hasher = createPasswordHasher(FAST_ARGON2);
  const legacyDigest = (normalised: string) => createHash('sha256').update(normalised).digest('base64url');

  it('carry 80 bits as 16 Crockford base32 characters in groups of four', () => {
    const code = generateRecoveryCode();
    expect(code).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$/);
    expect(new Set(Array.from({ length: 100 }, generateRecoveryCode)).size).toBe(100);
  });

  it('read the same however they are typed, and not at all when they cannot be one', () => {
    const code = generateRecoveryCode();
    const normalised = code.replace(/-/g, '');
    expect(normaliseRecoveryCode(code)).toBe(normalised);
    expect(normaliseRecoveryCode(code.toLowerCase().replace(/-/g, ' '))).toBe(normalised);
    expect(normaliseRecoveryCode('o1il-OIIL-0000-0000')).toBe('0111011100000000');
    for (const bad of ['0000-0000-0000-000', 'UUUU-0000-0000-0000', '0000-0000-0000-0000-0', '']) {
      expect(normaliseRecoveryCode(bad), bad).toBeUndefined();
    }
  });

  it('are stored as argon2id with a salt of their own (ASVS 6.5.2), matched however they are typed', async () => {
    const code = generateRecoveryCode();
    const stored = await hashRecoveryCode(code, hasher);
    expect(stored).toMatch(/^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$/);
    expect(await hashRecoveryCode(code, hasher)).not.toBe(stored);
    const typed = normaliseRecoveryCode(code.toLowerCase().replace(/-/g, ' ')) ?? '';
    expect(await recoveryCodeMatches(stored, typed, hasher)).toBe(true);
    const other = normaliseRecoveryCode(generateRecoveryCode()) ?? '';
    expect(await recoveryCodeMatches(stored, other, hasher)).toBe(false);
  });

  it('still match the SHA-256 digest stored by earlier versions, and nothing else', async () => {
    const normalised = normaliseRecoveryCode(generateRecoveryCode()) ?? '';
    const legacy = legacyDigest(normalised);
    expect(await recoveryCodeMatches(legacy, normalised, hasher)).toBe(true);
    const other = normaliseRecoveryCode(generateRecoveryCode()) ?? '';
    expect(await recoveryCodeMatches(legacy, other, hasher)).toBe(false);
    for (const stored of ['', legacy.slice(1), `${legacy}A`, '$2b$04$short']) {
      expect(await recoveryCodeMatches(stored, normalised, hasher), stored).toBe(false);
    }
  });
});
