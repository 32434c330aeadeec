import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';

/**
 * Seals secrets stored in the database (private signing keys) with a key-encryption key derived from
 * GATEHOUSE_SECRET, so that a copy of the database, a backup or a read-only role cannot sign tokens.
 */
export interface SecretBox {
  /** The id of the key that seals; older keys of the list only open. */
  readonly sealingKeyId: string;
  /** Returns `gh1:<key id>:<iv>:<ciphertext>:<tag>`, AES-256-GCM, bound to `context` (the row it belongs to). */
  seal(plaintext: string, context: string): string;
  /** Returns the plaintext; throws SecretBoxError when no configured key made it or it was altered. */
  open(sealed: string, context: string): string;
}

export class SecretBoxError extends Error {
  readonly reason: 'unknown_key' | 'corrupt';
  readonly keyId: string | undefined;
  constructor(reason: 'unknown_key' | 'corrupt', keyId: string | undefined, message: string) {
    super(message);
    this.name = 'SecretBoxError';
    this.reason = reason;
    this.keyId = keyId;
  }
}

const FORMAT = 'gh1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
// Fixed for the deployment's life: changing it would make every sealed row and refresh chain unreadable.
const HKDF_SALT = 'gatehouse';

/** The minimum GATEHOUSE_SECRET strength: 32 bytes once decoded (256 bits, AES-256's key size). */
export const MIN_SECRET_BYTES = 32;

/** Returns a new random GATEHOUSE_SECRET: base64url of 32 random bytes. */
export function generateSecret(): string {
  return randomBytes(MIN_SECRET_BYTES).toString('base64url');
}

/** Returns whether the value was sealed by a SecretBox (rows written before encryption hold plain JSON). */
export function isSealed(value: string): boolean {
  return value.startsWith(`${FORMAT}:`);
}

/** Returns the id of the key that sealed the value, or undefined when it is not sealed. */
export function sealedKeyId(value: string): string | undefined {
  return isSealed(value) ? value.split(':')[1] : undefined;
}

function derive(secret: string, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'base64url'), HKDF_SALT, purpose, 32));
}

// Node 24 turns a key given as bytes into a key object inside every createHmac or createCipheriv, several times the
// cost of the HMAC itself (bench/key-objects.ts): keys used per request are made key objects once.
const keyObjectOf = (secret: string, purpose: string): KeyObject => createSecretKey(derive(secret, purpose));

/** Returns a key id that names the secret without revealing anything that would help guess it. */
export function secretKeyId(secret: string): string {
  return createHmac('sha256', derive(secret, 'key id v1'))
    .update('gatehouse')
    .digest('base64url')
    .slice(0, 12);
}

/** Returns the key that derives successor refresh tokens, from the first (current) secret. */
export function deriveRefreshTokenKey(secret: string): KeyObject {
  return keyObjectOf(secret, 'refresh-token derivation v1');
}

/** Returns the key that signs device tokens (throttling's known clients), from one secret. */
export function deriveDeviceTokenKey(secret: string): KeyObject {
  return keyObjectOf(secret, 'device token v1');
}

/**
 * Returns the key under which throttling names an email address (R9), from the first (current) secret: a copy of the
 * counter store (Redis) then tells nothing of which addresses were asked about, where a bare digest of a guessed
 * address would match.
 */
export function deriveMailAddressKey(secret: string): KeyObject {
  return keyObjectOf(secret, 'mail address key v1');
}

/** Builds a box that seals with the first secret and opens with any of them. */
export function createSecretBox(secrets: readonly string[]): SecretBox {
  if (secrets.length === 0) throw new Error('a SecretBox needs at least one secret');
  const keys = new Map(
    secrets.map((secret) => [secretKeyId(secret), keyObjectOf(secret, 'key encryption v1')]),
  );
  const sealingKeyId = secretKeyId(secrets[0] as string);
  const sealingKey = keys.get(sealingKeyId) as KeyObject;

  return {
    sealingKeyId,
    seal(plaintext, context) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', sealingKey, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return [FORMAT, sealingKeyId, iv, ciphertext, cipher.getAuthTag()]
        .map((part) => (typeof part === 'string' ? part : part.toString('base64url')))
        .join(':');
    },
    open(sealed, context) {
      const [format, keyId, iv, ciphertext, tag, extra] = sealed.split(':');
      if (format !== FORMAT || !keyId || !iv || ciphertext === undefined || !tag || extra !== undefined) {
        throw new SecretBoxError('corrupt', keyId, 'not a sealed value');
      }
      const key = keys.get(keyId);
      if (!key) {
        throw new SecretBoxError(
          'unknown_key',
          keyId,
          `sealed with key ${keyId}, which is not in GATEHOUSE_SECRET (configured: ${[...keys.keys()].join(', ')})`,
        );
      }
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'), {
          authTagLength: TAG_BYTES,
        });
        decipher.setAAD(Buffer.from(context, 'utf8'));
        decipher.setAuthTag(Buffer.from(tag, 'base64url'));
        return Buffer.concat([
          decipher.update(Buffer.from(ciphertext, 'base64url')),
          decipher.final(),
        ]).toString('utf8');
      } catch {
        throw new SecretBoxError('corrupt', keyId, `value sealed with key ${keyId} was altered or moved`);
      }
    },
  };
}
