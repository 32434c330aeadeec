import { describe, expect, it } from 'vitest';
import {
  createSecretBox,
  deriveRefreshTokenKey,
  generateSecret,
  isSealed,
  SecretBoxError,
  sealedKeyId,
  secretKeyId,
} from '../../src/security/secret-box.ts';

const [oldSecret, newSecret] = [generateSecret(), generateSecret()];

describe('secret box', () => {
  it('seals with AES-256-GCM under a key id and opens what it sealed', () => {
    const box = createSecretBox([oldSecret]);
    const sealed = box.seal('{"d":"private"}', 'row:1');
    expect(isSealed(sealed)).toBe(true);
    expect(sealed).not.toContain('private');
    expect(sealedKeyId(sealed)).toBe(secretKeyId(oldSecret));
    expect(box.open(sealed, 'row:1')).toBe('{"d":"private"}');
    expect(box.seal('{"d":"private"}', 'row:1')).not.toBe(sealed);
  });

  it('refuses a sealed value moved to another row', () => {
    const box = createSecretBox([oldSecret]);
    const sealed = box.seal('secret', 'row:1');
    expect(() => box.open(sealed, 'row:2')).toThrow(SecretBoxError);
  });

  it('refuses a value whose ciphertext or tag was altered', () => {
    const box = createSecretBox([oldSecret]);
    const parts = box.seal('secret', 'row:1').split(':');
    const flip = (text: string) => `${text.slice(0, -2)}${text.at(-2) === 'A' ? 'B' : 'A'}${text.at(-1)}`;
    for (const index of [2, 3, 4]) {
      const altered = parts.map((part, i) => (i === index ? flip(part) : part)).join(':');
      expect(() => box.open(altered, 'row:1'), `part ${index}`).toThrow(SecretBoxError);
    }
  });

  it('seals with the first secret of the list and opens with any of them', () => {
    const sealedOld = createSecretBox([oldSecret]).seal('secret', 'row:1');
    const rotating = createSecretBox([newSecret, oldSecret]);
    expect(rotating.sealingKeyId).toBe(secretKeyId(newSecret));
    expect(rotating.open(sealedOld, 'row:1')).toBe('secret');
    expect(sealedKeyId(rotating.seal('secret', 'row:1'))).toBe(secretKeyId(newSecret));
  });

  it('says which key is missing when no configured secret opens a value', () => {
    const sealed = createSecretBox([oldSecret]).seal('secret', 'row:1');
    try {
      createSecretBox([newSecret]).open(sealed, 'row:1');
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(SecretBoxError);
      expect((error as SecretBoxError).reason).toBe('unknown_key');
      expect((error as SecretBoxError).keyId).toBe(secretKeyId(oldSecret));
      expect((error as Error).message).not.toContain(oldSecret);
    }
  });

  it('derives key ids and the refresh-token key that reveal nothing of the secret', () => {
    const id = secretKeyId(oldSecret);
    expect(oldSecret).not.toContain(id);
    expect(secretKeyId(oldSecret)).toBe(id);
    const refreshKey = deriveRefreshTokenKey(oldSecret);
    expect(refreshKey.symmetricKeySize).toBe(32);
    expect(refreshKey.export().equals(Buffer.from(oldSecret, 'base64url'))).toBe(false);
    expect(refreshKey.equals(deriveRefreshTokenKey(newSecret))).toBe(false);
  });
});
