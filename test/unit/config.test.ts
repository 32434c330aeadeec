import { randomBytes } from 'node:crypto';
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
});

describe('loadConfig: login throttling', () => {
  it("throttles by default with THROTTLING.md's numbers, counting in this process", () => {
    const config = loadConfig({});
    expect(config.redis).toBeUndefined();
    expect(config.throttling).toEqual({
      enabled: true,
      ipv6SubnetBits: 64,
      freeFailures: 5,
      backoffBaseSeconds: 30,
      backoffMaxSeconds: 3600,
      failureTtlSeconds: 86400,
      accountUntrustedFailures: 10,
      accountBackoffBaseSeconds: 900,
      accountHardCap: 100,
      ipFailuresPerMinute: 10,
      ipFailuresPerDay: 100,
      passwordGrantPerIp: [
        { limit: 150, windowSeconds: 300 },
        { limit: 30, windowSeconds: 60 },
      ],
      registrationPerIp: [
        { limit: 3, windowSeconds: 10 },
        { limit: 20, windowSeconds: 3600 },
      ],
      refreshPerFamily: [{ limit: 10, windowSeconds: 60 }],
      refreshPerIp: [{ limit: 150, windowSeconds: 300 }],
      deviceTokenTtlDays: 90,
      knownIpsPerUser: 10,
    });
  });

  it('turns throttling off with RATE_LIMITS=off and refuses other words', () => {
    expect(loadConfig({ RATE_LIMITS: 'off' }).throttling.enabled).toBe(false);
    expect(loadConfig({ RATE_LIMITS: 'on' }).throttling.enabled).toBe(true);
    expect(problemsOf({ RATE_LIMITS: 'false' }).join()).toMatch(/RATE_LIMITS.*must be one of on, off/);
  });

  it('takes the counters to Redis with REDIS_URL, under a key prefix', () => {
    expect(loadConfig({ REDIS_URL: 'redis://:pw@cache:6379/2' }).redis).toEqual({
      url: 'redis://:pw@cache:6379/2',
      keyPrefix: 'gatehouse:',
    });
    expect(loadConfig({ REDIS_URL: 'rediss://cache', REDIS_KEY_PREFIX: 'gh-eu:' }).redis?.keyPrefix).toBe(
      'gh-eu:',
    );
  });

  it('refuses a REDIS_URL that is not a redis URL without echoing it, and a key prefix with spaces', () => {
    const problems = problemsOf({ REDIS_URL: 'http://user:hunter2@cache:6379' }).join();
    expect(problems).toMatch(/REDIS_URL must be a redis:\/\//);
    expect(problems).not.toContain('hunter2');
    expect(problemsOf({ REDIS_URL: 'redis://' }).join()).toMatch(/REDIS_URL/);
    expect(problemsOf({ REDIS_KEY_PREFIX: 'a b' }).join()).toMatch(/REDIS_KEY_PREFIX/);
  });

  it('reads request caps as counts per window, several separated by commas', () => {
    const config = loadConfig({
      TOKEN_PASSWORD_PER_IP: '1000/60s',
      REGISTER_PER_IP: '5/10s, 50/86400s',
      REFRESH_PER_FAMILY: '20/60s',
      REFRESH_PER_IP: '600/300s',
    });
    expect(config.throttling.passwordGrantPerIp).toEqual([{ limit: 1000, windowSeconds: 60 }]);
    expect(config.throttling.registrationPerIp).toEqual([
      { limit: 5, windowSeconds: 10 },
      { limit: 50, windowSeconds: 86400 },
    ]);
    expect(config.throttling.refreshPerFamily).toEqual([{ limit: 20, windowSeconds: 60 }]);
    expect(config.throttling.refreshPerIp).toEqual([{ limit: 600, windowSeconds: 300 }]);
  });

  it('refuses malformed request caps, every one of them at once', () => {
    const problems = problemsOf({
      TOKEN_PASSWORD_PER_IP: '150 per 5 minutes',
      REGISTER_PER_IP: '3/10',
      REFRESH_PER_FAMILY: '0/60s',
      REFRESH_PER_IP: '150/300s,',
    });
    expect(problems).toHaveLength(4);
    for (const name of ['TOKEN_PASSWORD_PER_IP', 'REGISTER_PER_IP', 'REFRESH_PER_FAMILY', 'REFRESH_PER_IP']) {
      expect(problems.join('\n')).toMatch(new RegExp(`^${name}=.*count per window`, 'm'));
    }
  });

  it('refuses a back-off base above its maximum, a hard cap above NIST 800-63B’s 100, and an IPv6 prefix over 128', () => {
    expect(problemsOf({ LOGIN_BACKOFF_BASE_S: '7200' }).join()).toMatch(
      /LOGIN_BACKOFF_BASE_S must not exceed LOGIN_BACKOFF_MAX_S/,
    );
    expect(problemsOf({ ACCOUNT_BACKOFF_BASE_S: '900', LOGIN_BACKOFF_MAX_S: '600' }).join()).toMatch(
      /ACCOUNT_BACKOFF_BASE_S must not exceed LOGIN_BACKOFF_MAX_S/,
    );
    expect(problemsOf({ ACCOUNT_HARD_CAP: '101' }).join()).toMatch(/ACCOUNT_HARD_CAP/);
    expect(problemsOf({ IPV6_SUBNET: '129' }).join()).toMatch(/IPV6_SUBNET/);
    expect(problemsOf({ LOGIN_FREE_FAILS: '0' }).join()).toMatch(/LOGIN_FREE_FAILS/);
  });

  it('reads the known-client settings', () => {
    const config = loadConfig({ DEVICE_TOKEN_TTL_DAYS: '30', KNOWN_IPS_PER_USER: '0', IPV6_SUBNET: '56' });
    expect(config.throttling.deviceTokenTtlDays).toBe(30);
    expect(config.throttling.knownIpsPerUser).toBe(0);
    expect(config.throttling.ipv6SubnetBits).toBe(56);
  });
});
