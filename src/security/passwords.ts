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
  /** Returns whether the stored hash should be replaced, now that `password` is known to match it. */
  needsRehash(storedHash: string, password: string): boolean;
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
  // Hashes run on libuv's threadpool, where WebCrypto and file I/O run too: one hash per core keeps the cores
  // busy, and main.ts sizes the pool so threads remain for the rest. A third hash in flight on two cores gave no
  // more logins per second (measured, interleaved runs) and held 19 MiB more memory.
  const limit = createLimiter(options.maxConcurrent ?? availableParallelism());

  const hashPassword = (password: string) => limit(() => hash(password.normalize('NFKC'), argonOptions));
  // Made at once, so that the first unknown-user login after a start costs no more than any other.
  const dummyHash = hashPassword('gatehouse-dummy-password-for-timing');
  dummyHash.catch(() => {});

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
    needsRehash: (storedHash, password) => {
      if (storedHash.startsWith('$argon2')) return !storedHash.startsWith(expectedPrefix);
      // bcrypt matched only the first 72 bytes: a longer password may be just a prefix of the real one, and
      // hashing it would lock the user out of their full password. Keep bcrypt for those.
      return Buffer.byteLength(password, 'utf8') < 72;
    },
    async verifyDummy(password) {
      await verifyPassword(await dummyHash, password);
    },
  };
}

function createLimiter(max: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active < max) active += 1;
    // The finishing task hands its slot straight to the waiter, so a newcomer cannot slip in between.
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else active -= 1;
    }
  };
}
