import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, cleartextLinkWarning, loadConfig } from '../../src/config.ts';

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

  // A HOST that no resolver could take was found only at listen, after the start had migrated (or created) the database.
  it.each(['bad host!', 'http://0.0.0.0', '0.0.0.0:8000', 'a..b', '-a.example', `${'a'.repeat(64)}.example`])(
    'refuses HOST=%s, which is neither an IP address nor a host name',
    (host) => {
      expect(problemsOf({ HOST: host }).join('\n')).toMatch(/^HOST=.* must be an IP address or a host name/m);
    },
  );

  it.each([
    '0.0.0.0',
    '127.0.0.1',
    '::',
    '::1',
    'fe80::1%eth0',
    'localhost',
    'gatehouse.internal',
    'api-1.example.com.',
  ])('accepts HOST=%s', (host) => {
    expect(loadConfig({ HOST: host }).host).toBe(host);
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
    const problems = problemsOf({
      PORT: 'eighty',
      ACCESS_TOKEN_TTL_SECONDS: '99999',
      LOG_LEVEL: 'loud',
      TRUST_PROXY: 'true',
      CLIENT_IP_HEADER: 'bad header',
    });
    expect(problems).toHaveLength(5);
    for (const name of ['PORT', 'ACCESS_TOKEN_TTL_SECONDS', 'LOG_LEVEL', 'TRUST_PROXY', 'CLIENT_IP_HEADER']) {
      expect(problems.join('\n')).toMatch(new RegExp(`^${name}`, 'm'));
    }
  });

  // Found from outside: once one value was of the wrong type, the checks of the others did not run, and the operator
  // met one problem per restart.
  it('reports the checks of other settings beside a value of the wrong type', () => {
    const problems = problemsOf({
      PORT: 'abc',
      GATEHOUSE_SECRET: 'short',
      METRICS_TOKEN: 'short',
      CORS_ORIGINS: '*',
      JWT_ALGORITHM: 'HS256',
      PUBLIC_URL: 'nope',
    });
    for (const name of [
      'PORT',
      'GATEHOUSE_SECRET',
      'METRICS_TOKEN',
      'CORS_ORIGINS',
      'JWT_SECRET',
      'PUBLIC_URL',
    ]) {
      expect(problems.join('\n')).toMatch(new RegExp(`^${name}`, 'm'));
    }
    expect(problems).toHaveLength(6);
    // A comparison with a setting already refused says nothing more.
    expect(problemsOf({ PORT: 'abc', METRICS_PORT: '8000' })).toHaveLength(1);
  });

  // Found from outside: a URL refused for holding credentials was echoed with them.
  it.each<Record<string, string>>([
    { PUBLIC_URL: 'https://admin:PubS3cretValue@id.example.com' },
    { BREACHED_PASSWORD_CHECK: 'hibp', HIBP_API_URL: 'https://user:PubS3cretValue@hibp.example.com' },
    { CORS_ORIGINS: 'https://user:PubS3cretValue@app.example.com' },
    { PUBLIC_URL: 'https://id.example.com', WEBAUTHN_ORIGINS: 'https://user:PubS3cretValue@id.example.com' },
    // Review: one slash, no slash, a slash or an @ in the password.
    { PUBLIC_URL: 'https:/admin:PubS3cretValue@id.example.com' },
    { PUBLIC_URL: 'https:admin:PubS3cretValue@id.example.com' },
    { PUBLIC_URL: 'https://admin:PubS3cret/Value@id.example.com' },
    { PUBLIC_URL: 'https://admin:PubS3cretValue@x@id.example.com' },
    { CORS_ORIGINS: 'https://admin:PubS3cret/Value@app.example.com' },
  ])('refuses a URL with credentials without repeating them: %j', (env) => {
    const problems = problemsOf(env);
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.join('\n')).not.toContain('PubS3cretValue');
  });

  // TypeBox stops listing errors after eight, and a wrong LOG_LEVEL alone makes eight (one per level, then the union).
  it('reports every wrong value at once, a wrong LOG_LEVEL with the others', () => {
    const problems = problemsOf({ PORT: 'abc', LOG_LEVEL: 'bogus', WORKERS: '0', HASH_QUEUE_MAX: 'many' });
    expect(problems).toHaveLength(4);
    for (const name of ['PORT', 'LOG_LEVEL', 'WORKERS', 'HASH_QUEUE_MAX']) {
      expect(problems.join('\n')).toMatch(new RegExp(`^${name}`, 'm'));
    }
  });

  // Found from outside: TypeBox's conversion took PORT=8344.5 for 8344 and ACCESS_TOKEN_TTL_SECONDS=0x10 for 16.
  it.each([
    ['PORT', '8344.5'],
    ['PORT', '1e3'],
    ['ACCESS_TOKEN_TTL_SECONDS', '3600.9'],
    ['ACCESS_TOKEN_TTL_SECONDS', '0x10'],
    ['HASH_CONCURRENCY', '0x2'],
  ])('refuses %s=%s: an integer setting is written in digits', (name, value) => {
    expect(problemsOf({ [name]: value })).toEqual([
      `${name}=${JSON.stringify(value)} must be an integer, written in digits`,
    ]);
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

  it('trusts no proxy by default', () => {
    expect(loadConfig({}).clientIp).toEqual({ trustedProxies: [], clientIpHeader: undefined });
    expect(loadConfig({ TRUST_PROXY: 'false' }).clientIp.trustedProxies).toEqual([]);
  });

  it('takes TRUST_PROXY as a list of addresses, ranges and names', () => {
    expect(
      loadConfig({ TRUST_PROXY: 'loopback, 10.0.0.0/8, 2001:db8::/32' }).clientIp.trustedProxies,
    ).toEqual(['127.0.0.0/8', '::1/128', '10.0.0.0/8', '2001:db8::/32']);
  });

  it('refuses TRUST_PROXY=true and hop counts, saying what to write instead', () => {
    for (const value of ['true', '1', '2']) {
      const problems = problemsOf({ TRUST_PROXY: value });
      expect(problems, value).toHaveLength(1);
      expect(problems[0], value).toMatch(new RegExp(`^TRUST_PROXY=${value} .*TRUST_PROXY=loopback`));
    }
  });

  it('takes CLIENT_IP_HEADER as a lower-case header name, behind a trusted proxy', () => {
    expect(loadConfig({ TRUST_PROXY: 'loopback', CLIENT_IP_HEADER: 'CF-Connecting-IP' }).clientIp).toEqual({
      trustedProxies: ['127.0.0.0/8', '::1/128'],
      clientIpHeader: 'cf-connecting-ip',
    });
  });

  it('refuses CLIENT_IP_HEADER without TRUST_PROXY: anyone could write the header', () => {
    const envs: Record<string, string>[] = [
      { CLIENT_IP_HEADER: 'x-real-ip' },
      { CLIENT_IP_HEADER: 'x-real-ip', TRUST_PROXY: 'false' },
    ];
    for (const env of envs) {
      const problems = problemsOf(env);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/CLIENT_IP_HEADER.*TRUST_PROXY/);
    }
  });

  it('refuses a CLIENT_IP_HEADER that is no header name, or is X-Forwarded-For', () => {
    for (const name of ['x real ip', 'x-real-ip:', 'cf-connecting-ip,x-real-ip', 'é', 'X-Forwarded-For']) {
      const problems = problemsOf({ CLIENT_IP_HEADER: name, TRUST_PROXY: 'loopback' });
      expect(problems, name).toHaveLength(1);
      expect(problems[0], name).toMatch(/^CLIENT_IP_HEADER/);
    }
  });

  it('refuses a minimum password length below 8', () => {
    expect(problemsOf({ PASSWORD_MIN_LENGTH: '6' }).join()).toMatch(/PASSWORD_MIN_LENGTH/);
  });

  it('leaves metrics off unless METRICS_TOKEN or METRICS_PORT is set, and binds METRICS_PORT to loopback', () => {
    expect(loadConfig({}).metrics).toEqual({ token: undefined, port: undefined, host: '127.0.0.1' });
  });

  it('takes a METRICS_TOKEN of at least 32 characters and a METRICS_PORT with its METRICS_HOST', () => {
    const token = randomBytes(32).toString('base64url');
    const config = loadConfig({ METRICS_TOKEN: token, METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0' });
    expect(config.metrics).toEqual({ token, port: 9464, host: '0.0.0.0' });
  });

  it('refuses a METRICS_TOKEN that is short, patterned or not a Bearer token, without echoing it', () => {
    const cases = {
      short: randomBytes(23).toString('base64url'),
      patterned: 'ab'.repeat(20),
      spaces: `${randomBytes(16).toString('hex')} ${randomBytes(16).toString('hex')}`,
      quoted: `"${randomBytes(32).toString('base64url')}"`,
    };
    for (const [name, token] of Object.entries(cases)) {
      const problems = problemsOf({ METRICS_TOKEN: token }).join();
      expect(problems, name).toMatch(/METRICS_TOKEN/);
      expect(problems, name).not.toContain(token.trim());
    }
  });

  it('refuses a METRICS_PORT out of range or equal to PORT', () => {
    expect(problemsOf({ METRICS_PORT: '0' }).join()).toMatch(/METRICS_PORT/);
    expect(problemsOf({ METRICS_PORT: '70000' }).join()).toMatch(/METRICS_PORT/);
    expect(problemsOf({ PORT: '9000', METRICS_PORT: '9000' }).join()).toMatch(
      /METRICS_PORT must differ from PORT/,
    );
  });

  it('keeps audit events 90 days unless AUDIT_RETENTION_DAYS says otherwise', () => {
    expect(loadConfig({}).auditRetentionDays).toBe(90);
    expect(loadConfig({ AUDIT_RETENTION_DAYS: '30' }).auditRetentionDays).toBe(30);
  });

  it('refuses an AUDIT_RETENTION_DAYS outside 1 to 3650 days', () => {
    for (const value of ['0', '-1', '3651', 'forever']) {
      expect(problemsOf({ AUDIT_RETENTION_DAYS: value }).join(), value).toMatch(/AUDIT_RETENTION_DAYS/);
    }
  });

  it('leaves CORS off by default: no origin may read responses from a browser', () => {
    expect(loadConfig({}).corsOrigins).toEqual([]);
  });

  it('takes CORS_ORIGINS as a comma list of exact origins', () => {
    expect(
      loadConfig({
        CORS_ORIGINS: 'https://app.example.com, https://admin.example.com:8443,http://localhost:3000',
      }).corsOrigins,
    ).toEqual(['https://app.example.com', 'https://admin.example.com:8443', 'http://localhost:3000']);
  });

  it('refuses * in CORS_ORIGINS and says why', () => {
    expect(problemsOf({ CORS_ORIGINS: '*' }).join()).toMatch(/CORS_ORIGINS.*\*.*list the origins/);
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com,*' }).join()).toMatch(/CORS_ORIGINS/);
  });

  it('refuses a CORS origin with a path, query, credentials, wildcard or another scheme', () => {
    for (const origin of [
      'https://app.example.com/app',
      'https://app.example.com/?x=1',
      'https://user@app.example.com',
      'https://*.example.com',
      'ftp://app.example.com',
      'app.example.com',
      'null',
    ]) {
      expect(problemsOf({ CORS_ORIGINS: origin }).join(), origin).toMatch(/CORS_ORIGINS/);
    }
  });

  it('refuses a CORS origin that a browser would spell differently, and shows the spelling to use', () => {
    expect(problemsOf({ CORS_ORIGINS: 'https://App.Example.com' }).join()).toMatch(
      /https:\/\/app\.example\.com/,
    );
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com/' }).join()).toMatch(
      /write it as https:\/\/app\.example\.com\b/,
    );
    expect(problemsOf({ CORS_ORIGINS: 'https://app.example.com:443' }).join()).toMatch(
      /write it as https:\/\/app\.example\.com\b/,
    );
  });

  it('refuses a plain-HTTP CORS origin other than loopback', () => {
    expect(problemsOf({ CORS_ORIGINS: 'http://app.example.com' }).join()).toMatch(/CORS_ORIGINS.*https/);
    for (const origin of ['http://localhost:5173', 'http://127.0.0.1:3000', 'http://[::1]:8080']) {
      expect(loadConfig({ CORS_ORIGINS: origin }).corsOrigins, origin).toEqual([origin]);
    }
  });

  it('leaves the breached-password check off by default, so that a first run needs no network', () => {
    expect(loadConfig({}).passwords.breachCheck).toBeUndefined();
    expect(loadConfig({ HIBP_API_URL: 'http://127.0.0.1:9' }).passwords.breachCheck).toBeUndefined();
  });

  it('turns on the Have I Been Pwned range check with BREACHED_PASSWORD_CHECK=hibp', () => {
    expect(loadConfig({ BREACHED_PASSWORD_CHECK: 'hibp' }).passwords.breachCheck).toEqual({
      apiUrl: 'https://api.pwnedpasswords.com',
      timeoutMs: 2000,
      failure: 'open',
    });
    expect(
      loadConfig({
        BREACHED_PASSWORD_CHECK: 'hibp',
        HIBP_API_URL: 'http://127.0.0.1:8080/pwned/',
        HIBP_TIMEOUT_MS: '500',
        BREACHED_PASSWORD_CHECK_FAILURE: 'closed',
      }).passwords.breachCheck,
    ).toEqual({ apiUrl: 'http://127.0.0.1:8080/pwned', timeoutMs: 500, failure: 'closed' });
  });

  it('refuses a BREACHED_PASSWORD_CHECK_FAILURE other than open or closed', () => {
    expect(
      problemsOf({ BREACHED_PASSWORD_CHECK: 'hibp', BREACHED_PASSWORD_CHECK_FAILURE: 'shut' }).join(),
    ).toMatch(/BREACHED_PASSWORD_CHECK_FAILURE.*open, closed/);
  });

  it('refuses an unknown BREACHED_PASSWORD_CHECK, an HIBP_API_URL that is not an http(s) URL, and a timeout out of range', () => {
    expect(problemsOf({ BREACHED_PASSWORD_CHECK: 'on' }).join()).toMatch(
      /BREACHED_PASSWORD_CHECK.*off, hibp/,
    );
    for (const url of ['api.pwnedpasswords.com', 'ftp://example.com', 'https://example.com/?q=1']) {
      expect(problemsOf({ BREACHED_PASSWORD_CHECK: 'hibp', HIBP_API_URL: url }).join(), url).toMatch(
        /HIBP_API_URL/,
      );
    }
    expect(problemsOf({ HIBP_TIMEOUT_MS: '50' }).join()).toMatch(/HIBP_TIMEOUT_MS/);
    expect(problemsOf({ HIBP_TIMEOUT_MS: '60000' }).join()).toMatch(/HIBP_TIMEOUT_MS/);
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

  it('sheds at 90% of the heap limit by default (MAX_HEAP_USED_MB=auto), at a given size, or never (off)', () => {
    expect(loadConfig({}).maxHeapUsedBytes).toBe('auto');
    expect(loadConfig({ MAX_HEAP_USED_MB: '1536' }).maxHeapUsedBytes).toBe(1536 * 1024 * 1024);
    expect(loadConfig({ MAX_HEAP_USED_MB: 'off' }).maxHeapUsedBytes).toBeUndefined();
    for (const value of ['0', '-5', '1.5', 'lots', '99999999']) {
      expect(problemsOf({ MAX_HEAP_USED_MB: value }).join(), value).toMatch(/MAX_HEAP_USED_MB/);
    }
  });

  it('holds at most 10,000 connections by default, fewer than the open-file limit, and takes MAX_CONNECTIONS', () => {
    expect(loadConfig({}).maxConnections).toBe(10_000);
    expect(loadConfig({}, { openFileLimit: 1_048_576 }).maxConnections).toBe(10_000);
    expect(loadConfig({}, { openFileLimit: 1024 }).maxConnections).toBe(768);
    expect(loadConfig({}, { openFileLimit: 256 }).maxConnections).toBe(64);
    expect(loadConfig({ MAX_CONNECTIONS: '500' }, { openFileLimit: 1024 }).maxConnections).toBe(500);
    expect(problemsOf({ MAX_CONNECTIONS: '0' }).join()).toMatch(/^MAX_CONNECTIONS=/);
    expect(problemsOf({ MAX_CONNECTIONS: 'lots' }).join()).toMatch(/^MAX_CONNECTIONS=/);
  });

  it('keeps listening for a second on SIGTERM by default, and takes SHUTDOWN_DRAIN_MS from 0 to 60000', () => {
    expect(loadConfig({}).shutdownDrainMs).toBe(1000);
    expect(loadConfig({ SHUTDOWN_DRAIN_MS: '0' }).shutdownDrainMs).toBe(0);
    expect(loadConfig({ SHUTDOWN_DRAIN_MS: '15000' }).shutdownDrainMs).toBe(15000);
    expect(problemsOf({ SHUTDOWN_DRAIN_MS: '60001' }).join()).toMatch(/^SHUTDOWN_DRAIN_MS=/);
  });

  it('holds refusals past 50 a second for a second by default; REFUSAL_DELAY_MS=0 turns it off', () => {
    expect(loadConfig({}).refusalPacing).toEqual({ undelayedPerSecond: 50, delayMs: 1000, maxHeld: 10_000 });
    expect(loadConfig({ REFUSAL_DELAY_MS: '0' }).refusalPacing.delayMs).toBe(0);
    expect(loadConfig({ UNDELAYED_REFUSALS_PER_SECOND: '0' }).refusalPacing.undelayedPerSecond).toBe(0);
    expect(problemsOf({ REFUSAL_DELAY_MS: '10001' }).join()).toMatch(/^REFUSAL_DELAY_MS=/);
    expect(problemsOf({ UNDELAYED_REFUSALS_PER_SECOND: '-1' }).join()).toMatch(
      /^UNDELAYED_REFUSALS_PER_SECOND=/,
    );
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
      registrationConflictsPerIdentifier: [{ limit: 30, windowSeconds: 3600 }],
      refreshPerFamily: [{ limit: 10, windowSeconds: 60 }],
      refreshPerIp: [{ limit: 150, windowSeconds: 300 }],
      messagesPerMinute: 30,
      mailPerAddress: [
        { limit: 1, windowSeconds: 60 },
        { limit: 5, windowSeconds: 3600 },
      ],
      mailRequestPerIp: [{ limit: 30, windowSeconds: 3600 }],
      emailTokenPerIp: [{ limit: 10, windowSeconds: 300 }],
      emailChangePerUser: [{ limit: 5, windowSeconds: 3600 }],
      passkeyOptionsPerIp: [
        { limit: 30, windowSeconds: 60 },
        { limit: 300, windowSeconds: 3600 },
      ],
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
    // Found from outside: ioredis sends the path as the database's index, and /abc stopped the process once serving.
    for (const path of ['/abc', '/-1', '/1/2', '/2x', '?db=abc', '/?db=-1', '?db='])
      expect(problemsOf({ REDIS_URL: `redis://:pw@cache:6379${path}` }).join(), path).toMatch(
        /REDIS_URL may end with a database index only/,
      );
    expect(problemsOf({ REDIS_URL: 'redis://cache:6379/' })).toEqual([]);
    expect(problemsOf({ REDIS_URL: 'redis://cache:6379?db=3' })).toEqual([]);
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
      REGISTER_CONFLICTS_PER_IDENTIFIER: '5/hour',
    });
    expect(problems).toHaveLength(5);
    for (const name of [
      'TOKEN_PASSWORD_PER_IP',
      'REGISTER_PER_IP',
      'REFRESH_PER_FAMILY',
      'REFRESH_PER_IP',
      'REGISTER_CONFLICTS_PER_IDENTIFIER',
    ]) {
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

  it('reads MESSAGE_RATE_PER_MINUTE, 1 to 10000 messages a minute per user', () => {
    expect(loadConfig({ MESSAGE_RATE_PER_MINUTE: '5' }).throttling.messagesPerMinute).toBe(5);
    expect(problemsOf({ MESSAGE_RATE_PER_MINUTE: '0' }).join()).toMatch(/MESSAGE_RATE_PER_MINUTE/);
    expect(problemsOf({ MESSAGE_RATE_PER_MINUTE: '10001' }).join()).toMatch(/MESSAGE_RATE_PER_MINUTE/);
    expect(problemsOf({ MESSAGE_RATE_PER_MINUTE: 'lots' }).join()).toMatch(/MESSAGE_RATE_PER_MINUTE/);
  });

  it('reads the known-client settings', () => {
    const config = loadConfig({ DEVICE_TOKEN_TTL_DAYS: '30', KNOWN_IPS_PER_USER: '0', IPV6_SUBNET: '56' });
    expect(config.throttling.deviceTokenTtlDays).toBe(30);
    expect(config.throttling.knownIpsPerUser).toBe(0);
    expect(config.throttling.ipv6SubnetBits).toBe(56);
  });
});

describe('loadConfig: email verification and password reset', () => {
  it('does not require a verified email by default, so that register then /token keeps working', () => {
    expect(loadConfig({}).requireVerifiedEmail).toBe(false);
    expect(loadConfig({ REQUIRE_VERIFIED_EMAIL: 'true' }).requireVerifiedEmail).toBe(true);
    expect(problemsOf({ REQUIRE_VERIFIED_EMAIL: 'yes' }).join()).toMatch(/REQUIRE_VERIFIED_EMAIL/);
  });

  it('takes the mail limits as rate windows', () => {
    const config = loadConfig({
      MAIL_PER_ADDRESS: '2/30s',
      MAIL_REQUEST_PER_IP: '100/3600s',
      EMAIL_TOKEN_PER_IP: '20/60s',
      EMAIL_CHANGE_PER_USER: '3/600s',
    });
    expect(config.throttling.emailChangePerUser).toEqual([{ limit: 3, windowSeconds: 600 }]);
    expect(config.throttling.mailPerAddress).toEqual([{ limit: 2, windowSeconds: 30 }]);
    expect(config.throttling.mailRequestPerIp).toEqual([{ limit: 100, windowSeconds: 3600 }]);
    expect(config.throttling.emailTokenPerIp).toEqual([{ limit: 20, windowSeconds: 60 }]);
    expect(problemsOf({ MAIL_PER_ADDRESS: 'often' }).join()).toMatch(/MAIL_PER_ADDRESS/);
  });
});

describe('loadConfig: mail', () => {
  it('keeps mails in the outbox by default, from no-reply@localhost, with links to this server', () => {
    expect(loadConfig({}).mail).toEqual({
      smtpUrl: undefined,
      from: 'Gatehouse <no-reply@localhost>',
      publicUrl: 'http://localhost:8000',
    });
    expect(loadConfig({ PORT: '9100' }).mail.publicUrl).toBe('http://localhost:9100');
  });

  it('reads SMTP_URL (smtp or smtps, with credentials), MAIL_FROM and PUBLIC_URL', () => {
    const config = loadConfig({
      SMTP_URL: 'smtps://mailer:p%40ss@smtp.example.com:465',
      MAIL_FROM: '"Example, Inc." <accounts@example.com>',
      PUBLIC_URL: 'https://id.example.com/auth/',
    });
    expect(config.mail).toEqual({
      smtpUrl: 'smtps://mailer:p%40ss@smtp.example.com:465',
      from: '"Example, Inc." <accounts@example.com>',
      publicUrl: 'https://id.example.com/auth',
    });
    expect(
      loadConfig({ SMTP_URL: 'smtp://127.0.0.1:2525', PUBLIC_URL: 'http://localhost:8000' }).mail.smtpUrl,
    ).toBe('smtp://127.0.0.1:2525');
    expect(loadConfig({ MAIL_FROM: 'accounts@example.com' }).mail.from).toBe('accounts@example.com');
    expect(loadConfig({ MAIL_FROM: 'Équipe Gatehouse <no-reply@example.com>' }).mail.from).toBe(
      'Équipe Gatehouse <no-reply@example.com>',
    );
  });

  it('refuses SMTP_URL without PUBLIC_URL: links must never come from a request', () => {
    const problems = problemsOf({ SMTP_URL: 'smtp://mailer:hunter2@smtp.example.com' });
    expect(problems.join()).toMatch(/PUBLIC_URL is required when SMTP_URL is set/);
    expect(problems.join()).not.toContain('hunter2');
  });

  it('refuses an SMTP_URL that is not smtp:// or smtps://, without echoing it', () => {
    for (const url of [
      'http://mailer:hunter2@smtp.example.com',
      'smtp://',
      'mailer:hunter2@smtp',
      'direct:?',
    ]) {
      const problems = problemsOf({ SMTP_URL: url, PUBLIC_URL: 'https://id.example.com' });
      expect(problems.join(), url).toMatch(/^SMTP_URL must be an smtp:\/\/ or smtps:\/\/ URL/);
      expect(problems.join()).not.toContain('hunter2');
    }
  });

  it('refuses a PUBLIC_URL that is not an absolute http(s) URL without query, fragment or credentials', () => {
    for (const url of [
      'id.example.com',
      '/account',
      'ftp://id.example.com',
      'https://id.example.com/?next=1',
      'https://id.example.com/#top',
      'https://user:pw@id.example.com',
    ]) {
      expect(problemsOf({ PUBLIC_URL: url }).join(), url).toMatch(/^PUBLIC_URL=/);
    }
  });

  it('refuses a MAIL_FROM that is not one address, and header injection', () => {
    for (const from of [
      'Gatehouse',
      'a@b.c, c@d.e',
      'Gatehouse <a@b.c',
      'a@b.c\r\nBcc: victim@example.com',
      '<>',
      // Found from outside: a group, a second address, or a line separator in the name passed and reached the wire.
      'Gate\tHouse: x@evil.example; <a@example.com>',
      'Gate: House <a@example.com>',
      'Gate\u2028House <a@example.com>',
      'Gate\u0085House <a@example.com>',
      '"Gate\u2028House" <a@example.com>',
      'a:b@example.com',
      'Gate <a;b@example.com>',
    ]) {
      expect(problemsOf({ MAIL_FROM: from }).join(), from).toMatch(/^MAIL_FROM=/);
    }
  });
});

describe('cleartextLinkWarning', () => {
  const mailOf = (env: Record<string, string>) => loadConfig(env).mail;
  it('warns, without refusing, when mailed links would travel over http to a host that is not this machine', () => {
    const mail = mailOf({ SMTP_URL: 'smtp://mail.example.com', PUBLIC_URL: 'http://id.intranet.example' });
    expect(cleartextLinkWarning(mail)).toMatch(/PUBLIC_URL=http:\/\/id\.intranet\.example.*clear text/);
  });

  it.each([
    ['https://id.example.com'],
    ['http://localhost:8000'],
    ['http://127.0.0.1:8000'],
    ['http://[::1]:8000'],
    ['http://app.localhost'],
  ])('stays quiet for %s', (publicUrl) => {
    expect(cleartextLinkWarning(mailOf({ SMTP_URL: 'smtp://mail.example.com', PUBLIC_URL: publicUrl }))).toBe(
      undefined,
    );
  });

  it('stays quiet without SMTP_URL: nothing is mailed', () => {
    expect(cleartextLinkWarning(mailOf({ PUBLIC_URL: 'http://id.intranet.example' }))).toBe(undefined);
  });
});

describe('WebAuthn relying party', () => {
  const webauthnOf = (env: Record<string, string>) => loadConfig(env).webauthn;

  it('defaults to localhost and http://localhost:PORT, named Gatehouse', () => {
    expect(webauthnOf({})).toEqual({
      rpId: 'localhost',
      rpName: 'Gatehouse',
      origins: ['http://localhost:8000'],
    });
    expect(webauthnOf({ PORT: '9100' }).origins).toEqual(['http://localhost:9100']);
  });

  it('follows an https PUBLIC_URL: its host is the RP ID, its origin the one origin', () => {
    expect(webauthnOf({ PUBLIC_URL: 'https://id.example.com/auth/' })).toEqual({
      rpId: 'id.example.com',
      rpName: 'Gatehouse',
      origins: ['https://id.example.com'],
    });
  });

  it.each([['http://gatehouse.test'], ['http://127.0.0.1:8000'], ['https://10.0.0.5']])(
    'keeps starting with PUBLIC_URL=%s, which passkeys cannot use: the localhost defaults apply',
    (publicUrl) => {
      expect(webauthnOf({ PUBLIC_URL: publicUrl })).toMatchObject({
        rpId: 'localhost',
        origins: ['http://localhost:8000'],
      });
    },
  );

  it('takes an RP ID with its subdomains as origins, and a name', () => {
    expect(
      webauthnOf({
        WEBAUTHN_RP_ID: 'example.com',
        WEBAUTHN_RP_NAME: 'Example',
        WEBAUTHN_ORIGINS: 'https://example.com, https://id.example.com,https://app.example.com:8443',
      }),
    ).toEqual({
      rpId: 'example.com',
      rpName: 'Example',
      origins: ['https://example.com', 'https://id.example.com', 'https://app.example.com:8443'],
    });
  });

  it.each([
    ['127.0.0.1'],
    ['[::1]'],
    ['https://example.com'],
    ['example.com:443'],
    ['example.com/path'],
    ['Example.com'],
    ['-bad.example.com'],
  ])('refuses WEBAUTHN_RP_ID=%s: a domain is required', (rpId) => {
    expect(problemsOf({ WEBAUTHN_RP_ID: rpId, WEBAUTHN_ORIGINS: 'https://example.com' }).join('\n')).toMatch(
      /WEBAUTHN_RP_ID=.* must be a lower-case domain name without scheme, port or path/,
    );
  });

  it.each([
    ['http://id.example.com', /must use https: WebAuthn allows http only for localhost/],
    ['https://evil.com', /is not within WEBAUTHN_RP_ID "example.com"/],
    ['https://notexample.com', /is not within WEBAUTHN_RP_ID "example.com"/],
    ['https://id.example.com/', /must be an origin as browsers send it/],
    ['https://id.example.com:443', /must be an origin as browsers send it/],
    ['id.example.com', /must be an origin as browsers send it/],
  ])('refuses the origin %s for the RP ID example.com', (origin, message) => {
    expect(problemsOf({ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: origin }).join('\n')).toMatch(
      message,
    );
  });

  it('accepts http only for localhost, and needs an origin for an RP ID other than localhost', () => {
    expect(webauthnOf({ WEBAUTHN_RP_ID: 'localhost' }).origins).toEqual(['http://localhost:8000']);
    expect(
      webauthnOf({
        WEBAUTHN_RP_ID: 'localhost',
        WEBAUTHN_ORIGINS: 'http://localhost:3000,http://app.localhost',
      }).origins,
    ).toEqual(['http://localhost:3000', 'http://app.localhost']);
    expect(problemsOf({ WEBAUTHN_RP_ID: 'example.com' }).join('\n')).toMatch(/WEBAUTHN_ORIGINS must be set/);
    expect(
      webauthnOf({ WEBAUTHN_RP_ID: 'example.com', PUBLIC_URL: 'https://id.example.com' }).origins,
    ).toEqual(['https://id.example.com']);
  });
});
