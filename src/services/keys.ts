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
  let signing: SigningKey | undefined;
  let byKid = new Map<string, SigningKey>();
  let lastLookupReloadMs = 0;
  let reloading: Promise<void> | undefined;
  const minReloadMs = (options.minReloadIntervalSeconds ?? 5) * 1000;

  const load = async () => {
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
    const signingKid = chooseSigningKey(stored, options.clock.now())?.kid;
    signing = keys.find((key) => key.kid === signingKid);
  };
  // Concurrent callers share one reload rather than each querying the database.
  const reload = () => {
    reloading ??= load().finally(() => {
      reloading = undefined;
    });
    return reloading;
  };
  await reload();

  return {
    current: () => signing as SigningKey,
    async find(kid) {
      const known = byKid.get(kid);
      if (known) return known;
      if (!reloading) {
        if (Date.now() - lastLookupReloadMs < minReloadMs) return undefined;
        lastLookupReloadMs = Date.now();
      }
      await reload();
      return byKid.get(kid);
    },
    has: (kid) => byKid.has(kid),
    publicJwks: () => keys.flatMap((key) => (key.publicJwk ? [key.publicJwk] : [])),
    reload,
  };
}

/**
 * A new key is published (JWKS, every instance's ring at its next reload) for this long before it signs, so no
 * instance or outside verifier ever meets a token from a key it has not loaded yet.
 */
export const KEY_PUBLISH_DELAY_SECONDS = 60;

/** Returns the key that signs now: the newest one published long enough, or the only (oldest) one at first start. */
function chooseSigningKey<Key extends { createdAt: Date }>(newestFirst: Key[], now: Date): Key | undefined {
  const publishedBefore = now.getTime() - KEY_PUBLISH_DELAY_SECONDS * 1000;
  return newestFirst.find((key) => key.createdAt.getTime() <= publishedBefore) ?? newestFirst.at(-1);
}

/** Returns the keys that still verify, newest first, retiring those superseded for longer than tokens live. */
async function activeKeys(options: KeyRingOptions): Promise<StoredSigningKey[]> {
  const now = options.clock.now();
  const stored = await options.signingKeys.findActiveSigningKeys('EdDSA');
  const active: StoredSigningKey[] = [];
  for (const [index, key] of stored.entries()) {
    const successor = index === 0 ? undefined : stored[index - 1];
    // The successor took over signing once published; tokens this key signed until then live on from there.
    const supersededAtMs = successor
      ? successor.createdAt.getTime() + KEY_PUBLISH_DELAY_SECONDS * 1000
      : undefined;
    if (supersededAtMs !== undefined && now.getTime() - supersededAtMs > options.retireAfterSeconds * 1000) {
      await options.signingKeys.retireSigningKey(key.kid, now);
    } else {
      active.push(key);
    }
  }
  return active;
}

/** Adds a new Ed25519 key: published at once, signing after KEY_PUBLISH_DELAY_SECONDS; older keys keep verifying. */
export async function rotateSigningKey(signingKeys: SigningKeysRepository, clock: Clock): Promise<string> {
  const generated = await generateEd25519KeyPair();
  await signingKeys.insertSigningKey({ ...generated, algorithm: 'EdDSA' }, clock.now());
  return generated.kid;
}

export interface SigningKeyState {
  kid: string;
  algorithm: string;
  createdAt: Date;
  state: 'signing' | 'verifying' | 'published' | 'retired';
  retiredAt: Date | undefined;
}

/** Returns every stored key, newest first, with what it is used for now. */
export async function listSigningKeys(
  signingKeys: SigningKeysRepository,
  clock: Clock,
): Promise<SigningKeyState[]> {
  const stored = await signingKeys.findAllSigningKeys();
  const signingKid = chooseSigningKey(
    stored.filter((key) => key.retiredAt === undefined),
    clock.now(),
  )?.kid;
  const signingCreatedAt = stored.find((key) => key.kid === signingKid)?.createdAt.getTime() ?? 0;
  return stored.map((key) => ({
    kid: key.kid,
    algorithm: key.algorithm,
    createdAt: key.createdAt,
    state: key.retiredAt
      ? 'retired'
      : key.kid === signingKid
        ? 'signing'
        : key.createdAt.getTime() > signingCreatedAt
          ? 'published'
          : 'verifying',
    retiredAt: key.retiredAt,
  }));
}
