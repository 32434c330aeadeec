import bcrypt from 'bcryptjs';
import { describe, expect, it } from 'vitest';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import { FAST_ARGON2 } from '../support/build-test-app.ts';

const OWASP_ARGON2 = { memoryKib: 19456, timeCost: 2, parallelism: 1 };

describe('password hasher', () => {
  it('stores argon2id with the OWASP parameters and a unique 16-byte salt', async () => {
    const hasher = createPasswordHasher(OWASP_ARGON2);
    const first = await hasher.hash('correct horse battery staple');
    const second = await hasher.hash('correct horse battery staple');
    expect(first).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$/);
    expect(first).not.toBe(second);
    expect(await hasher.verify(first, 'correct horse battery staple')).toBe(true);
    expect(hasher.needsRehash(first, 'correct horse battery staple')).toBe(false);
  });

  it('verifies the entire password: no truncation at 72 bytes', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    const password = `${'x'.repeat(72)}-and-then-some-more-bytes`;
    const stored = await hasher.hash(password);
    expect(await hasher.verify(stored, password.slice(0, 72))).toBe(false);
    expect(await hasher.verify(stored, password)).toBe(true);
  });

  it('treats case, trailing space and NUL as significant', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    const stored = await hasher.hash('Pa ss word here');
    for (const other of ['pa ss word here', 'Pa ss word here ', 'Pa ss\u0000word here']) {
      expect(await hasher.verify(stored, other)).toBe(false);
    }
  });

  it('accepts the NFC and the NFD spelling of one Unicode password', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    const nfc = 'pässwörd-ütf8-密码-🔑'.normalize('NFC');
    const stored = await hasher.hash(nfc);
    expect(await hasher.verify(stored, nfc.normalize('NFD'))).toBe(true);
  });

  it('asks for a rehash when the parameters were raised', async () => {
    const weak = await createPasswordHasher(FAST_ARGON2).hash('correct horse battery staple');
    const hasher = createPasswordHasher(OWASP_ARGON2);
    expect(hasher.needsRehash(weak, 'correct horse battery staple')).toBe(true);
    expect(await hasher.verify(weak, 'correct horse battery staple')).toBe(true);
  });

  it('verifies passlib bcrypt hashes ($2b$ and $2a$) and asks for their upgrade', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    for (const prefix of ['2a', '2b'] as const) {
      // $2a$ and $2b$ differ only for passwords over 255 bytes; passlib has written both.
      const stored = bcrypt.hashSync('seed-user-password', 4).replace(/^\$2b\$/, `$${prefix}$`);
      expect(stored.startsWith(`$${prefix}$`)).toBe(true);
      expect(await hasher.verify(stored, 'seed-user-password')).toBe(true);
      expect(await hasher.verify(stored, 'seed-user-passwore')).toBe(false);
      expect(hasher.needsRehash(stored, 'seed-user-password')).toBe(true);
    }
  });

  it('keeps a bcrypt hash when the matching password reaches 72 bytes, since it may be a mere prefix', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    const full = `${'p'.repeat(72)}-the-rest-that-bcrypt-ignores`;
    const stored = bcrypt.hashSync(full, 4);
    const prefix = full.slice(0, 72);
    expect(await hasher.verify(stored, prefix)).toBe(true);
    expect(hasher.needsRehash(stored, prefix)).toBe(false);
    expect(hasher.needsRehash(stored, full)).toBe(false);
  });

  it('answers false, never throws, for a corrupt or unknown hash', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    for (const stored of ['', 'plain', '$argon2id$v=19$m=1$broken', '$2b$04$short', '$pbkdf2-sha256$x']) {
      expect(await hasher.verify(stored, 'whatever')).toBe(false);
    }
  });
});
