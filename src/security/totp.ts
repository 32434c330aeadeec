import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { generateSecret, generateURI, verify } from 'otplib';
import type { HashOptions, PasswordHasher } from './passwords.ts';

// RFC 6238 with the parameters every authenticator app assumes: SHA-1, 6 digits, 30 s steps.
export const TOTP_PERIOD_SECONDS = 30;
const TOTP_DIGITS = 6;
// RFC 4226 §4 recommends 160 bits.
const SECRET_BYTES = 20;
// One step either way (RFC 6238 §5.2, "at most one time step" of network delay); ±60 s is refused.
const TOLERANCE_SECONDS = TOTP_PERIOD_SECONDS;

/** Returns a new 160-bit TOTP secret, base32 as authenticator apps read it. */
export function generateTotpSecret(): string {
  return generateSecret({ length: SECRET_BYTES });
}

/** Returns the otpauth:// URI an authenticator app reads (from a QR code) for this secret. */
export function totpUri(secret: string, issuer: string, accountName: string): string {
  return generateURI({ issuer, label: accountName, secret, algorithm: 'sha1', digits: 6, period: 30 });
}

/**
 * Returns the time step (counter) a code matches at `now`, within one step either way, or undefined. The caller must
 * claim the step so that the code is accepted only once (RFC 6238 §5.2).
 */
export async function matchTotpStep(
  secret: string | Uint8Array,
  code: string,
  now: Date,
  digits: 6 | 8 = TOTP_DIGITS,
): Promise<number | undefined> {
  if (!new RegExp(`^[0-9]{${digits}}$`).test(code)) return undefined;
  const epoch = Math.floor(now.getTime() / 1000);
  const result = await verify({
    secret,
    token: code,
    epoch,
    epochTolerance: TOLERANCE_SECONDS,
    algorithm: 'sha1',
    digits,
    period: TOTP_PERIOD_SECONDS,
  });
  return result.valid ? Math.floor(epoch / TOTP_PERIOD_SECONDS) + result.delta : undefined;
}

// Crockford's base32: no I, L, O or U, so that a code read aloud or retyped is unambiguous.
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const RECOVERY_CODE_CHARACTERS = 16;

/** Returns a recovery code of 80 random bits: 16 Crockford base32 characters in four groups (`XXXX-XXXX-…`). */
export function generateRecoveryCode(): string {
  const bytes = randomBytes(RECOVERY_CODE_CHARACTERS);
  // 256 is a multiple of 32: the low five bits of a uniform byte are uniform.
  const characters = [...bytes].map((byte) => CROCKFORD[byte & 31]).join('');
  return characters.match(/.{4}/g)?.join('-') ?? characters;
}

/**
 * Returns the one form of a recovery code as typed (case, dashes and spaces ignored, O/I/L read as 0/1/1), or
 * undefined when it cannot be one.
 */
export function normaliseRecoveryCode(typed: string): string | undefined {
  const normalised = typed.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
  if (!new RegExp(`^[${CROCKFORD}]{${RECOVERY_CODE_CHARACTERS}}$`).test(normalised)) return undefined;
  return normalised;
}

/**
 * Returns the stored form of a new recovery code: an argon2id PHC string with its own salt, by the password hasher.
 * ASVS 5.0 6.5.2 asks for a password hash of lookup secrets under 112 bits, which 80 bits are.
 */
export async function hashRecoveryCode(
  code: string,
  hasher: Pick<PasswordHasher, 'hash'>,
  options?: HashOptions,
): Promise<string> {
  const normalised = normaliseRecoveryCode(code);
  if (normalised === undefined) throw new Error('not a recovery code');
  return hasher.hash(normalised, options);
}

/**
 * Returns whether a normalised code matches a stored one: an argon2id hash, or the base64url SHA-256 that earlier
 * versions stored, which stays valid so that codes already printed keep working.
 */
export async function recoveryCodeMatches(
  stored: string,
  normalised: string,
  hasher: Pick<PasswordHasher, 'verifyLookupSecret'>,
  options?: HashOptions,
): Promise<boolean> {
  if (stored.startsWith('$')) return hasher.verifyLookupSecret(stored, normalised, options);
  const expected = Buffer.from(createHash('sha256').update(normalised).digest('base64url'));
  const given = Buffer.from(stored);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
