import type { SigningKeysRepository } from '../db/signing-keys.ts';
import type { KeyRing } from '../security/access-tokens.ts';
import type { Clock } from '../security/clock.ts';
import {
  generateEd25519KeyPair,
  hmacSigningKey,
  importEd25519KeyPair,
  type SigningKey,
  type StoredKeyPair,
} from '../security/signing-keys.ts';

export interface LoadedKeyRing extends KeyRing {
  /** Public keys for GET /.well-known/jwks.json. */
  publicJwks(): Record<string, unknown>[];
}

/** Returns the key ring: the HS256 secret, or the database's Ed25519 keys, creating the first one if needed. */
export async function loadKeyRing(options: {
  algorithm: 'EdDSA' | 'HS256';
  secret: string | undefined;
  signingKeys: SigningKeysRepository;
  clock: Clock;
}): Promise<LoadedKeyRing> {
  if (options.algorithm === 'HS256') {
    if (!options.secret) throw new Error('HS256 needs a secret');
    return ringOf([hmacSigningKey(options.secret)]);
  }
  let stored = await options.signingKeys.findActiveSigningKeys('EdDSA');
  if (stored.length === 0) {
    const generated = await generateEd25519KeyPair();
    await options.signingKeys.insertSigningKey({ ...generated, algorithm: 'EdDSA' }, options.clock.now());
    // Another instance may have created one at the same moment: every active key verifies, the newest signs.
    stored = await options.signingKeys.findActiveSigningKeys('EdDSA');
  }
  const keys = await Promise.all(stored.map((key) => importEd25519KeyPair(key as unknown as StoredKeyPair)));
  return ringOf(keys);
}

function ringOf(keys: SigningKey[]): LoadedKeyRing {
  const current = keys[0];
  if (!current) throw new Error('no signing key');
  const byKid = new Map(keys.map((key) => [key.kid, key]));
  return {
    current: () => current,
    find: (kid) => byKid.get(kid),
    publicJwks: () => keys.flatMap((key) => (key.publicJwk ? [key.publicJwk] : [])),
  };
}
