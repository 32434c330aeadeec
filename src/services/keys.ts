import type { SigningKeysRepository, StoredSigningKey } from '../db/signing-keys.ts';
import { AppError } from '../errors.ts';
import type { KeyRing } from '../security/access-tokens.ts';
import type { Clock } from '../security/clock.ts';
import {
  generateEd25519KeyPair,
  hmacSigningKey,
  importEd25519KeyPair,
  type SigningKey,
} from '../security/signing-keys.ts';

export interface LoadedKeyRing extends KeyRing {
  /** Public keys for GET /.well-known/jwks.json. */
  publicJwks(): Record<string, unknown>[];
  /** Re-reads the keys from the database, picking up a rotation made elsewhere. */
  reload(): Promise<void>;
}

export interface KeyRingOptions {
  algorithm: 'EdDSA' | 'HS256';
  secret: string | undefined;
  signingKeys: SigningKeysRepository;
  clock: Clock;
  /** How long a superseded key keeps verifying: the longest a token it signed can live, plus margins. */
  retireAfterSeconds: number;
  /** Least time between two reloads triggered by an unknown kid, so forged kids cannot hammer the database. */
  minReloadIntervalSeconds?: number;
}

/** Returns the key ring: the HS256 secret, or the database's Ed25519 keys, creating the first one if needed. */
export async function loadKeyRing(options: KeyRingOptions): Promise<LoadedKeyRing> {
  if (options.algorithm === 'HS256') {
    if (!options.secret) throw new AppError('internal', 'HS256 needs a secret');
    const key = hmacSigningKey(options.secret);
    return {
      current: () => key,
      find: (kid) => (kid === key.kid ? key : undefined),
      has: (kid) => kid === key.kid,
      publicJwks: () => [],
      reload: async () => {},
    };
  }

  let keys: SigningKey[] = [];
  let byKid = new Map<string, SigningKey>();
  let lastLookupReloadMs = 0;
  const minReloadMs = (options.minReloadIntervalSeconds ?? 5) * 1000;

  const reload = async () => {
    let stored = await activeKeys(options);
    if (stored.length === 0) {
      const generated = await generateEd25519KeyPair();
      await options.signingKeys.insertFirstSigningKey(
        { ...generated, algorithm: 'EdDSA' },
        options.clock.now(),
      );
      stored = await activeKeys(options);
    }
    keys = await Promise.all(stored.map(importEd25519KeyPair));
    byKid = new Map(keys.map((key) => [key.kid, key]));
  };
  await reload();

  return {
    current: () => keys[0] as SigningKey,
    async find(kid) {
      const known = byKid.get(kid);
      if (known || Date.now() - lastLookupReloadMs < minReloadMs) return known;
      lastLookupReloadMs = Date.now();
      await reload();
      return byKid.get(kid);
    },
    has: (kid) => byKid.has(kid),
    publicJwks: () => keys.flatMap((key) => (key.publicJwk ? [key.publicJwk] : [])),
    reload,
  };
}

/** Returns the keys that still verify, newest first, retiring those superseded for longer than tokens live. */
async function activeKeys(options: KeyRingOptions): Promise<StoredSigningKey[]> {
  const now = options.clock.now();
  const stored = await options.signingKeys.findActiveSigningKeys('EdDSA');
  const active: StoredSigningKey[] = [];
  for (const [index, key] of stored.entries()) {
    const supersededAt = index === 0 ? undefined : stored[index - 1]?.createdAt;
    if (supersededAt && now.getTime() - supersededAt.getTime() > options.retireAfterSeconds * 1000) {
      await options.signingKeys.retireSigningKey(key.kid, now);
    } else {
      active.push(key);
    }
  }
  return active;
}

/** Adds a new Ed25519 key; it signs everywhere from the next key reload (at most 30 s), older keys keep verifying. */
export async function rotateSigningKey(signingKeys: SigningKeysRepository, clock: Clock): Promise<string> {
  const generated = await generateEd25519KeyPair();
  await signingKeys.insertSigningKey({ ...generated, algorithm: 'EdDSA' }, clock.now());
  return generated.kid;
}

export interface SigningKeyState {
  kid: string;
  algorithm: string;
  createdAt: Date;
  state: 'signing' | 'verifying' | 'retired';
  retiredAt: Date | undefined;
}

/** Returns every stored key, newest first, with what it is used for now. */
export async function listSigningKeys(signingKeys: SigningKeysRepository): Promise<SigningKeyState[]> {
  const stored = await signingKeys.findAllSigningKeys();
  const signingKid = stored.find((key) => key.retiredAt === undefined)?.kid;
  return stored.map((key) => ({
    kid: key.kid,
    algorithm: key.algorithm,
    createdAt: key.createdAt,
    state: key.retiredAt ? 'retired' : key.kid === signingKid ? 'signing' : 'verifying',
    retiredAt: key.retiredAt,
  }));
}
