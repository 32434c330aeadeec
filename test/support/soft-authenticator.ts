import { createHash, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from '@simplewebauthn/server';

// A minimal CBOR encoder (RFC 8949): unsigned and negative integers, byte and text strings, maps. Enough for an
// attestation object of format "none" and a COSE key.
type Cbor = number | string | Uint8Array | Map<Cbor, Cbor> | Record<string, unknown>;

function head(major: number, length: number): Buffer {
  if (length < 24) return Buffer.from([(major << 5) | length]);
  if (length < 0x100) return Buffer.from([(major << 5) | 24, length]);
  if (length < 0x10000) {
    const out = Buffer.alloc(3);
    out[0] = (major << 5) | 25;
    out.writeUInt16BE(length, 1);
    return out;
  }
  const out = Buffer.alloc(5);
  out[0] = (major << 5) | 26;
  out.writeUInt32BE(length, 1);
  return out;
}

export function encodeCbor(value: Cbor): Buffer {
  if (typeof value === 'number') return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    return Buffer.concat([head(3, bytes.length), bytes]);
  }
  if (value instanceof Uint8Array) return Buffer.concat([head(2, value.length), value]);
  const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
  return Buffer.concat([
    head(5, entries.length),
    ...entries.flatMap(([key, inner]) => [encodeCbor(key as Cbor), encodeCbor(inner as Cbor)]),
  ]);
}

const FLAG_UP = 0x01;
const FLAG_UV = 0x04;
const FLAG_BE = 0x08;
const FLAG_BS = 0x10;
const FLAG_AT = 0x40;

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest();
const b64url = (data: Buffer | Uint8Array) => Buffer.from(data).toString('base64url');

export type SoftAlgorithm = 'ES256' | 'EdDSA';

export interface SoftCredential {
  id: Buffer;
  algorithm: SoftAlgorithm;
  privateKey: KeyObject;
  publicKey: KeyObject;
  signCount: number;
  userHandle: string;
  rpId: string;
}

export interface SoftAuthenticatorOptions {
  /** The origin clientDataJSON names: the page the ceremony runs on. */
  origin: string;
  algorithm?: SoftAlgorithm;
  /** BE: a synced passkey (swk) rather than one bound to this device (hwk). */
  backupEligible?: boolean;
  /** How much each assertion adds to the counter; 0 behaves like synced passkeys, which keep it at 0. */
  counterStep?: number;
}

/** What one ceremony may get wrong on purpose. */
export interface CeremonyOverrides {
  userVerified?: boolean;
  userPresent?: boolean;
  origin?: string;
  /** The RP ID whose hash goes into authenticatorData. */
  rpId?: string;
  /** The counter to report instead of the next one (a clone's). */
  signCount?: number;
  /** Flips a byte of the signature. */
  bogusSignature?: boolean;
  /** Another challenge than the options' (base64url). */
  challenge?: string;
  /** Uses this credential instead of the newest one the RP allows. */
  credential?: SoftCredential;
  /** Names this id (and rawId) in a registration's response instead of its credential's: a made-up response. */
  responseId?: string;
}

function coseKeyOf(credential: SoftCredential): Buffer {
  const jwk = credential.publicKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x ?? '', 'base64url');
  if (credential.algorithm === 'EdDSA') {
    return encodeCbor(
      new Map<Cbor, Cbor>([
        [1, 1],
        [3, -8],
        [-1, 6],
        [-2, x],
      ]),
    );
  }
  return encodeCbor(
    new Map<Cbor, Cbor>([
      [1, 2],
      [3, -7],
      [-1, 1],
      [-2, x],
      [-3, Buffer.from(jwk.y ?? '', 'base64url')],
    ]),
  );
}

/**
 * A software authenticator of WebAuthn L3 (format "none"): its credentials live in memory, so that registration and
 * assertions can be driven with app.inject, and every field a browser would fill in can be made wrong on purpose.
 */
export function createSoftAuthenticator(options: SoftAuthenticatorOptions) {
  const credentials: SoftCredential[] = [];
  const algorithm = options.algorithm ?? 'ES256';
  const counterStep = options.counterStep ?? 1;

  const flagsOf = (overrides: CeremonyOverrides, attested: boolean) =>
    ((overrides.userPresent ?? true) ? FLAG_UP : 0) |
    ((overrides.userVerified ?? true) ? FLAG_UV : 0) |
    (options.backupEligible ? FLAG_BE | FLAG_BS : 0) |
    (attested ? FLAG_AT : 0);

  const clientData = (type: string, challenge: string, overrides: CeremonyOverrides) =>
    Buffer.from(
      JSON.stringify({
        type,
        challenge: overrides.challenge ?? challenge,
        origin: overrides.origin ?? options.origin,
        crossOrigin: false,
      }),
    );

  const counterBytes = (count: number) => {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(count, 0);
    return out;
  };

  return {
    credentials,

    /** Makes a credential for the options, as navigator.credentials.create() would answer. */
    register(
      creation: PublicKeyCredentialCreationOptionsJSON,
      overrides: CeremonyOverrides = {},
    ): RegistrationResponseJSON {
      const keys =
        algorithm === 'EdDSA'
          ? generateKeyPairSync('ed25519')
          : generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const credential: SoftCredential = {
        id: randomBytes(32),
        algorithm,
        privateKey: keys.privateKey,
        publicKey: keys.publicKey,
        signCount: 0,
        userHandle: creation.user.id,
        rpId: creation.rp.id ?? options.origin,
      };
      const idLength = Buffer.alloc(2);
      idLength.writeUInt16BE(credential.id.length, 0);
      const authData = Buffer.concat([
        sha256(overrides.rpId ?? credential.rpId),
        Buffer.from([flagsOf(overrides, true)]),
        counterBytes(0),
        Buffer.alloc(16),
        idLength,
        credential.id,
        coseKeyOf(credential),
      ]);
      const attestationObject = encodeCbor({ fmt: 'none', attStmt: new Map(), authData });
      credentials.push(credential);
      return {
        id: overrides.responseId ?? b64url(credential.id),
        rawId: overrides.responseId ?? b64url(credential.id),
        type: 'public-key',
        response: {
          clientDataJSON: b64url(clientData('webauthn.create', creation.challenge, overrides)),
          attestationObject: b64url(attestationObject),
          transports: ['internal', 'hybrid'],
        },
        clientExtensionResults: {},
        authenticatorAttachment: 'platform',
      };
    },

    /** Signs an assertion for the options, as navigator.credentials.get() would answer; the counter moves on. */
    assert(
      request: PublicKeyCredentialRequestOptionsJSON,
      overrides: CeremonyOverrides = {},
    ): AuthenticationResponseJSON {
      const allowed = request.allowCredentials?.map((entry) => entry.id) ?? [];
      const credential =
        overrides.credential ??
        credentials.findLast((entry) => allowed.length === 0 || allowed.includes(b64url(entry.id)));
      if (!credential) throw new Error('no credential for these options');
      if (overrides.signCount === undefined) credential.signCount += counterStep;
      const count = overrides.signCount ?? credential.signCount;
      const authData = Buffer.concat([
        sha256(overrides.rpId ?? request.rpId ?? credential.rpId),
        Buffer.from([flagsOf(overrides, false)]),
        counterBytes(count),
      ]);
      const clientDataJSON = clientData('webauthn.get', request.challenge, overrides);
      const signed = Buffer.concat([authData, sha256(clientDataJSON)]);
      const signature = sign(
        credential.algorithm === 'EdDSA' ? null : 'sha256',
        signed,
        credential.privateKey,
      );
      if (overrides.bogusSignature) signature[signature.length - 1] = (signature.at(-1) ?? 0) ^ 0xff;
      return {
        id: b64url(credential.id),
        rawId: b64url(credential.id),
        type: 'public-key',
        response: {
          clientDataJSON: b64url(clientDataJSON),
          authenticatorData: b64url(authData),
          signature: b64url(signature),
          userHandle: credential.userHandle,
        },
        clientExtensionResults: {},
        authenticatorAttachment: 'platform',
      };
    },
  };
}

export type SoftAuthenticator = ReturnType<typeof createSoftAuthenticator>;
