import { createHash, randomBytes } from 'node:crypto';

/** What a one-time token may do; a token of one purpose is never accepted for another. */
export type OneTimeTokenPurpose = 'verify_email' | 'reset_password';

/** How long a token of each purpose stays usable: a day to verify an address, an hour to reset a password. */
export const ONE_TIME_TOKEN_TTL_SECONDS: Readonly<Record<OneTimeTokenPurpose, number>> = Object.freeze({
  verify_email: 86400,
  reset_password: 3600,
});

export interface GeneratedOneTimeToken {
  /** What the link carries; never stored. */
  token: string;
  /** What the database keeps instead. */
  tokenHash: string;
}

const TOKEN_BYTES = 32;
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

const sha256 = (token: string) => createHash('sha256').update(token).digest('base64url');

/** Returns a new 256-bit token (base64url) and the SHA-256 kept in its place. */
export function generateOneTimeToken(): GeneratedOneTimeToken {
  const token = randomBytes(TOKEN_BYTES).toString('base64url');
  return { token, tokenHash: sha256(token) };
}

/**
 * Returns the stored form of a presented token, or undefined when it cannot be one this service made. SHA-256 without
 * salt or stretching suffices: the token has 256 random bits, so its hash cannot be reversed by guessing.
 */
export function hashOneTimeToken(token: string): string | undefined {
  // One token, one spelling: a last character with padding bits set decodes to the same bytes but is not the token.
  if (!TOKEN_SHAPE.test(token) || Buffer.from(token, 'base64url').toString('base64url') !== token) {
    return undefined;
  }
  return sha256(token);
}
