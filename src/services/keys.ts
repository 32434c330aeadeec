import type { SigningKeysRepository, StoredSigningKey } from '../db/signing-keys.ts';
import { AppError } from '../errors.ts';
import type { KeyRing } from '../security/access-tokens.ts';
import type { Clock } from '../security/clock.ts';
import { isSealed, type SecretBox, sealedKeyId } from '../security/secret-box.ts';
import {
  generateEd25519KeyPair,
  importEd25519KeyPair,
  importHmacSigningKey,
  type SigningKey,
} from '../security/signing-keys.ts';

export interface LoadedKeyRing extends KeyRing {
  /** Public keys for GET /.well-known/jwks.json, re-read when over a second old like the signing key. */
  publicJwks(): Promise<Record<string, unknown>[]>;
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
  /** Seals private keys at rest and opens them. */
  box: SecretBox;
  /** Told of a key added elsewhere that this instance cannot open (its GATEHOUSE_SECRET lacks the key's secret). */
  onUnreadableKey?: (kid: string, error: unknown) => void;
}

// Before signing or publishing, keys older than this are re-read: a rotation reaches every instance within a second.
const SIGNING_FRESHNESS_MS = 1000;
// A kid that was not found is not looked up again for this long, so forged kids cannot hammer the database.
const MISSED_KID_MEMORY_MS = 5000;
const MIN_LOOKUP_RELOAD_GAP_MS = 100;

/** Returns the key ring: the HS256 secret, or the database's Ed25519 keys, creating the first one if needed. */
export async function loadKeyRing(options: KeyRingOptions): Promise<LoadedKeyRing> {
  if (options.algorithm === 'HS256') {
    if (!options.secret) throw new AppError('internal', 'HS256 needs a secret');
    const key = await importHmacSigningKey(options.secret);
    return {
      algorithm: 'HS256',
      signingKey: async () => key,
      find: (kid) => (kid === key.kid ? key : undefined),
      has: (kid) => kid === key.kid,
      publicJwks: async () => [],
      reload: async () => {},
    };
  }

  let keys: SigningKey[] = [];
  let byKid = new Map<string, SigningKey>();
  let loadedAtMs = 0;
  let lastLookupReloadMs = 0;
  let reloading: Promise<void> | undefined;
  const missedKids = new Map<string, number>();

  const load = async () => {
    let stored = await options.signingKeys.findActiveSigningKeys('EdDSA');
    if (stored.length === 0) {
      await options.signingKeys.insertFirstSigningKey(
        await generateSealedKeyPair(options.box),
        options.clock.now(),
      );
      stored = await options.signingKeys.findActiveSigningKeys('EdDSA');
    }
    const opened = new Map<string, SigningKey>();
    for (const row of stored) {
      // A key is opened once: a reload costs a query, not a decryption, and a key opened before a later change of
      // the instance's secrets keeps working until restart.
      const known = byKid.get(row.kid);
      if (known) {
        opened.set(row.kid, known);
        continue;
      }
      try {
        opened.set(row.kid, await openSigningKey(row, options.box));
      } catch (error) {
        // At start every active key must open: a wrong GATEHOUSE_SECRET must stop the instance, not make it sign
        // with a key of its own. Later, a key another instance added under a secret this one lacks is skipped.
        if (loadedAtMs === 0) throw unreadableKeyError(row, error);
        options.onUnreadableKey?.(row.kid, error);
      }
    }
    const kept = await retireSupersededKeys(stored, opened, options);
    if (kept.length === 0) throw unreadableKeyError(stored[0] as StoredSigningKey, undefined);
    keys = kept;
    byKid = new Map(keys.map((key) => [key.kid, key]));
    loadedAtMs = options.clock.now().getTime();
  };
  // Concurrent callers share one reload rather than each querying the database.
  const reload = () => {
    reloading ??= load().finally(() => {
      reloading = undefined;
    });
    return reloading;
  };
  const reloadIfStale = async () => {
    if (options.clock.now().getTime() - loadedAtMs > SIGNING_FRESHNESS_MS) await reload();
  };
  await reload();

  return {
    algorithm: 'EdDSA',
    async signingKey() {
      await reloadIfStale();
      return keys[0] as SigningKey;
    },
    async find(kid) {
      const known = byKid.get(kid);
      if (known) return known;
      const now = options.clock.now().getTime();
      if (now - (missedKids.get(kid) ?? 0) < MISSED_KID_MEMORY_MS) return undefined;
      if (!reloading && now - lastLookupReloadMs < MIN_LOOKUP_RELOAD_GAP_MS) return undefined;
      lastLookupReloadMs = now;
      await reload();
      const found = byKid.get(kid);
      if (!found) {
        if (missedKids.size >= 1000) missedKids.clear();
        missedKids.set(kid, options.clock.now().getTime());
      }
      return found;
    },
    has: (kid) => byKid.has(kid),
    // Whoever fetches the JWKS from any instance must find every key that any instance signs with.
    async publicJwks() {
      await reloadIfStale();
      return keys.flatMap((key) => (key.publicJwk ? [key.publicJwk] : []));
    },
    reload,
  };
}

/**
 * Returns the opened keys that still verify, newest first, retiring those superseded for longer than tokens live. A
 * key is superseded when a newer key this instance can open was created (instances sign with the newest within a
 * second of that); one it cannot open does not supersede anything here, so the instance keeps signing with the
 * newest key it has rather than retiring it and being left with none.
 */
async function retireSupersededKeys(
  stored: StoredSigningKey[],
  opened: Map<string, SigningKey>,
  options: KeyRingOptions,
): Promise<SigningKey[]> {
  const now = options.clock.now();
  const kept: SigningKey[] = [];
  let supersededAtMs: number | undefined;
  for (const row of stored) {
    const key = opened.get(row.kid);
    if (!key) continue;
    if (supersededAtMs !== undefined && now.getTime() - supersededAtMs > options.retireAfterSeconds * 1000) {
      await options.signingKeys.retireSigningKey(row.kid, now);
    } else {
      kept.push(key);
    }
    supersededAtMs = row.createdAt.getTime();
  }
  return kept;
}

/** Adds a new Ed25519 key; every instance signs with it from its next login on, older keys keep verifying. */
export async function rotateSigningKey(
  signingKeys: SigningKeysRepository,
  clock: Clock,
  box: SecretBox,
): Promise<string> {
  // A key sealed with a secret the instances do not hold is one none of them can sign with, and every next start is
  // refused for it: a secret that does not open the keys in use adds none, as a start with it is refused.
  for (const key of await signingKeys.findAllSigningKeys()) {
    if (key.retiredAt !== undefined || !isSealed(key.sealedPrivateJwk)) continue;
    try {
      box.open(key.sealedPrivateJwk, sealingContext(key.kid));
    } catch (cause) {
      throw new AppError(
        'internal',
        `GATEHOUSE_SECRET does not open signing key ${key.kid}, so no new key was made: run this with the secret ` +
          'the servers use (during a rotation, the list "new,old")',
        { cause },
      );
    }
  }
  const generated = await generateSealedKeyPair(box);
  await signingKeys.insertSigningKey(generated, clock.now());
  return generated.kid;
}

export interface SealingReport {
  /** Keys sealed (or re-sealed) with the current secret by this call. */
  sealed: string[];
  /** Keys that no configured secret opens: left as they are. */
  unreadable: string[];
  /** Keys in plain text written after the one-time sealing: not Gatehouse's, left as they are and never used. */
  planted: string[];
}

const SEALING_ATTEMPTS = 3;

/**
 * Seals the private keys stored in plain text by versions before encryption (once: plain text appearing later was
 * written by someone else and is reported, never sealed or used); with `reseal`, also those sealed with an older
 * secret of the list, so that it can then be dropped. Safe while instances serve: each row is replaced only if
 * unchanged since it was read, and a row changed meanwhile is read again.
 */
export async function sealSigningKeys(
  signingKeys: SigningKeysRepository,
  box: SecretBox,
  options: { reseal: boolean; now: Date },
): Promise<SealingReport> {
  const report: SealingReport = { sealed: [], unreadable: [], planted: [] };
  const plaintextAllowed = !(await signingKeys.werePlaintextKeysSealed());
  for (let attempt = 1; attempt <= SEALING_ATTEMPTS; attempt += 1) {
    report.unreadable = [];
    report.planted = [];
    let missed = false;
    for (const key of await signingKeys.findAllSigningKeys()) {
      const stored = key.sealedPrivateJwk;
      if (isSealed(stored) && (!options.reseal || sealedKeyId(stored) === box.sealingKeyId)) continue;
      if (!isSealed(stored) && !plaintextAllowed) {
        report.planted.push(key.kid);
        continue;
      }
      let plaintext: string;
      try {
        plaintext = isSealed(stored) ? box.open(stored, sealingContext(key.kid)) : stored;
      } catch {
        report.unreadable.push(key.kid);
        continue;
      }
      const sealed = box.seal(plaintext, sealingContext(key.kid));
      if (await signingKeys.replaceSealedPrivateJwk(key.kid, stored, sealed)) report.sealed.push(key.kid);
      else missed = true;
    }
    if (!missed) break;
  }
  if (plaintextAllowed) await signingKeys.markPlaintextKeysSealed(options.now);
  return report;
}

/** Returns the kids of the keys that do not open with the first secret alone (before dropping the others). */
export async function findKeysNotSealedWith(
  signingKeys: SigningKeysRepository,
  box: SecretBox,
): Promise<string[]> {
  const notSealed: string[] = [];
  for (const key of await signingKeys.findAllSigningKeys()) {
    if (sealedKeyId(key.sealedPrivateJwk) !== box.sealingKeyId) notSealed.push(key.kid);
  }
  return notSealed;
}

// Binds each ciphertext to its row: a sealed key copied onto another kid does not open.
const sealingContext = (kid: string) => `signing_keys.private_jwk:${kid}`;

async function generateSealedKeyPair(box: SecretBox) {
  const generated = await generateEd25519KeyPair();
  return {
    kid: generated.kid,
    algorithm: 'EdDSA',
    publicJwk: generated.publicJwk as Record<string, unknown>,
    sealedPrivateJwk: box.seal(JSON.stringify(generated.privateJwk), sealingContext(generated.kid)),
  };
}

async function openSigningKey(stored: StoredSigningKey, box: SecretBox): Promise<SigningKey> {
  // Keys from before encryption were sealed at start (sealSigningKeys); one in plain text now was not written here.
  if (!isSealed(stored.sealedPrivateJwk))
    throw new Error('it is stored in plain text, which Gatehouse never writes');
  const privateJwk = JSON.parse(box.open(stored.sealedPrivateJwk, sealingContext(stored.kid)));
  // The public half is taken from the sealed private JWK: the public_jwk column is not sealed, and someone who can
  // write to the database must not be able to swap in a public key of their own.
  if (privateJwk.x !== stored.publicJwk.x)
    throw new Error('its public key does not match its sealed private key');
  return importEd25519KeyPair({ kid: stored.kid, publicJwk: privateJwk, privateJwk });
}

function unreadableKeyError(stored: StoredSigningKey, cause: unknown): AppError {
  if (!isSealed(stored.sealedPrivateJwk)) {
    return new AppError(
      'internal',
      `signing key ${stored.kid} is stored in plain text, which Gatehouse never writes: someone wrote it to the ` +
        `database; supersede and retire it (npm run keys -- rotate, then npm run keys -- retire ${stored.kid}) and find out who could write there`,
      { cause },
    );
  }
  return new AppError(
    'internal',
    `signing key ${stored.kid} cannot be decrypted: ${cause instanceof Error ? cause.message : 'no key opens'}. ` +
      'Start with the GATEHOUSE_SECRET it was sealed with (during a rotation, the list "new,old").',
    { cause },
  );
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
