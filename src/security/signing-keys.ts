import { createHmac, randomUUID } from 'node:crypto';
import { type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';

export type SigningAlgorithm = 'EdDSA' | 'HS256';

export interface SigningKey {
  kid: string;
  algorithm: SigningAlgorithm;
  signingKey: CryptoKey | Uint8Array;
  verificationKey: CryptoKey | Uint8Array;
  /** Public JWK for the JWKS document; undefined for symmetric keys, which are never published. */
  publicJwk: JWK | undefined;
}

export interface StoredKeyPair {
  kid: string;
  publicJwk: JWK;
  privateJwk: JWK;
}

/** Returns a fresh Ed25519 key pair as JWKs, ready to store. */
export async function generateEd25519KeyPair(): Promise<StoredKeyPair> {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const kid = randomUUID();
  return { kid, publicJwk: await exportJWK(publicKey), privateJwk: await exportJWK(privateKey) };
}

/** Turns a stored Ed25519 pair into a key usable for signing and verification. */
export async function importEd25519KeyPair(stored: {
  kid: string;
  publicJwk: Record<string, unknown>;
  privateJwk: Record<string, unknown>;
}): Promise<SigningKey> {
  const { kty, crv, x } = stored.publicJwk as JWK;
  const publicJwk: JWK = { kty, crv, x };
  return {
    kid: stored.kid,
    algorithm: 'EdDSA',
    signingKey: (await importJWK(stored.privateJwk as JWK, 'EdDSA')) as CryptoKey,
    verificationKey: (await importJWK(publicJwk, 'EdDSA')) as CryptoKey,
    publicJwk: { ...publicJwk, kid: stored.kid, alg: 'EdDSA', use: 'sig' },
  };
}

/**
 * The HS256 key as the key ring holds it: imported once, since jose imports a key given as bytes again at every
 * signature and verification.
 */
export async function importHmacSigningKey(secret: string): Promise<SigningKey> {
  const key = hmacSigningKey(secret);
  const imported = await crypto.subtle.importKey(
    'raw',
    key.signingKey as Uint8Array<ArrayBuffer>,
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign', 'verify'],
  );
  return { ...key, signingKey: imported, verificationKey: imported };
}

/** Wraps the configured HS256 secret; its kid is derived from the secret so every instance agrees on it. */
export function hmacSigningKey(secret: string): SigningKey {
  const bytes = new TextEncoder().encode(secret);
  // Keyed and domain-separated: a plain hash prefix would match any other digest of the same secret, linking
  // systems that share it and giving a guessed secret something public to be checked against.
  const kid = `hs256-${createHmac('sha256', bytes).update('gatehouse hs256 kid').digest('base64url').slice(0, 16)}`;
  return { kid, algorithm: 'HS256', signingKey: bytes, verificationKey: bytes, publicJwk: undefined };
}
