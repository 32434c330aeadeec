import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import Type, { type Static } from 'typebox';
import Value from 'typebox/value';
import { type ClientIpRules, parseTrustedProxies } from './security/client-ip.ts';
import { MAX_PASSWORD_LENGTH } from './security/password-policy.ts';
import { MIN_SECRET_BYTES } from './security/secret-box.ts';

// libuv's threadpool has at most 1024 threads, and runtime-check.ts adds 4 to this for everything but hashing.
const MAX_HASH_CONCURRENCY = 1020;

const booleanFlag = (fallback: 'true' | 'false') =>
  Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')], {
    default: fallback,
  });

const EnvSchema = Type.Object({
  HOST: Type.String({ default: '0.0.0.0', minLength: 1 }),
  PORT: Type.Integer({ default: 8000, minimum: 0, maximum: 65535 }),
  DATABASE_URL: Type.String({ default: 'sqlite:./data/gatehouse.db', minLength: 1 }),
  JWT_ALGORITHM: Type.Union([Type.Literal('EdDSA'), Type.Literal('HS256')], { default: 'EdDSA' }),
  JWT_SECRET: Type.Optional(Type.String()),
  JWT_ISSUER: Type.String({ default: 'http://localhost:8000', minLength: 1 }),
  JWT_AUDIENCE: Type.String({ default: 'gatehouse', minLength: 1 }),
  ACCESS_TOKEN_TTL_SECONDS: Type.Integer({ default: 900, minimum: 1, maximum: 3600 }),
  REFRESH_TOKEN_IDLE_TTL_SECONDS: Type.Integer({ default: 604800, minimum: 1, maximum: 31536000 }),
  SESSION_MAX_LIFETIME_SECONDS: Type.Integer({ default: 2592000, minimum: 1, maximum: 31536000 }),
  GATEHOUSE_SECRET: Type.Optional(Type.String()),
  REFRESH_TOKEN_REUSE_GRACE_SECONDS: Type.Integer({ default: 10, minimum: 0, maximum: 300 }),
  PASSWORD_MIN_LENGTH: Type.Integer({ default: 8, minimum: 8, maximum: 128 }),
  ARGON2_MEMORY_KIB: Type.Integer({ default: 19456, minimum: 8, maximum: 4194304 }),
  ARGON2_TIME_COST: Type.Integer({ default: 2, minimum: 1, maximum: 20 }),
  ARGON2_PARALLELISM: Type.Integer({ default: 1, minimum: 1, maximum: 16 }),
  BODY_LIMIT_BYTES: Type.Integer({ default: 16384, minimum: 1024, maximum: 1048576 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info' },
  ),
  DOCS_ENABLED: booleanFlag('true'),
  TRUST_PROXY: Type.Optional(Type.String()),
  CLIENT_IP_HEADER: Type.Optional(Type.String()),
  WORKERS: Type.String({ default: '1', pattern: '^(auto|[1-9][0-9]?)$' }),
  HASH_THREAD_PRIORITY: Type.Union([Type.Literal('idle'), Type.Literal('low'), Type.Literal('normal')], {
    default: 'idle',
  }),
  METRICS_TOKEN: Type.Optional(Type.String()),
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  METRICS_HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  AUDIT_RETENTION_DAYS: Type.Integer({ default: 90, minimum: 1, maximum: 3650 }),
  CORS_ORIGINS: Type.Optional(Type.String()),
  BREACHED_PASSWORD_CHECK: Type.Union([Type.Literal('off'), Type.Literal('hibp')], { default: 'off' }),
  BREACHED_PASSWORD_CHECK_FAILURE: Type.Union([Type.Literal('open'), Type.Literal('closed')], {
    default: 'open',
  }),
  HIBP_API_URL: Type.String({ default: 'https://api.pwnedpasswords.com', minLength: 1 }),
  HIBP_TIMEOUT_MS: Type.Integer({ default: 2000, minimum: 100, maximum: 10000 }),
  // runtime-check.ts reads HASH_CONCURRENCY too, before this schema runs: keep their bounds the same.
  HASH_CONCURRENCY: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_HASH_CONCURRENCY })),
  HASH_QUEUE_MAX: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
  HASH_QUEUE_TIMEOUT_MS: Type.Integer({ default: 1000, minimum: 1, maximum: 60_000 }),
  MAX_HEAP_USED_MB: Type.String({ default: 'auto', pattern: '^(auto|off|[1-9][0-9]{0,6})$' }),
  SHUTDOWN_DRAIN_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 60_000 }),
  MAX_CONNECTIONS: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  REFUSAL_DELAY_MS: Type.Integer({ default: 1000, minimum: 0, maximum: 10_000 }),
  UNDELAYED_REFUSALS_PER_SECOND: Type.Integer({ default: 50, minimum: 0, maximum: 1_000_000 }),
  RATE_LIMITS: Type.Union([Type.Literal('on'), Type.Literal('off')], { default: 'on' }),
  REDIS_URL: Type.Optional(Type.String()),
  REDIS_KEY_PREFIX: Type.String({ default: 'gatehouse:', pattern: '^[A-Za-z0-9:_.-]{1,64}$' }),
  IPV6_SUBNET: Type.Integer({ default: 64, minimum: 1, maximum: 128 }),
  LOGIN_FREE_FAILS: Type.Integer({ default: 5, minimum: 1, maximum: 1000 }),
  LOGIN_BACKOFF_BASE_S: Type.Integer({ default: 30, minimum: 1, maximum: 86400 }),
  LOGIN_BACKOFF_MAX_S: Type.Integer({ default: 3600, minimum: 1, maximum: 604800 }),
  LOGIN_FAIL_TTL_S: Type.Integer({ default: 86400, minimum: 1, maximum: 2592000 }),
  ACCOUNT_UNTRUSTED_FAILS: Type.Integer({ default: 10, minimum: 1, maximum: 1000 }),
  ACCOUNT_BACKOFF_BASE_S: Type.Integer({ default: 900, minimum: 1, maximum: 86400 }),
  ACCOUNT_HARD_CAP: Type.Integer({ default: 100, minimum: 1, maximum: 100 }),
  IP_FAILS_PER_MIN: Type.Integer({ default: 10, minimum: 1, maximum: 100000 }),
  IP_FAILS_PER_DAY: Type.Integer({ default: 100, minimum: 1, maximum: 10000000 }),
  TOKEN_PASSWORD_PER_IP: Type.String({ default: '150/300s,30/60s' }),
  REGISTER_PER_IP: Type.String({ default: '3/10s,20/3600s' }),
  REGISTER_CONFLICTS_PER_IDENTIFIER: Type.String({ default: '30/3600s' }),
  REFRESH_PER_FAMILY: Type.String({ default: '10/60s' }),
  REFRESH_PER_IP: Type.String({ default: '150/300s' }),
  MAIL_PER_ADDRESS: Type.String({ default: '1/60s,5/3600s' }),
  MAIL_REQUEST_PER_IP: Type.String({ default: '30/3600s' }),
  EMAIL_TOKEN_PER_IP: Type.String({ default: '10/300s' }),
  EMAIL_CHANGE_PER_USER: Type.String({ default: '5/3600s' }),
  REQUIRE_VERIFIED_EMAIL: booleanFlag('false'),
  MESSAGE_RATE_PER_MINUTE: Type.Integer({ default: 30, minimum: 1, maximum: 10_000 }),
  DEVICE_TOKEN_TTL_DAYS: Type.Integer({ default: 90, minimum: 1, maximum: 400 }),
  KNOWN_IPS_PER_USER: Type.Integer({ default: 10, minimum: 0, maximum: 100 }),
  // Checked by parseSmtpUrl rather than the schema, whose messages would quote the password.
  SMTP_URL: Type.Optional(Type.String()),
  MAIL_FROM: Type.String({ default: 'Gatehouse <no-reply@localhost>', minLength: 1 }),
  PUBLIC_URL: Type.Optional(Type.String()),
  WEBAUTHN_RP_ID: Type.Optional(Type.String()),
  WEBAUTHN_RP_NAME: Type.String({ default: 'Gatehouse', minLength: 1, maxLength: 64 }),
  WEBAUTHN_ORIGINS: Type.Optional(Type.String()),
  PASSKEY_OPTIONS_PER_IP: Type.String({ default: '30/60s,300/3600s' }),
});

type Env = Static<typeof EnvSchema>;

export type DatabaseConfig = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string };

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly database: DatabaseConfig;
  readonly jwt: {
    readonly algorithm: 'EdDSA' | 'HS256';
    readonly secret: string | undefined;
    readonly issuer: string;
    readonly audience: string;
    readonly accessTokenTtlSeconds: number;
  };
  readonly sessions: {
    readonly idleTtlSeconds: number;
    readonly maxLifetimeSeconds: number;
    readonly reuseGraceSeconds: number;
  };
  readonly passwords: {
    readonly minLength: number;
    readonly maxLength: number;
    readonly argon2: { readonly memoryKib: number; readonly timeCost: number; readonly parallelism: number };
    /**
     * The Have I Been Pwned range API new passwords are checked against, and what happens when it cannot answer (the
     * password is accepted, or refused with 503); undefined when the check is off.
     */
    readonly breachCheck:
      | { readonly apiUrl: string; readonly timeoutMs: number; readonly failure: 'open' | 'closed' }
      | undefined;
  };
  /**
   * GATEHOUSE_SECRET as a list, current first: it seals private keys at rest and derives the refresh-token key. Empty
   * when unset on SQLite, where main.ts keeps one in `secret.key` beside the database file.
   */
  readonly secrets: readonly string[];
  readonly bodyLimitBytes: number;
  readonly logLevel: string;
  readonly docsEnabled: boolean;
  /** Which peers may say who the client is (TRUST_PROXY), and in which header besides X-Forwarded-For. */
  readonly clientIp: ClientIpRules;
  /** Processes serving the port (node:cluster); `auto` became the number of cores. */
  readonly workers: number;
  /** Scheduling of libuv's threadpool, where passwords are hashed: nice 19, SCHED_IDLE, or unchanged. */
  readonly hashThreadPriority: 'low' | 'idle' | 'normal';
  /** Prometheus metrics: `GET /metrics` with this Bearer token, and/or a listener of their own; off when neither. */
  readonly metrics: {
    readonly token: string | undefined;
    readonly port: number | undefined;
    readonly host: string;
  };
  /** How long security events stay in the audit_events table before pruning deletes them. */
  readonly auditRetentionDays: number;
  /** Origins whose pages may read responses (CORS), exactly as browsers send them; empty means CORS is off. */
  readonly corsOrigins: readonly string[];
  /** Load shedding of password hashing: slots, then a bounded, timed FIFO queue; past it a 503. */
  readonly hashing: {
    readonly concurrency: number;
    readonly queueMax: number;
    readonly queueTimeoutMs: number;
  };
  /** How long a stopping server keeps listening (readiness failed, connections closed after each answer). */
  readonly shutdownDrainMs: number;
  /** Connections held at once (per process); one more is closed as it arrives. */
  readonly maxConnections: number;
  /** Refusals (429, and 503 of a full hash queue or a stalled loop) past a budget a second are held before they are sent. */
  readonly refusalPacing: {
    readonly undelayedPerSecond: number;
    readonly delayMs: number;
    readonly maxHeld: number;
  };
  /** Past this much used heap requests are shed (503); `auto`: 90% of V8's heap limit; undefined: never. */
  readonly maxHeapUsedBytes: number | 'auto' | undefined;
  /** Where counters shared by instances live; undefined keeps them in this process (or its cluster's primary). */
  readonly redis: { readonly url: string; readonly keyPrefix: string } | undefined;
  readonly throttling: ThrottlingConfig;
  /** Whether the password grant refuses an account whose email was never verified (after its password matched). */
  readonly requireVerifiedEmail: boolean;
  readonly mail: MailConfig;
  readonly webauthn: WebauthnConfig;
}

/** The WebAuthn relying party: never taken from a request's Host. */
export interface WebauthnConfig {
  /** The RP ID credentials are scoped to: a domain, as `example.com` or `localhost`. */
  readonly rpId: string;
  readonly rpName: string;
  /** Origins whose pages may run ceremonies, exactly as clientDataJSON carries them. */
  readonly origins: readonly string[];
}

/** Where mail goes and what links in it point to. */
export interface MailConfig {
  /** The SMTP server the outbox's sender delivers to; undefined keeps mails in the outbox (`gatehouse mail list`). */
  readonly smtpUrl: string | undefined;
  /** The From header of every mail. */
  readonly from: string;
  /** The origin (and path prefix) of links in mails, without a trailing slash; never taken from a request. */
  readonly publicUrl: string;
}

/**
 * Returns the start-up warning for mailed links that travel in clear text (PUBLIC_URL on http:// to a host other than
 * this machine, with SMTP_URL set), or undefined. Not a refusal: tests and intranets run on http. But a reset link
 * read on the wire is an account taken over.
 */
export function cleartextLinkWarning(mail: MailConfig): string | undefined {
  if (mail.smtpUrl === undefined) return undefined;
  const url = new URL(mail.publicUrl);
  if (url.protocol !== 'http:') return undefined;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const loopback =
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '::1' ||
    /^127(?:\.\d{1,3}){3}$/.test(host);
  if (loopback) return undefined;
  return `PUBLIC_URL=${mail.publicUrl} is http: the verification and reset links mailed will travel in clear text; use https`;
}

/** At most `limit` events per `windowSeconds`, counted from the first event of the window. */
export interface RateWindow {
  readonly limit: number;
  readonly windowSeconds: number;
}

/** THROTTLING.md §2's rules R1–R7, the posting rate R8 and the known-client set; `enabled: false` (RATE_LIMITS=off) turns all off. */
export interface ThrottlingConfig {
  readonly enabled: boolean;
  readonly ipv6SubnetBits: number;
  readonly freeFailures: number;
  readonly backoffBaseSeconds: number;
  readonly backoffMaxSeconds: number;
  readonly failureTtlSeconds: number;
  readonly accountUntrustedFailures: number;
  readonly accountBackoffBaseSeconds: number;
  readonly accountHardCap: number;
  readonly ipFailuresPerMinute: number;
  readonly ipFailuresPerDay: number;
  readonly passwordGrantPerIp: readonly RateWindow[];
  readonly registrationPerIp: readonly RateWindow[];
  /** R15: sign-ups that met one taken username or email, per identifier, from whichever address. */
  readonly registrationConflictsPerIdentifier: readonly RateWindow[];
  readonly refreshPerFamily: readonly RateWindow[];
  readonly refreshPerIp: readonly RateWindow[];
  /** R8: messages a user may post a minute. */
  readonly messagesPerMinute: number;
  /** R9: mails asked for one address (forgot, resend, verification, email change), whether or not it has an account. */
  readonly mailPerAddress: readonly RateWindow[];
  /** R10: password-forgotten, verification-resend and email-change requests per client address. */
  readonly mailRequestPerIp: readonly RateWindow[];
  /** R11: tokens submitted (email verification, password reset) per client address. */
  readonly emailTokenPerIp: readonly RateWindow[];
  /** R12: email changes one user asks for, from whichever address. */
  readonly emailChangePerUser: readonly RateWindow[];
  /** R14: passwordless passkey options (each stores a challenge) per client address. */
  readonly passkeyOptionsPerIp: readonly RateWindow[];
  readonly deviceTokenTtlDays: number;
  readonly knownIpsPerUser: number;
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

// Secrets copied from tutorials and docs: a token signed with any of them can be forged by anyone.
const PUBLISHED_SECRETS = new Set([
  '09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7',
  'your-256-bit-secret',
  'your-secret-key',
  'changethis',
  'changeme',
  'secret',
  'supersecret',
  'super-secret-jwt-token-with-at-least-32-characters-long',
  'a-string-secret-at-least-256-bits-long',
  'gatehouse-example-secret-change-me-please-0123456789',
]);

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const MAKE_SECRET =
  "Make one with `node -e \"console.log(require('crypto').randomBytes(32).toString('base64url'))\"` (or `npm run gatehouse -- secret generate`)";

// The HMAC key stays the string's UTF-8 bytes, as the FastAPI seed and other verifiers sharing the secret use it;
// only its strength is judged on the decoded bytes, so that a 32-character passphrase no longer passes as 32 bytes.
function encodedSecretBytes(secret: string): number {
  if (/^(?:[0-9a-fA-F]{2})+$/.test(secret)) return secret.length / 2;
  const unpadded = secret.replace(/={1,2}$/, '');
  const base64 = /^[A-Za-z0-9+/]+$/.test(unpadded) || /^[A-Za-z0-9_-]+$/.test(unpadded);
  // Random base64 of 32+ bytes mixes cases and has about 30 distinct characters (a miss is below one in 10^9);
  // a long passphrase of letters and digits usually does not.
  if (!base64 || !/[a-z]/.test(unpadded) || !/[A-Z]/.test(unpadded) || new Set(unpadded).size < 20) return 0;
  return Math.floor((unpadded.length * 3) / 4);
}

/** Parses an environment-like record into a frozen Config, or throws ConfigError listing every problem. */
/** What the host allows, read by main.ts: loadConfig itself reads nothing. */
export interface HostLimits {
  /** The process's limit on open files (its soft RLIMIT_NOFILE, which Node raises to the hard one at start). */
  openFileLimit?: number | undefined;
}

export function loadConfig(env: Record<string, string | undefined>, host: HostLimits = {}): Config {
  const raw: Record<string, string> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = env[key];
    if (value !== undefined && value !== '') raw[key] = value.trim();
  }
  // On a copy: TypeBox converts in place, and `raw` keeps what was written, for the checks and messages below.
  const converted = Value.Convert(EnvSchema, Value.Default(EnvSchema, { ...raw }));
  const problems: string[] = [];
  // Settings refused for their type: the checks below read their defaults instead, so that every other problem is
  // reported at this start too, not one per restart; a comparison with a refused setting says nothing more.
  const refused = new Set<string>();
  // Variable by variable: TypeBox lists eight errors of an object at most, and a wrong LOG_LEVEL alone makes eight.
  const given = converted as Record<string, unknown>;
  for (const [name, schema] of Object.entries(EnvSchema.properties)) {
    if (given[name] === undefined) continue;
    const before = problems.length;
    // TypeBox's conversion reads "8000.5" as 8000 and "0x10" as 16: an integer setting is written in digits or refused.
    const written = raw[name];
    if (
      (schema as { type?: unknown }).type === 'integer' &&
      written !== undefined &&
      !/^-?\d+$/.test(written)
    ) {
      problems.push(`${name}=${shown(written)} must be an integer, written in digits`);
      continue;
    }
    const [error] = Value.Errors(schema, given[name]);
    if (error) problems.push(`${name}=${shown(raw[name] ?? '')} ${describeProblem(name, error.message)}`);
    if (problems.length > before) refused.add(name);
  }
  const clientIp = parseClientIpRules(raw.TRUST_PROXY, raw.CLIENT_IP_HEADER, problems);
  const values = (
    refused.size === 0
      ? converted
      : Value.Convert(
          EnvSchema,
          Value.Default(
            EnvSchema,
            Object.fromEntries(Object.entries(raw).filter(([name]) => !refused.has(name))),
          ),
        )
  ) as Env;
  const comparable = (...names: string[]) => names.every((name) => !refused.has(name));

  const database = parseDatabaseUrl(values.DATABASE_URL, problems);
  const secret = values.JWT_SECRET;
  if (values.JWT_ALGORITHM === 'HS256') {
    if (secret === undefined) {
      problems.push('JWT_SECRET is required when JWT_ALGORITHM=HS256 (at least 32 random bytes)');
    } else if (PUBLISHED_SECRETS.has(secret) || PUBLISHED_SECRETS.has(secret.toLowerCase())) {
      problems.push('JWT_SECRET is a published example secret: generate one with `openssl rand -base64 48`');
    } else if (encodedSecretBytes(secret) < 32) {
      problems.push(
        'JWT_SECRET must be at least 32 bytes (RFC 7518 §3.2) of random data written as base64, base64url or hex, ' +
          'never a passphrase: generate one with `openssl rand -base64 48`',
      );
    } else if (new Set(secret).size < 10) {
      problems.push(
        'JWT_SECRET has too few distinct characters to be random: generate one with `openssl rand -base64 48`',
      );
    }
  }
  const secrets = parseSecretList(values.GATEHOUSE_SECRET, problems);
  if (secrets.length === 0 && database?.kind === 'postgres') {
    problems.push(
      `GATEHOUSE_SECRET is required with a PostgreSQL DATABASE_URL: every instance must share it. ${MAKE_SECRET}`,
    );
  }
  if (
    comparable('REFRESH_TOKEN_IDLE_TTL_SECONDS', 'SESSION_MAX_LIFETIME_SECONDS') &&
    values.REFRESH_TOKEN_IDLE_TTL_SECONDS > values.SESSION_MAX_LIFETIME_SECONDS
  ) {
    problems.push('REFRESH_TOKEN_IDLE_TTL_SECONDS must not exceed SESSION_MAX_LIFETIME_SECONDS');
  }
  for (const name of ['HOST', 'METRICS_HOST'] as const) checkListenHost(name, values[name], problems);
  checkMetricsToken(values.METRICS_TOKEN, problems);
  if (
    comparable('METRICS_PORT', 'PORT') &&
    values.METRICS_PORT !== undefined &&
    values.METRICS_PORT === values.PORT
  ) {
    problems.push('METRICS_PORT must differ from PORT: the metrics listener has no authentication');
  }
  const corsOrigins = parseCorsOrigins(values.CORS_ORIGINS, problems);
  const hibpApiUrl =
    values.BREACHED_PASSWORD_CHECK === 'hibp' ? parseHibpApiUrl(values.HIBP_API_URL, problems) : undefined;
  const redisUrl = parseRedisUrl(values.REDIS_URL, problems);
  const rateWindows = (name: RateSetting) => parseRateWindows(name, values[name], problems);
  const passwordGrantPerIp = rateWindows('TOKEN_PASSWORD_PER_IP');
  const registrationPerIp = rateWindows('REGISTER_PER_IP');
  const registrationConflictsPerIdentifier = rateWindows('REGISTER_CONFLICTS_PER_IDENTIFIER');
  const refreshPerFamily = rateWindows('REFRESH_PER_FAMILY');
  const refreshPerIp = rateWindows('REFRESH_PER_IP');
  const mailPerAddress = rateWindows('MAIL_PER_ADDRESS');
  const mailRequestPerIp = rateWindows('MAIL_REQUEST_PER_IP');
  const emailTokenPerIp = rateWindows('EMAIL_TOKEN_PER_IP');
  const emailChangePerUser = rateWindows('EMAIL_CHANGE_PER_USER');
  const passkeyOptionsPerIp = rateWindows('PASSKEY_OPTIONS_PER_IP');
  for (const base of ['LOGIN_BACKOFF_BASE_S', 'ACCOUNT_BACKOFF_BASE_S'] as const) {
    if (comparable(base, 'LOGIN_BACKOFF_MAX_S') && values[base] > values.LOGIN_BACKOFF_MAX_S)
      problems.push(`${base} must not exceed LOGIN_BACKOFF_MAX_S`);
  }
  const mail = parseMailSettings(values, problems);
  const webauthn = parseWebauthnSettings(values, problems);
  if (problems.length > 0 || database === undefined) throw new ConfigError(problems);

  const hashConcurrency = values.HASH_CONCURRENCY ?? availableParallelism();
  return deepFreeze({
    host: values.HOST,
    port: values.PORT,
    database,
    jwt: {
      algorithm: values.JWT_ALGORITHM,
      secret: values.JWT_ALGORITHM === 'HS256' ? secret : undefined,
      issuer: values.JWT_ISSUER,
      audience: values.JWT_AUDIENCE,
      accessTokenTtlSeconds: values.ACCESS_TOKEN_TTL_SECONDS,
    },
    sessions: {
      idleTtlSeconds: values.REFRESH_TOKEN_IDLE_TTL_SECONDS,
      maxLifetimeSeconds: values.SESSION_MAX_LIFETIME_SECONDS,
      reuseGraceSeconds: values.REFRESH_TOKEN_REUSE_GRACE_SECONDS,
    },
    passwords: {
      minLength: values.PASSWORD_MIN_LENGTH,
      maxLength: MAX_PASSWORD_LENGTH,
      argon2: {
        memoryKib: values.ARGON2_MEMORY_KIB,
        timeCost: values.ARGON2_TIME_COST,
        parallelism: values.ARGON2_PARALLELISM,
      },
      breachCheck: hibpApiUrl
        ? {
            apiUrl: hibpApiUrl,
            timeoutMs: values.HIBP_TIMEOUT_MS,
            failure: values.BREACHED_PASSWORD_CHECK_FAILURE,
          }
        : undefined,
    },
    secrets,
    bodyLimitBytes: values.BODY_LIMIT_BYTES,
    logLevel: values.LOG_LEVEL,
    docsEnabled: isTrue(values.DOCS_ENABLED),
    clientIp,
    workers: values.WORKERS === 'auto' ? availableParallelism() : Number(values.WORKERS),
    hashThreadPriority: values.HASH_THREAD_PRIORITY,
    metrics: { token: values.METRICS_TOKEN, port: values.METRICS_PORT, host: values.METRICS_HOST },
    auditRetentionDays: values.AUDIT_RETENTION_DAYS,
    corsOrigins,
    hashing: {
      concurrency: hashConcurrency,
      queueMax: values.HASH_QUEUE_MAX ?? 16 * hashConcurrency,
      queueTimeoutMs: values.HASH_QUEUE_TIMEOUT_MS,
    },
    shutdownDrainMs: values.SHUTDOWN_DRAIN_MS,
    maxConnections: values.MAX_CONNECTIONS ?? defaultMaxConnections(host.openFileLimit),
    refusalPacing: {
      undelayedPerSecond: values.UNDELAYED_REFUSALS_PER_SECOND,
      delayMs: values.REFUSAL_DELAY_MS,
      maxHeld: 10_000,
    },
    maxHeapUsedBytes:
      values.MAX_HEAP_USED_MB === 'off'
        ? undefined
        : values.MAX_HEAP_USED_MB === 'auto'
          ? 'auto'
          : Number(values.MAX_HEAP_USED_MB) * 1024 * 1024,
    redis: redisUrl === undefined ? undefined : { url: redisUrl, keyPrefix: values.REDIS_KEY_PREFIX },
    throttling: {
      enabled: values.RATE_LIMITS === 'on',
      ipv6SubnetBits: values.IPV6_SUBNET,
      freeFailures: values.LOGIN_FREE_FAILS,
      backoffBaseSeconds: values.LOGIN_BACKOFF_BASE_S,
      backoffMaxSeconds: values.LOGIN_BACKOFF_MAX_S,
      failureTtlSeconds: values.LOGIN_FAIL_TTL_S,
      accountUntrustedFailures: values.ACCOUNT_UNTRUSTED_FAILS,
      accountBackoffBaseSeconds: values.ACCOUNT_BACKOFF_BASE_S,
      accountHardCap: values.ACCOUNT_HARD_CAP,
      ipFailuresPerMinute: values.IP_FAILS_PER_MIN,
      ipFailuresPerDay: values.IP_FAILS_PER_DAY,
      passwordGrantPerIp,
      registrationPerIp,
      registrationConflictsPerIdentifier,
      refreshPerFamily,
      refreshPerIp,
      messagesPerMinute: values.MESSAGE_RATE_PER_MINUTE,
      mailPerAddress,
      mailRequestPerIp,
      emailTokenPerIp,
      emailChangePerUser,
      passkeyOptionsPerIp,
      deviceTokenTtlDays: values.DEVICE_TOKEN_TTL_DAYS,
      knownIpsPerUser: values.KNOWN_IPS_PER_USER,
    },
    requireVerifiedEmail: isTrue(values.REQUIRE_VERIFIED_EMAIL),
    mail,
    webauthn,
  });
}

// One address, bare or after a display name: a comma or a line break would add recipients or headers.
// One mailbox: a name (quoted, or without the specials that make a group, a second address or a comment) and an
// address in angle brackets, or the address alone; no control character nor line separator anywhere (found from
// outside: a name with a colon went out as a group, its envelope sender another address).
const MAIL_FROM_ADDRESS = String.raw`[^\s<>@,":;()\[\]\\\p{Cc}\u2028\u2029]+@[^\s<>@,":;()\[\]\\\p{Cc}\u2028\u2029]+`;
const MAIL_FROM = new RegExp(
  String.raw`^(?:(?:"[^"\\\p{Cc}\u2028\u2029]*"|[^"<>,:;@()\[\]\\\p{Cc}\u2028\u2029]*)\s*<${MAIL_FROM_ADDRESS}>|${MAIL_FROM_ADDRESS})$`,
  'u',
);

function parseMailSettings(values: Env, problems: string[]): MailConfig {
  const smtpUrl = parseSmtpUrl(values.SMTP_URL, problems);
  if (!MAIL_FROM.test(values.MAIL_FROM)) {
    problems.push(
      `MAIL_FROM=${shown(values.MAIL_FROM, 100)} must be one address, bare or with a name: Gatehouse <no-reply@example.com>`,
    );
  }
  let publicUrl = `http://localhost:${values.PORT}`;
  if (values.PUBLIC_URL !== undefined) {
    const url = URL.parse(values.PUBLIC_URL);
    if (
      url === null ||
      (url.protocol !== 'https:' && url.protocol !== 'http:') ||
      url.search ||
      url.hash ||
      values.PUBLIC_URL.includes('?') ||
      values.PUBLIC_URL.includes('#') ||
      url.username ||
      url.password
    ) {
      problems.push(
        `PUBLIC_URL=${shown(values.PUBLIC_URL)} must be an absolute http(s) URL without query, fragment or credentials, as https://id.example.com`,
      );
    } else {
      publicUrl = `${url.origin}${url.pathname}`.replace(/\/+$/, '');
    }
  } else if (values.SMTP_URL !== undefined) {
    // A link built from the request's Host header would let anyone who asks for a reset mail point its link at their
    // own site (OWASP Forgot Password cheat sheet).
    problems.push(
      'PUBLIC_URL is required when SMTP_URL is set: the address users reach Gatehouse at (https://id.example.com), from which links in mails are built',
    );
  }
  return { smtpUrl, from: values.MAIL_FROM, publicUrl };
}

// WebAuthn L3's "valid domain": labels of letters, digits and hyphens; an IP address is never an RP ID.
const DOMAIN_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function isRpId(value: string): boolean {
  if (value.length > 253 || /^[0-9.]+$/.test(value) || value.includes(':')) return false;
  return value.split('.').every((label) => DOMAIN_LABEL.test(label));
}

const isLocalhost = (host: string) => host === 'localhost' || host.endsWith('.localhost');

/** Why an origin cannot serve ceremonies of this RP ID, or undefined when it can. */
function originProblem(origin: string, rpId: string | undefined): string | undefined {
  const url = URL.parse(origin);
  if (
    url === null ||
    (url.protocol !== 'https:' && url.protocol !== 'http:') ||
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    url.pathname !== '/' ||
    url.origin !== origin
  ) {
    return 'must be an origin as browsers send it: scheme, lower-case host and a port only when not the default, as https://id.example.com';
  }
  const host = url.hostname;
  if (url.protocol === 'http:' && !isLocalhost(host))
    return 'must use https: WebAuthn allows http only for localhost';
  if (rpId !== undefined && host !== rpId && !host.endsWith(`.${rpId}`)) {
    return `is not within WEBAUTHN_RP_ID ${JSON.stringify(rpId)}: its host must be the RP ID or a subdomain of it`;
  }
  return undefined;
}

/**
 * The relying party. What is set is checked here, so that a mistake stops the start rather than every ceremony:
 * browsers refuse an IP as RP ID, and an origin outside the RP ID's domain never yields a credential the server takes.
 * What is not set follows PUBLIC_URL (its host, its origin) when those pass the same rules, else localhost and
 * http://localhost:PORT: a PUBLIC_URL on plain http or an IP, which served before passkeys existed, still starts.
 */
function parseWebauthnSettings(values: Env, problems: string[]): WebauthnConfig {
  const publicUrl = values.PUBLIC_URL === undefined ? null : URL.parse(values.PUBLIC_URL);
  const localDefaults = { rpId: 'localhost', origins: [`http://localhost:${values.PORT}`] };
  if (values.WEBAUTHN_RP_ID === undefined && values.WEBAUTHN_ORIGINS === undefined) {
    const host = publicUrl?.hostname;
    const derived =
      publicUrl && host && isRpId(host) && originProblem(publicUrl.origin, host) === undefined
        ? { rpId: host, origins: [publicUrl.origin] }
        : localDefaults;
    return { ...derived, rpName: values.WEBAUTHN_RP_NAME };
  }
  let rpId: string | undefined;
  if (values.WEBAUTHN_RP_ID !== undefined) {
    rpId = values.WEBAUTHN_RP_ID;
    if (!isRpId(rpId)) {
      problems.push(
        `WEBAUTHN_RP_ID=${shown(rpId, 200)} must be a lower-case domain name without scheme, port or path, as example.com or localhost; an IP address is never a valid RP ID (use http://localhost rather than 127.0.0.1 locally)`,
      );
      rpId = undefined;
    }
  } else {
    const host = publicUrl?.hostname;
    rpId = host && isRpId(host) ? host : 'localhost';
  }
  const listed =
    values.WEBAUTHN_ORIGINS === undefined
      ? [
          publicUrl && rpId && originProblem(publicUrl.origin, rpId) === undefined
            ? publicUrl.origin
            : undefined,
        ]
          .filter((origin) => origin !== undefined)
          .concat(rpId === 'localhost' ? localDefaults.origins : [])
      : values.WEBAUTHN_ORIGINS.split(',')
          .map((part) => part.trim())
          .filter((part) => part !== '');
  const origins = [...new Set(listed)];
  if (origins.length === 0) {
    problems.push(
      'WEBAUTHN_ORIGINS must be set: list the origins whose pages register and use passkeys, as https://id.example.com',
    );
  }
  for (const origin of origins) {
    const problem = originProblem(origin, rpId);
    if (problem) problems.push(`WEBAUTHN_ORIGINS entry ${shown(origin)} ${problem}`);
  }
  return { rpId: rpId ?? 'localhost', rpName: values.WEBAUTHN_RP_NAME, origins };
}

function parseSmtpUrl(url: string | undefined, problems: string[]): string | undefined {
  if (url === undefined) return undefined;
  const parsed = URL.parse(url);
  if (parsed !== null && (parsed.protocol === 'smtp:' || parsed.protocol === 'smtps:') && parsed.hostname)
    return url;
  // Without the URL: it may carry a password.
  problems.push(
    'SMTP_URL must be an smtp:// or smtps:// URL with a host (smtp://user:password@smtp.example.com:587; smtps:// for TLS from the start)',
  );
  return undefined;
}

// RFC 6750 §2.1's b64token: what an Authorization: Bearer credential may hold.
const BEARER_TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

// Checked here rather than in the schema, whose messages would quote the value.
function checkMetricsToken(token: string | undefined, problems: string[]): void {
  if (token === undefined) return;
  const make = 'make one with `npm run gatehouse -- secret generate`';
  if (!BEARER_TOKEN.test(token)) {
    problems.push(`METRICS_TOKEN must be a Bearer token (letters, digits and -._~+/ only): ${make}`);
  } else if (token.length < 32 || new Set(token).size < 16) {
    problems.push(`METRICS_TOKEN must be at least 32 random characters: ${make}`);
  }
}

type RateSetting =
  | 'TOKEN_PASSWORD_PER_IP'
  | 'REGISTER_PER_IP'
  | 'REGISTER_CONFLICTS_PER_IDENTIFIER'
  | 'REFRESH_PER_FAMILY'
  | 'REFRESH_PER_IP'
  | 'MAIL_PER_ADDRESS'
  | 'MAIL_REQUEST_PER_IP'
  | 'EMAIL_TOKEN_PER_IP'
  | 'EMAIL_CHANGE_PER_USER'
  | 'PASSKEY_OPTIONS_PER_IP';

const RATE_WINDOW = /^([1-9][0-9]{0,6})\/([1-9][0-9]{0,7})s$/;

/** Parses `150/300s` or a comma list such as `3/10s,20/3600s` (every window must hold). */
function parseRateWindows(name: RateSetting, value: string, problems: string[]): RateWindow[] {
  const windows: RateWindow[] = [];
  for (const part of value.split(',')) {
    const match = RATE_WINDOW.exec(part.trim());
    if (!match) {
      problems.push(
        `${name}=${JSON.stringify(value)} must be a count per window in seconds, or a comma list of them (150/300s,30/60s)`,
      );
      return [];
    }
    windows.push({ limit: Number(match[1]), windowSeconds: Number(match[2]) });
  }
  return windows;
}

function parseRedisUrl(url: string | undefined, problems: string[]): string | undefined {
  if (url === undefined) return undefined;
  try {
    const parsed = new URL(url);
    // The path (or a `db` parameter) is the database's index, which ioredis sends as it is: `/abc` failed after the
    // start, and `/-1` too.
    const db = parsed.searchParams.get('db');
    if (!/^(?:\/\d{0,9})?$/.test(parsed.pathname) || (db !== null && !/^\d{1,9}$/.test(db))) {
      problems.push('REDIS_URL may end with a database index only (redis://127.0.0.1:6379/2)');
      return undefined;
    }
    if ((parsed.protocol === 'redis:' || parsed.protocol === 'rediss:') && parsed.hostname) return url;
  } catch {
    // reported below, without the URL: it may carry a password
  }
  problems.push('REDIS_URL must be a redis:// or rediss:// URL with a host (redis://127.0.0.1:6379)');
  return undefined;
}

/** Splits GATEHOUSE_SECRET (current first, then older ones that still decrypt); never echoes a value. */
export function parseSecretList(value: string | undefined, problems: string[]): string[] {
  if (value === undefined) return [];
  const secrets = value.split(',').map((part) => part.trim());
  for (const [index, secret] of secrets.entries()) {
    const which = secrets.length > 1 ? `GATEHOUSE_SECRET entry ${index + 1}` : 'GATEHOUSE_SECRET';
    const bytes = BASE64URL.test(secret) ? Buffer.from(secret, 'base64url') : undefined;
    if (!bytes) {
      problems.push(`${which} must be base64url (letters, digits, - and _ only). ${MAKE_SECRET}`);
    } else if (bytes.length < MIN_SECRET_BYTES) {
      problems.push(`${which} must decode to at least ${MIN_SECRET_BYTES} random bytes. ${MAKE_SECRET}`);
    } else if (new Set(bytes).size < 16) {
      // 32 random bytes have about 30 distinct values; fewer than 16 means a pattern, not randomness.
      problems.push(`${which} is not random (too few distinct bytes). ${MAKE_SECRET}`);
    }
  }
  if (new Set(secrets).size !== secrets.length) problems.push('GATEHOUSE_SECRET lists the same secret twice');
  return secrets;
}

// RFC 9110 §5.1: a field name is a token.
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function parseClientIpRules(
  trustProxy: string | undefined,
  header: string | undefined,
  problems: string[],
): ClientIpRules {
  const known = problems.length;
  const trustedProxies = parseTrustedProxies(trustProxy, problems);
  const trustProxyRefused = problems.length > known;
  if (header === undefined) return { trustedProxies, clientIpHeader: undefined };
  const name = header.toLowerCase();
  if (!HEADER_NAME.test(header)) {
    problems.push(`CLIENT_IP_HEADER=${shown(header, 60)} is not a header name`);
  } else if (name === 'x-forwarded-for') {
    problems.push(
      'CLIENT_IP_HEADER=X-Forwarded-For is read through TRUST_PROXY already: leave CLIENT_IP_HEADER unset',
    );
  } else if (trustedProxies.length === 0 && !trustProxyRefused) {
    problems.push(
      `CLIENT_IP_HEADER is honoured only from the proxies TRUST_PROXY lists, and TRUST_PROXY is unset: set it to ` +
        `the addresses of the proxies that write ${name} (TRUST_PROXY=loopback for one on this machine)`,
    );
  }
  return { trustedProxies, clientIpHeader: name };
}

// RFC 1123 labels (with the underscore that container and service names use), an optional final dot.
const HOST_NAME =
  /^(?=.{1,253}\.?$)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$/;

/** A listen address no resolver could take would fail only at listen, after the start had prepared the database. */
function checkListenHost(name: string, host: string, problems: string[]): void {
  if (isIP(host) !== 0 || HOST_NAME.test(host)) return;
  problems.push(
    `${name}=${shown(host, 200)} must be an IP address or a host name (0.0.0.0, ::, 127.0.0.1, localhost), without scheme or port`,
  );
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Browsers compare the Origin header with the allowed list byte for byte, so an entry must be written as they send
 * it: scheme, lower-case host, and a port only when it is not the scheme's default.
 */
function parseCorsOrigins(value: string | undefined, problems: string[]): string[] {
  if (value === undefined) return [];
  const origins = [...new Set(value.split(',').map((part) => part.trim()))].filter((part) => part !== '');
  for (const origin of origins) {
    const entry = `CORS_ORIGINS entry ${shown(origin)}`;
    if (origin === '*') {
      // With every origin allowed, any web page could make its visitors' browsers try passwords at /token and read
      // the answers: a guessing campaign spread over as many addresses as the page has visitors.
      problems.push(
        "CORS_ORIGINS must not be *: any web page could then use its visitors' browsers against /token and read the answers; list the origins of your own front ends",
      );
      continue;
    }
    const url = URL.parse(origin);
    const isOrigin =
      url !== null &&
      (url.protocol === 'https:' || url.protocol === 'http:') &&
      !url.username &&
      !url.password &&
      !url.search &&
      !url.hash &&
      url.pathname === '/' &&
      !url.hostname.includes('*');
    if (!isOrigin) {
      problems.push(
        `${entry} is not an origin: a scheme, a host and an optional port, as https://app.example.com`,
      );
    } else if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) {
      problems.push(
        `${entry} must use https: a page served over plain HTTP can be rewritten on the way (http is accepted for localhost, 127.0.0.1 and [::1])`,
      );
    } else if (url.origin !== origin) {
      problems.push(
        `${entry} would never match, as browsers send it as ${url.origin}: write it as ${url.origin}`,
      );
    }
  }
  return origins;
}

function parseHibpApiUrl(value: string, problems: string[]): string {
  const url = URL.parse(value);
  if (
    url === null ||
    (url.protocol !== 'https:' && url.protocol !== 'http:') ||
    url.search ||
    url.hash ||
    url.username ||
    url.password
  ) {
    problems.push(
      `HIBP_API_URL=${shown(value)} must be an http(s) URL without query or credentials, as https://api.pwnedpasswords.com`,
    );
  }
  return value.replace(/\/+$/, '');
}

/**
 * A value as a message quotes it: JSON-quoted, cut to `max`, with a URL's user and password hidden, whether the URL
 * parses (`https:/user:pw@host` does) or not (from the scheme to the last @ before a space).
 */
function shown(value: string, max = 200): string {
  const url = URL.parse(value);
  let text = value;
  if (url && (url.username || url.password)) {
    url.username = '';
    url.password = '';
    text = url.href;
  } else if (!url) {
    text = value.replace(/^([a-z][a-z0-9+.-]*:)\S*@/i, '$1…@');
  }
  return JSON.stringify(text.slice(0, max));
}

function describeProblem(name: string, message: string): string {
  const schema = (EnvSchema.properties as unknown as Record<string, { anyOf?: { const: string }[] }>)[name];
  if (schema?.anyOf) return `must be one of ${schema.anyOf.map((option) => option.const).join(', ')}`;
  if (name === 'WORKERS') return 'must be a number of processes from 1 to 99, or auto';
  return message;
}

function isTrue(value: string): boolean {
  return value === 'true' || value === '1';
}

function parseDatabaseUrl(url: string, problems: string[]): DatabaseConfig | undefined {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    try {
      const parsed = new URL(url);
      if (!parsed.hostname && !parsed.searchParams.get('host')) throw new Error('no host');
      return { kind: 'postgres', url };
    } catch {
      problems.push(
        'DATABASE_URL is not a parsable PostgreSQL URL (postgres://user:password@host:port/database)',
      );
      return undefined;
    }
  }
  const sqlitePath = url.match(/^sqlite:(?:\/\/)?(.+)$/)?.[1];
  if (sqlitePath) return { kind: 'sqlite', path: sqlitePath };
  problems.push('DATABASE_URL must start with sqlite: (sqlite:./data/gatehouse.db) or postgres://');
  return undefined;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Returns the config with the secrets main.ts resolved (from `secret.key` when GATEHOUSE_SECRET is unset). */
export function withSecrets(config: Config, secrets: readonly string[]): Config {
  return deepFreeze({ ...config, secrets: [...secrets] });
}

// Descriptors kept for everything but client connections: the database's files or pool, Redis, logs, the workers'
// channels, /proc reads of the memory guard.
const RESERVED_DESCRIPTORS = 256;
const DEFAULT_MAX_CONNECTIONS = 10_000;

/**
 * MAX_CONNECTIONS when unset: 10,000, or fewer when the process may open fewer files, so that connections alone can
 * never take the descriptors the rest needs (at EMFILE the memory guard's sample throws and the server stops).
 */
function defaultMaxConnections(openFileLimit: number | undefined): number {
  if (openFileLimit === undefined || !Number.isSafeInteger(openFileLimit)) return DEFAULT_MAX_CONNECTIONS;
  return Math.max(64, Math.min(DEFAULT_MAX_CONNECTIONS, openFileLimit - RESERVED_DESCRIPTORS));
}
