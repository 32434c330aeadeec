import { hashSync as bcryptHashSync } from '@node-rs/bcrypt';
import { describe, expect, it } from 'vitest';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import { FAST_ARGON2 } from '../support/build-test-app.ts';

const OWASP_ARGON2 = { memoryKib: 19456, timeCost: 2, parallelism: 1 };
// The bcrypt hashes below are made at cost 4: failures need not wait as long as cost 12 would take.
const CHEAP_FLOOR = { importedBcryptCost: 4 };

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
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    const password = `${'x'.repeat(72)}-and-then-some-more-bytes`;
    const stored = await hasher.hash(password);
    expect(await hasher.verify(stored, password.slice(0, 72))).toBe(false);
    expect(await hasher.verify(stored, password)).toBe(true);
  });

  it('treats case, trailing space and NUL as significant', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    const stored = await hasher.hash('Pa ss word here');
    for (const other of ['pa ss word here', 'Pa ss word here ', 'Pa ss\u0000word here']) {
      expect(await hasher.verify(stored, other)).toBe(false);
    }
  });

  it('accepts the NFC and the NFD spelling of one Unicode password', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
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
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    for (const prefix of ['2a', '2b'] as const) {
      // $2a$ and $2b$ differ only for passwords over 255 bytes; passlib has written both.
      const stored = bcryptHashSync('seed-user-password', 4).replace(/^\$2b\$/, `$${prefix}$`);
      expect(stored.startsWith(`$${prefix}$`)).toBe(true);
      expect(await hasher.verify(stored, 'seed-user-password')).toBe(true);
      expect(await hasher.verify(stored, 'seed-user-passwore')).toBe(false);
      expect(hasher.needsRehash(stored, 'seed-user-password')).toBe(true);
    }
  });

  it('keeps a bcrypt hash when the matching password reaches 72 bytes, since it may be a mere prefix', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    const full = `${'p'.repeat(72)}-the-rest-that-bcrypt-ignores`;
    const stored = bcryptHashSync(full, 4);
    const prefix = full.slice(0, 72);
    expect(await hasher.verify(stored, prefix)).toBe(true);
    expect(hasher.needsRehash(stored, prefix)).toBe(false);
    expect(hasher.needsRehash(stored, full)).toBe(false);
  });

  it('answers false, never throws, for a corrupt or unknown hash', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    for (const stored of ['', 'plain', '$argon2id$v=19$m=1$broken', '$2b$04$short', '$pbkdf2-sha256$x']) {
      expect(await hasher.verify(stored, 'whatever')).toBe(false);
    }
  });
});

describe('password hasher timing', () => {
  const median = async (runs: number, run: () => Promise<unknown>) => {
    const durations: number[] = [];
    for (let i = 0; i < runs; i += 1) {
      const started = performance.now();
      await run();
      durations.push(performance.now() - started);
    }
    return durations.sort((a, b) => a - b)[Math.floor(runs / 2)]!;
  };

  it('answers a wrong password as slowly for argon2, bcrypt cost 12 and no user at all', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    hasher.activateFailureFloor();
    const argon2 = await hasher.hash('the right password');
    const bcrypt = bcryptHashSync('the right password', 12);
    // Interleaved, so that a noisy neighbour slows all three alike.
    const durations = { argon2: [] as number[], bcrypt: [] as number[], unknown: [] as number[] };
    for (let round = 0; round < 3; round += 1) {
      durations.argon2.push(await median(1, () => hasher.verify(argon2, 'a wrong password')));
      durations.bcrypt.push(await median(1, () => hasher.verify(bcrypt, 'a wrong password')));
      durations.unknown.push(await median(1, () => hasher.verifyDummy('a wrong password')));
    }
    const medians = Object.values(durations).map((list) => list.sort((a, b) => a - b)[1]!);
    // Before: ~400 ms for bcrypt against ~1 ms for the others.
    expect(Math.max(...medians) / Math.min(...medians)).toBeLessThan(1.5);
  }, 120_000);

  it('pads only failures: a right argon2 password answers well before a wrong one', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    hasher.activateFailureFloor();
    const argon2 = await hasher.hash('the right password');
    const right = await median(5, () => hasher.verify(argon2, 'the right password'));
    const wrong = await median(5, () => hasher.verify(argon2, 'a wrong password'));
    expect(right).toBeLessThan(wrong / 4);
  }, 60_000);

  it('does not slow failures while no bcrypt hash was met or announced, and does once one is met', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    const argon2 = await hasher.hash('the right password');
    await hasher.verifyDummy('warm up');
    const unpadded = await median(5, () => hasher.verify(argon2, 'a wrong password'));
    expect(unpadded).toBeLessThan(hasher.failureFloorMs() / 4);
    await hasher.verify(bcryptHashSync('the right password', 12), 'a wrong password');
    const padded = await median(3, () => hasher.verify(argon2, 'a wrong password'));
    expect(padded).toBeGreaterThan(hasher.failureFloorMs() / 2);
  }, 60_000);

  it('raises the floor for a bcrypt hash dearer than the expected cost', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
    await hasher.verifyDummy('warm up');
    const before = hasher.failureFloorMs();
    await hasher.verify(bcryptHashSync('the right password', 10), 'a wrong password');
    expect(hasher.failureFloorMs()).toBeGreaterThan(before * 4);
  });
});
