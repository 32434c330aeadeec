import { createHash, createHmac, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';

export interface RefreshToken {
  id: string;
  secret: string;
}

const ID_BYTES = 16;
const SECRET_BYTES = 32;
const PART = /^[A-Za-z0-9_-]+$/;

/** Returns a new random refresh token: a 128-bit public id and a 256-bit secret. */
export function generateRefreshToken(): RefreshToken {
  return {
    id: randomBytes(ID_BYTES).toString('base64url'),
    secret: randomBytes(SECRET_BYTES).toString('base64url'),
  };
}

/** Returns the wire form `id.secret`. */
export function formatRefreshToken(token: RefreshToken): string {
  return `${token.id}.${token.secret}`;
}

/** Returns the parts of a wire-form refresh token, or undefined when it cannot be one (a JWT, say). */
export function parseRefreshToken(value: string): RefreshToken | undefined {
  const parts = value.split('.');
  if (parts.length !== 2) return undefined;
  const [id = '', secret = ''] = parts;
  if (id.length !== 22 || secret.length !== 43 || !isCanonicalPart(id) || !isCanonicalPart(secret)) {
    return undefined;
  }
  return { id, secret };
}

// One token, one spelling: a last character whose padding bits are set decodes to the same bytes, so it is refused.
const isCanonicalPart = (part: string) =>
  PART.test(part) && Buffer.from(part, 'base64url').toString('base64url') === part;

/** Returns the hash stored in place of the secret; SHA-256 suffices for 256 random bits. */
export function hashRefreshSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url');
}

/** Returns whether the secret matches the stored hash, in constant time. */
export function refreshSecretMatches(secret: string, storedHash: string): boolean {
  const actual = Buffer.from(hashRefreshSecret(secret));
  const expected = Buffer.from(storedHash);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/**
 * Returns the token that succeeds `parent` in its family. It is derived with a server-side key rather than
 * drawn at random so that a retry inside the grace window can be given the very same successor although only
 * hashes are stored; without the key, a stolen parent reveals nothing about its successor.
 */
export function deriveSuccessor(parent: RefreshToken, derivationKey: KeyObject): RefreshToken {
  const derive = (label: string, bytes: number) =>
    createHmac('sha256', derivationKey)
      .update(`${label}:${parent.secret}`)
      .digest()
      .subarray(0, bytes)
      .toString('base64url');
  return { id: derive('id', ID_BYTES), secret: derive('secret', SECRET_BYTES) };
}
