import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';

const problemsOf = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
};

describe('loadConfig', () => {
  it('gives a first run safe defaults: SQLite under ./data, EdDSA, 15-minute tokens, OWASP argon2id', () => {
    const config = loadConfig({});
    expect(config.port).toBe(8000);
    expect(config.host).toBe('0.0.0.0');
    expect(config.database).toEqual({ kind: 'sqlite', path: './data/gatehouse.db' });
    expect(config.jwt.algorithm).toBe('EdDSA');
    expect(config.jwt.accessTokenTtlSeconds).toBe(900);
    expect(config.passwords.argon2).toEqual({ memoryKib: 19456, timeCost: 2, parallelism: 1 });
    expect(config.passwords.minLength).toBe(8);
    expect(config.bodyLimitBytes).toBe(16384);
    // Logins must not slow reads down: hashing threads run only on otherwise idle cores (issue 5's flood p99).
    expect(config.hashThreadPriority).toBe('idle');
  });

  it('returns a frozen object', () => {
    const config = loadConfig({});
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.jwt)).toBe(true);
  });

  it('switches to PostgreSQL when DATABASE_URL says postgres', () => {
    const env = {
      DATABASE_URL: 'postgres://u:p@db:5432/gh',
      GATEHOUSE_SECRET: randomBytes(32).toString('base64url'),
    };
    expect(loadConfig(env).database).toEqual({
      kind: 'postgres',
      url: 'postgres://u:p@db:5432/gh',
    });
  });

  it('refuses a PostgreSQL URL that cannot be parsed, without echoing it', () => {
    const problems = problemsOf({ DATABASE_URL: 'postgres://user:s3cret@:::bad' });
    expect(problems.join()).toMatch(/DATABASE_URL/);
    expect(problems.join()).not.toMatch(/s3cret/);
  });

  it('refuses an unknown JWT_ALGORITHM and names the allowed ones', () => {
    expect(problemsOf({ JWT_ALGORITHM: 'none' }).join()).toMatch(/JWT_ALGORITHM.*EdDSA, HS256/);
    expect(problemsOf({ JWT_ALGORITHM: 'RS256' })).toHaveLength(1);
  });

  it('refuses HS256 without a secret', () => {
    expect(problemsOf({ JWT_ALGORITHM: 'HS256' }).join()).toMatch(/JWT_SECRET is required/);
  });

  it('refuses an HS256 secret shorter than 32 bytes', () => {
    expect(problemsOf({ JWT_ALGORITHM: 'HS256', JWT_SECRET: 'Kq8#vL2!xR9@mN4$pT7&' }).join()).toMatch(
      /JWT_SECRET must be at least 32 bytes/,
    );
  });

  it('refuses an HS256 secret that is a passphrase rather than 32 encoded random bytes', () => {
    for (const secret of [
      'abcdefghijklmnopqrstuvwxyz012345',
      'correct horse battery staple, twice over',
      'Kq8#vL2!xR9@mN4$pT7&Kq8#vL2!xR9@mN4$pT7&',
      'thisismyverylongjwtsigningpassphraseforproduction2026',
      'MyApplicationSecretKeyMyApplicationSecretKey',
    ]) {
      expect(problemsOf({ JWT_ALGORITHM: 'HS256', JWT_SECRET: secret }).join(), secret).toMatch(
        /JWT_SECRET must be at least 32 bytes/,
      );
    }
  });

  it('accepts random secrets of 32 bytes in every encoding, whatever their characters happen to be', () => {
    for (let i = 0; i < 200; i += 1) {
      const bytes = randomBytes(32);
      for (const encoding of ['base64', 'base64url', 'hex'] as const) {
        expect(problemsOf({ JWT_ALGORITHM: 'HS256', JWT_SECRET: bytes.toString(encoding) })).toEqual([]);
      }
    }
  });

  it('refuses hex that decodes to fewer than 32 bytes even when base64 would read it as more', () => {
    expect(
      problemsOf({ JWT_ALGORITHM: 'HS256', JWT_SECRET: randomBytes(24).toString('hex') }).join(),
    ).toMatch(/JWT_SECRET must be at least 32 bytes/);
  });

  it('accepts 32 random bytes in base64, base64url or hex', () => {
    const bytes = randomBytes(32);
    for (const secret of [bytes.toString('base64'), bytes.toString('base64url'), bytes.toString('hex')]) {
      expect(loadConfig({ JWT_ALGORITHM: 'HS256', JWT_SECRET: secret }).jwt.secret).toBe(secret);
    }
  });

  it('refuses the FastAPI tutorial secret', () => {
    const problems = problemsOf({
      JWT_ALGORITHM: 'HS256',
      JWT_SECRET: '09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7',
    });
    expect(problems.join()).toMatch(/published example/);
  });

  it('refuses a long secret that is plainly not random', () => {
    expect(problemsOf({ JWT_ALGORITHM: 'HS256', JWT_SECRET: 'a'.repeat(64) }).join()).toMatch(/distinct/);
  });

  it('accepts a random 48-byte secret', () => {
    const config = loadConfig({
      JWT_ALGORITHM: 'HS256',
      JWT_SECRET: 'q3W9zL0vB7nX2cR5tY8uI1oP4aS6dF0gH3jK7lZ9xC2vB5nM',
    });
    expect(config.jwt.secret).toHaveLength(48);
  });

  it('reports every problem at once', () => {
    const problems = problemsOf({ PORT: 'eighty', ACCESS_TOKEN_TTL_SECONDS: '99999', LOG_LEVEL: 'loud' });
    expect(problems).toHaveLength(3);
    expect(problems.join('\n')).toMatch(/PORT/);
    expect(problems.join('\n')).toMatch(/ACCESS_TOKEN_TTL_SECONDS/);
    expect(problems.join('\n')).toMatch(/LOG_LEVEL/);
  });

  it('refuses to start on PostgreSQL without GATEHOUSE_SECRET, and says how to make one', () => {
    const problems = problemsOf({ DATABASE_URL: 'postgres://u@db:5432/gh' }).join();
    expect(problems).toMatch(/GATEHOUSE_SECRET is required/);
    expect(problems).toMatch(/randomBytes\(32\)\.toString\('base64url'\)/);
  });

  it('leaves GATEHOUSE_SECRET optional on SQLite, where main.ts keeps one beside the database', () => {
    expect(loadConfig({}).secrets).toEqual([]);
  });

  it('takes GATEHOUSE_SECRET as a list, the current secret first', () => {
    const [a, b] = [randomBytes(32).toString('base64url'), randomBytes(48).toString('base64url')];
    expect(loadConfig({ GATEHOUSE_SECRET: `${a}, ${b}` }).secrets).toEqual([a, b]);
  });

  it('refuses a GATEHOUSE_SECRET that is short, not base64url, patterned or repeated, without echoing it', () => {
    const random = randomBytes(32).toString('base64url');
    const cases = {
      short: randomBytes(31).toString('base64url'),
      passphrase: 'correct horse battery staple and more words here',
      standardBase64: `${randomBytes(33).toString('base64')}+/`,
      patterned: 'A'.repeat(43),
      repeated: `${random},${random}`,
    };
    for (const [name, secret] of Object.entries(cases)) {
      const problems = problemsOf({ GATEHOUSE_SECRET: secret }).join();
      expect(problems, name).toMatch(/GATEHOUSE_SECRET/);
      for (const part of secret.split(',')) expect(problems, name).not.toContain(part);
    }
  });

  it('refuses a minimum password length below 8', () => {
    expect(problemsOf({ PASSWORD_MIN_LENGTH: '6' }).join()).toMatch(/PASSWORD_MIN_LENGTH/);
  });

  it('bounds password hashing by default: one slot per core, 16 waiting per slot, 1 s of waiting', () => {
    expect(loadConfig({}).hashing).toEqual({
      concurrency: availableParallelism(),
      queueMax: 16 * availableParallelism(),
      queueTimeoutMs: 1000,
    });
  });

  it('sizes the default hash queue from HASH_CONCURRENCY, and takes an explicit HASH_QUEUE_MAX as is', () => {
    expect(loadConfig({ HASH_CONCURRENCY: '3' }).hashing).toEqual({
      concurrency: 3,
      queueMax: 48,
      queueTimeoutMs: 1000,
    });
    expect(
      loadConfig({ HASH_CONCURRENCY: '3', HASH_QUEUE_MAX: '0', HASH_QUEUE_TIMEOUT_MS: '250' }).hashing,
    ).toEqual({ concurrency: 3, queueMax: 0, queueTimeoutMs: 250 });
  });

  it('keeps listening for a second on SIGTERM by default, and takes SHUTDOWN_DRAIN_MS from 0 to 60000', () => {
    expect(loadConfig({}).shutdownDrainMs).toBe(1000);
    expect(loadConfig({ SHUTDOWN_DRAIN_MS: '0' }).shutdownDrainMs).toBe(0);
    expect(loadConfig({ SHUTDOWN_DRAIN_MS: '15000' }).shutdownDrainMs).toBe(15000);
    expect(problemsOf({ SHUTDOWN_DRAIN_MS: '60001' }).join()).toMatch(/^SHUTDOWN_DRAIN_MS=/);
  });

  it('refuses hash limits that are not whole numbers in range, naming each setting', () => {
    const problems = problemsOf({
      HASH_CONCURRENCY: '0',
      HASH_QUEUE_MAX: '-1',
      HASH_QUEUE_TIMEOUT_MS: 'soon',
    });
    expect(problems).toHaveLength(3);
    for (const name of ['HASH_CONCURRENCY', 'HASH_QUEUE_MAX', 'HASH_QUEUE_TIMEOUT_MS']) {
      expect(problems.join('\n')).toMatch(new RegExp(`^${name}=`, 'm'));
    }
    expect(problemsOf({ HASH_CONCURRENCY: '1021' }).join()).toMatch(/HASH_CONCURRENCY/);
  });
});
