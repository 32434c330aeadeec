import { availableParallelism } from 'node:os';
import { type Algorithm, hash, verify } from '@node-rs/argon2';
import bcrypt from 'bcryptjs';

export interface Argon2Parameters {
  memoryKib: number;
  timeCost: number;
  parallelism: number;
}

export interface PasswordHasher {
  /** Returns an argon2id PHC string for the password. */
  hash(password: string): Promise<string>;
  /** Returns whether the password matches the stored argon2id or bcrypt hash; false for unknown formats. */
  verify(storedHash: string, password: string): Promise<boolean>;
  /** Returns whether the stored hash should be replaced by one with the current algorithm and parameters. */
  needsRehash(storedHash: string): boolean;
  /** Spends the same time as a real verification, for callers that have no user to verify against. */
  verifyDummy(password: string): Promise<void>;
}

/** Builds an argon2id hasher that also verifies bcrypt hashes imported from passlib. */
export function createPasswordHasher(
  parameters: Argon2Parameters,
  options: { maxConcurrent?: number } = {},
): PasswordHasher {
  const argonOptions = {
    // Algorithm.Argon2id: a const enum, which type stripping cannot inline.
    algorithm: 2 as Algorithm,
    memoryCost: parameters.memoryKib,
    timeCost: parameters.timeCost,
    parallelism: parameters.parallelism,
  };
  const expectedPrefix = `$argon2id$v=19$m=${parameters.memoryKib},t=${parameters.timeCost},p=${parameters.parallelism}$`;
  // Hashes run on libuv's threadpool; leaving threads free keeps token verification and file I/O responsive
  // while logins are flooded.
  const limit = createLimiter(options.maxConcurrent ?? Math.max(1, availableParallelism()));
  let dummyHash: Promise<string> | undefined;

  const hashPassword = (password: string) => limit(() => hash(password.normalize('NFKC'), argonOptions));

  const verifyPassword = async (storedHash: string, password: string): Promise<boolean> => {
    if (storedHash.startsWith('$argon2')) {
      return limit(() => verify(storedHash, password.normalize('NFKC'))).catch(() => false);
    }
    if (/^\$2[aby]\$\d\d\$/.test(storedHash)) {
      // passlib hashed the raw password: no normalisation here, or imported users could not log in.
      return bcrypt.compare(password, storedHash).catch(() => false);
    }
    return false;
  };

  return {
    hash: hashPassword,
    verify: verifyPassword,
    needsRehash: (storedHash) => !storedHash.startsWith(expectedPrefix),
    async verifyDummy(password) {
      dummyHash ??= hashPassword('gatehouse-dummy-password-for-timing');
      await verifyPassword(await dummyHash, password);
    },
  };
}

function createLimiter(max: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    active += 1;
    try {
      return await task();
    } finally {
      active -= 1;
      waiting.shift()?.();
    }
  };
}
