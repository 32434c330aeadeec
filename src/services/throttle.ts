import { createHash, createHmac, type KeyObject } from 'node:crypto';
import type { Counter, CounterReading, CounterStore } from '../db/counters.ts';
import { canonicalEmail } from '../domain/email.ts';
import { AppError } from '../errors.ts';
import { clientIpKey } from '../security/client-ip.ts';
import { deriveMailAddressKey } from '../security/secret-box.ts';
import { loginIdentifier } from './accounts.ts';
import type { RequestContext } from './request-context.ts';

/**
 * THROTTLING.md §2: R1–R4 count failed logins, R5–R7 cap requests per client address, R7 also per session; R8 caps
 * the messages a user posts. R9 caps the mails asked for one address, R10 the mail requests and R11 the token
 * submissions of one client address, R12 the email changes of one user. R13 locks a user's second factor; R14 caps the
 * passwordless passkey options (each stores a challenge) one client address asks for. R15 caps the sign-ups and email
 * changes that met one taken username or email, whatever their client address.
 */
export type ThrottleRule =
  | 'R1'
  | 'R2'
  | 'R3'
  | 'R4'
  | 'R5'
  | 'R6'
  | 'R7'
  | 'R8'
  | 'R9'
  | 'R10'
  | 'R11'
  | 'R12'
  | 'R13'
  | 'R14'
  | 'R15';

export interface Refusal {
  rule: ThrottleRule;
  retryAfterSeconds: number;
}

export interface RateWindow {
  limit: number;
  windowSeconds: number;
}

export interface ThrottlePolicy {
  ipv6SubnetBits: number;
  freeFailures: number;
  backoffBaseSeconds: number;
  backoffMaxSeconds: number;
  failureTtlSeconds: number;
  accountUntrustedFailures: number;
  accountBackoffBaseSeconds: number;
  accountHardCap: number;
  ipFailuresPerMinute: number;
  ipFailuresPerDay: number;
  passwordGrantPerIp: readonly RateWindow[];
  registrationPerIp: readonly RateWindow[];
  refreshPerFamily: readonly RateWindow[];
  refreshPerIp: readonly RateWindow[];
  messagesPerMinute: number;
  mailPerAddress: readonly RateWindow[];
  mailRequestPerIp: readonly RateWindow[];
  emailTokenPerIp: readonly RateWindow[];
  emailChangePerUser: readonly RateWindow[];
  /** R14; PASSKEY_OPTIONS_PER_IP's default when omitted. */
  passkeyOptionsPerIp?: readonly RateWindow[];
  /** R15; REGISTER_CONFLICTS_PER_IDENTIFIER's default when omitted. */
  registrationConflictsPerIdentifier?: readonly RateWindow[];
}

const PASSKEY_OPTIONS_PER_IP: readonly RateWindow[] = [
  { limit: 30, windowSeconds: 60 },
  { limit: 300, windowSeconds: 3600 },
];
const REGISTER_CONFLICTS_PER_IDENTIFIER: readonly RateWindow[] = [{ limit: 30, windowSeconds: 3600 }];

/** One password login as throttling sees it, before its password is checked. */
export interface LoginAttempt {
  /** The submitted username as loginIdentifier reads it, whether or not such an account exists. */
  username: string;
  /** The client's address key (clientKey). */
  ip: string;
  /** The device id of a valid device token for this account; the client is then counted by it, not its address. */
  deviceId: string | undefined;
  /** A device token or an address this account logged in from: the per-account rules R2 and R3 never refuse it. */
  trusted: boolean;
}

export interface Throttle {
  /** Returns the key a request's address is counted by (IPv6 masked to the configured prefix). */
  clientKey(address: string | undefined): string;
  /** R5: returns why the password grant must wait, counting the request either way. */
  admitPasswordGrant(ip: string): Promise<Refusal | undefined>;
  /**
   * R1–R4: reserves the attempt as a failure before its password is checked, so that concurrent attempts each take a
   * place; returns a refusal (nothing may be verified) when a rule is past its limit.
   */
  reserveLoginAttempt(attempt: LoginAttempt): Promise<Refusal | undefined>;
  /** After a correct password: forgets the account's failures (R1 for this client, R2, R3) and gives R4 its place back. */
  recordLoginSuccess(attempt: LoginAttempt): Promise<void>;
  /** Gives back the places an admitted attempt reserved, when it was never verified (its hash was shed). */
  releaseLoginAttempt(attempt: LoginAttempt): Promise<void>;
  /** After a password change: forgets the failures counted against the account (R2, R3). */
  forgetAccountFailures(username: string): Promise<void>;
  /** After a password reset: forgets the failures of the account (R2, R3) and of the client at this address (R1). */
  forgetFailuresAfterReset(username: string, ip: string): Promise<void>;
  /** R6: throws temporarily_unavailable when this address registers too often. */
  admitRegistration(context: RequestContext): Promise<void>;
  /** R7: throws temporarily_unavailable when this address refreshes too often. */
  admitRefresh(context: RequestContext): Promise<void>;
  /**
   * R7: returns why this session (one refresh-token family) rotates too often, counting the rotation either way;
   * nothing is logged until the caller answers with `refuse` (the refusal rolls a rotation back).
   */
  admitRefreshOfSession(sessionId: string): Promise<Refusal | undefined>;
  /** Logs a refusal that stands and returns the temporarily_unavailable error that answers it. */
  refuse(refusal: Refusal, context: RequestContext, userId?: number): AppError;
  /** R8: throws temporarily_unavailable when this user posts messages too often, from whichever session. */
  admitMessage(userId: number, context: RequestContext): Promise<void>;
  /**
   * R9: throws temporarily_unavailable when a mail was asked for this address too often. Keyed by the address alone,
   * whether or not an account has it: a refusal reserved for real accounts would tell which addresses are.
   */
  admitMailTo(address: string, context: RequestContext): Promise<void>;
  /**
   * R10: throws temporarily_unavailable when this client address asks for password, verification or email-change
   * mails too often.
   */
  admitMailRequest(context: RequestContext): Promise<void>;
  /** R11: throws temporarily_unavailable when this client address submits mailed tokens too often. */
  admitTokenSubmission(context: RequestContext): Promise<void>;
  /** R12: throws temporarily_unavailable when this user asks for email changes too often, from whichever address. */
  admitEmailChange(userId: number, context: RequestContext): Promise<void>;
  /**
   * R13: reserves a second-factor attempt of the user as a failure before its proof is checked; anything but
   * `admitted` means nothing may be checked: the user is `locked` out (10 failures lock for 15 minutes), or the proof
   * is `capped` and the user's consecutive failures passed the cap (100 in 30 days).
   */
  reserveSecondFactorAttempt(userId: number, proof: SecondFactorProofKind): Promise<SecondFactorAdmission>;
  /** The proof was right: the user's second-factor failures (lock and cap) are forgotten. */
  recordSecondFactorSuccess(userId: number): Promise<void>;
  /** An operator's unlock or reset of the second factors: the user's second-factor failures are forgotten. */
  forgetSecondFactorFailures(userId: number): Promise<void>;
  /** R14: throws temporarily_unavailable when this client address asks for passkey assertion options too often. */
  admitPasskeyOptions(context: RequestContext): Promise<void>;
  /**
   * Counts a sign-up or an email change refused because an identifier it names has an account (R15, per identifier,
   * from any address): `key` is the identifier as the accounts compare it. Throws temporarily_unavailable past it.
   */
  admitIdentifierConflict(
    identifier: 'username' | 'email',
    key: string,
    context: RequestContext,
  ): Promise<void>;
}

const LOCKS_LIMIT = 1_000_000_000;
const SECOND_FACTOR_FAILURES = 10;
const SECOND_FACTOR_LOCK_SECONDS = 900;
const SECOND_FACTOR_CAP = 100;
const HARD_CAP_WINDOW_SECONDS = 30 * 86400;
const IP_MINUTE_BLOCK_SECONDS = 600;
const IP_DAY_BLOCK_SECONDS = 86400;

/**
 * What R13's cap asks of a second-factor proof: a `capped` one (a 6-digit code of an active app) can be guessed, and is
 * refused past the cap; an `uncapped` one cannot (an 80-bit recovery code, a passkey's assertion) or gains a guesser
 * nothing (the code that confirms a new app, whose secret was just shown to the signed-in user), and is still checked.
 */
export type SecondFactorProofKind = 'capped' | 'uncapped';

export type SecondFactorAdmission = 'admitted' | 'locked' | 'capped';

/** A counter that reserved a login attempt, and how it locks when that attempt goes past its limit. */
interface Reserved {
  rule: ThrottleRule;
  counter: Counter;
  key: string;
  limit: number;
  lock?: { locks: Counter; baseSeconds: number };
}

const secondsOf = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

// Keys carry a digest of the username: what someone typed into the field (a password, at times) stays out of Redis.
const digest = (text: string) => createHash('sha256').update(text).digest('base64url').slice(0, 24);

/** The keys throttling derives from GATEHOUSE_SECRET. */
export interface ThrottleKeys {
  /** Names an email address in the counters (deriveMailAddressKey). */
  mailAddressKey: KeyObject;
}

/** Returns the throttling keys of the current GATEHOUSE_SECRET (the first of a rotation's list). */
export function throttleKeysOf(secrets: readonly string[]): ThrottleKeys {
  const [current] = secrets;
  if (current === undefined) throw new Error('throttling needs GATEHOUSE_SECRET');
  return { mailAddressKey: deriveMailAddressKey(current) };
}

/** Builds the throttling rules over the given counters. */
export function createThrottle(counters: CounterStore, policy: ThrottlePolicy, keys: ThrottleKeys): Throttle {
  const { backoffMaxSeconds } = policy;
  const addressKey = (canonical: string) =>
    createHmac('sha256', keys.mailAddressKey).update(canonical).digest('base64url').slice(0, 24);
  /** A failure count that locks as it goes past `limit` (see waitOf), with the count of its locks beside it. */
  const locking = (name: string, limit: number, baseSeconds: number) => ({
    limit,
    counter: counters.counter({
      name,
      limit,
      windowSeconds: policy.failureTtlSeconds,
      blockSeconds: Math.min(baseSeconds, backoffMaxSeconds),
    }),
    lock: {
      baseSeconds,
      locks: counters.counter({
        name: `${name}-locks`,
        limit: LOCKS_LIMIT,
        windowSeconds: policy.failureTtlSeconds,
      }),
    },
  });
  const perClient = locking('r1', policy.freeFailures, policy.backoffBaseSeconds);
  const untrusted = locking('r2', policy.accountUntrustedFailures, policy.accountBackoffBaseSeconds);
  const hardCap = counters.counter({
    name: 'r3',
    limit: policy.accountHardCap,
    windowSeconds: HARD_CAP_WINDOW_SECONDS,
  });
  const ipPerMinute = counters.counter({
    name: 'r4-minute',
    limit: policy.ipFailuresPerMinute,
    windowSeconds: 60,
    blockSeconds: IP_MINUTE_BLOCK_SECONDS,
  });
  const ipPerDay = counters.counter({
    name: 'r4-day',
    limit: policy.ipFailuresPerDay,
    windowSeconds: 86400,
    blockSeconds: IP_DAY_BLOCK_SECONDS,
  });
  const windows = (name: string, rates: readonly RateWindow[]) =>
    rates.map((rate, index) => ({
      limit: rate.limit,
      counter: counters.counter({ name: `${name}-${index}`, ...rate }),
    }));
  const passwordGrants = windows('r5', policy.passwordGrantPerIp);
  const registrations = windows('r6', policy.registrationPerIp);
  const refreshesPerIp = windows('r7-ip', policy.refreshPerIp);
  const refreshesPerSession = windows('r7-session', policy.refreshPerFamily);
  const messagesPerUser = windows('r8', [{ limit: policy.messagesPerMinute, windowSeconds: 60 }]);
  const mailsPerAddress = windows('r9', policy.mailPerAddress);
  const mailRequestsPerIp = windows('r10', policy.mailRequestPerIp);
  const tokenSubmissionsPerIp = windows('r11', policy.emailTokenPerIp);
  const emailChangesPerUser = windows('r12', policy.emailChangePerUser);
  const passkeyOptionsPerIp = windows('r14', policy.passkeyOptionsPerIp ?? PASSKEY_OPTIONS_PER_IP);
  const identifierConflicts = windows(
    'r15',
    policy.registrationConflictsPerIdentifier ?? REGISTER_CONFLICTS_PER_IDENTIFIER,
  );
  // AUTH-FLOWS §7.3: 10 consecutive failures lock the user's second factor for 15 minutes (NIST allows up to 100).
  const secondFactorFailures = counters.counter({
    name: 'r13',
    limit: SECOND_FACTOR_FAILURES,
    windowSeconds: SECOND_FACTOR_LOCK_SECONDS,
    blockSeconds: SECOND_FACTOR_LOCK_SECONDS,
  });
  // NIST SP 800-63B §3.2.2: at most 100 consecutive failures. The lock alone let 960 codes a day be tried by someone
  // who has the password; the cap counts only the attempts the lock let through, so from a month's first failure.
  const secondFactorCap = counters.counter({
    name: 'r13-cap',
    limit: SECOND_FACTOR_CAP,
    windowSeconds: HARD_CAP_WINDOW_SECONDS,
  });
  const forgetSecondFactor = async (userId: number) => {
    const key = String(userId);
    await Promise.all([secondFactorFailures.reset(key), secondFactorCap.reset(key)]);
  };

  /** Every window counts the request; the longest wait of those past their limit is the answer. */
  const admit = async (rule: ThrottleRule, limited: ReturnType<typeof windows>, key: string) => {
    const readings = await Promise.all(limited.map(({ counter }) => counter.hit(key)));
    const waits = readings
      .filter((reading, index) => reading.count > (limited[index]?.limit ?? 0))
      .map((reading) => secondsOf(reading.msBeforeReset));
    return waits.length > 0 ? { rule, retryAfterSeconds: Math.max(...waits) } : undefined;
  };

  // With the account when the rule counts one (R7 per session, R8, R12): the user's activity and the admin's view of
  // the account show it.
  const refuse = (refusal: Refusal, context: RequestContext, userId?: number) => {
    context.audit('request_throttled', {
      rule: refusal.rule,
      retryAfterSeconds: refusal.retryAfterSeconds,
      ...(userId === undefined ? {} : { userId }),
    });
    return new AppError('temporarily_unavailable', `${refusal.rule}: too many requests`, {
      retryAfterSeconds: refusal.retryAfterSeconds,
    });
  };

  const refuseRequest = async (
    rule: ThrottleRule,
    limited: ReturnType<typeof windows>,
    key: string,
    context: RequestContext,
    userId?: number,
  ) => {
    const refusal = await admit(rule, limited, key);
    if (refusal) throw refuse(refusal, context, userId);
  };

  /** How long an attempt must wait, or undefined when the counter admits it (see startLock for the locking ones). */
  const waitOf = (entry: Reserved, reading: CounterReading): number | undefined => {
    if (reading.count <= entry.limit) return undefined;
    const seconds = secondsOf(reading.msBeforeReset);
    return entry.lock ? Math.min(seconds, backoffMaxSeconds) : seconds;
  };

  /**
   * Locks a key from the admitted attempt that fills its free failures, for base·2^(n−1) seconds (n = its locks within
   * the failure window, at most LOGIN_BACKOFF_MAX_S); when the lock ends, the key starts afresh. That attempt is still
   * verified: a success forgets the lock with the failures, a failure has locked the key from its own time. Locked by
   * the next attempt instead, a key stayed full for the whole failure window (24 h), and whoever came back to it, an
   * hour later and with the right password, waited a lock more. A lock is the count held past the limit, which no
   * refund lowers: an attempt given back (shed, abandoned while queued) cannot shorten it.
   */
  const startLock = async (entry: Reserved & { lock: NonNullable<Reserved['lock']> }) => {
    const n = (await entry.lock.locks.hit(entry.key)).count;
    await entry.counter.block(entry.key, Math.min(entry.lock.baseSeconds * 2 ** (n - 1), backoffMaxSeconds));
  };

  const forgetAccount = async (account: string) => {
    await Promise.all([
      untrusted.counter.reset(account),
      untrusted.lock.locks.reset(account),
      hardCap.reset(account),
    ]);
  };

  const keysOf = (attempt: LoginAttempt) => {
    const account = digest(loginIdentifier(attempt.username));
    const client = attempt.deviceId === undefined ? `ip:${attempt.ip}` : `device:${attempt.deviceId}`;
    return { account, pair: `${account}|${client}` };
  };

  return {
    clientKey: (address) => clientIpKey(address, policy.ipv6SubnetBits),

    admitPasswordGrant: (ip) => admit('R5', passwordGrants, ip),

    async reserveLoginAttempt(attempt) {
      const { account, pair } = keysOf(attempt);
      // In stages, each only for an attempt every earlier one admitted: the address's counters (R4) count only what
      // the client's (R1) let through, the account's lock (R2) only what both did, and its hard cap (R3) only what R2
      // did. Reserved all at once, the counts of a burst's attempts moved before the refused ones gave their places
      // back (a counter that refused an attempt keeps it), and in Redis or across workers 50 parallel attempts from one
      // address locked the account for everyone untrusted after five checked failures, and 400 from 40 addresses set
      // the month-long hard cap after ten. The price: a refusal reports the first refusing rule's wait, which may be
      // shorter than a later rule's.
      const stages: Reserved[][] = [
        [{ rule: 'R1', ...perClient, key: pair }],
        [
          { rule: 'R4', counter: ipPerMinute, key: attempt.ip, limit: policy.ipFailuresPerMinute },
          { rule: 'R4', counter: ipPerDay, key: attempt.ip, limit: policy.ipFailuresPerDay },
        ],
      ];
      if (!attempt.trusted) {
        stages.push(
          [{ rule: 'R2', ...untrusted, key: account }],
          [{ rule: 'R3', counter: hardCap, key: account, limit: policy.accountHardCap }],
        );
      }
      const admitted: Reserved[] = [];
      const filled: (Reserved & { lock: NonNullable<Reserved['lock']> })[] = [];
      for (const stage of stages) {
        const readings = await Promise.all(stage.map(({ counter, key }) => counter.hit(key)));
        const waits = stage.map((entry, index) => waitOf(entry, readings[index] as CounterReading));
        stage.forEach((entry, index) => {
          if (entry.lock && readings[index]?.count === entry.limit)
            filled.push({ ...entry, lock: entry.lock });
        });
        const refusals = stage.flatMap((entry, index) => {
          const retryAfterSeconds = waits[index];
          return retryAfterSeconds === undefined ? [] : [{ rule: entry.rule, retryAfterSeconds }];
        });
        admitted.push(...stage.filter((_, index) => waits[index] === undefined));
        if (refusals.length === 0) continue;
        // A refused attempt is no failure: each counter that admitted it gives its place back, so that hammering a
        // locked account neither spends the address's budget nor brings the account nearer its cap.
        await Promise.all(admitted.map((entry) => entry.counter.refund(entry.key)));
        return refusals.reduce((longest, refusal) =>
          refusal.retryAfterSeconds > longest.retryAfterSeconds ? refusal : longest,
        );
      }
      // Only an attempt every rule admitted is verified, so only it may start a lock.
      await Promise.all(filled.map(startLock));
      return undefined;
    },

    async recordLoginSuccess(attempt) {
      const { account, pair } = keysOf(attempt);
      await Promise.all([
        perClient.counter.reset(pair),
        perClient.lock.locks.reset(pair),
        forgetAccount(account),
        ipPerMinute.refund(attempt.ip),
        ipPerDay.refund(attempt.ip),
      ]);
    },

    async releaseLoginAttempt(attempt) {
      const { account, pair } = keysOf(attempt);
      const places: [Pick<Reserved, 'counter'>['counter'], string][] = [
        [perClient.counter, pair],
        [ipPerMinute, attempt.ip],
        [ipPerDay, attempt.ip],
        ...(attempt.trusted
          ? []
          : ([
              [untrusted.counter, account],
              [hardCap, account],
            ] as [Pick<Reserved, 'counter'>['counter'], string][])),
      ];
      await Promise.all(places.map(([counter, key]) => counter.refund(key)));
    },

    forgetAccountFailures: (username) => forgetAccount(digest(loginIdentifier(username))),

    async forgetFailuresAfterReset(username, ip) {
      const { account, pair } = keysOf({ username, ip, deviceId: undefined, trusted: false });
      await Promise.all([
        forgetAccount(account),
        perClient.counter.reset(pair),
        perClient.lock.locks.reset(pair),
      ]);
    },

    admitRegistration: (context) =>
      refuseRequest('R6', registrations, clientIpKey(context.ipAddress, policy.ipv6SubnetBits), context),

    admitRefresh: (context) =>
      refuseRequest('R7', refreshesPerIp, clientIpKey(context.ipAddress, policy.ipv6SubnetBits), context),

    admitRefreshOfSession: (sessionId) => admit('R7', refreshesPerSession, sessionId),

    refuse,

    admitMessage: (userId, context) => refuseRequest('R8', messagesPerUser, String(userId), context, userId),

    // Keyed, unlike a username's digest: addresses are few enough to guess, and the store must hold none.
    admitMailTo: (address, context) =>
      refuseRequest('R9', mailsPerAddress, addressKey(canonicalEmail(address)), context),

    admitMailRequest: (context) =>
      refuseRequest('R10', mailRequestsPerIp, clientIpKey(context.ipAddress, policy.ipv6SubnetBits), context),

    admitTokenSubmission: (context) =>
      refuseRequest(
        'R11',
        tokenSubmissionsPerIp,
        clientIpKey(context.ipAddress, policy.ipv6SubnetBits),
        context,
      ),

    admitEmailChange: (userId, context) =>
      refuseRequest('R12', emailChangesPerUser, String(userId), context, userId),
    async reserveSecondFactorAttempt(userId, proof) {
      const key = String(userId);
      // The cap first, and only then the lock: a burst of codes past the cap, refused unchecked, must not fill the
      // lock's count, or someone with the password could keep the owner's recovery codes locked out.
      if (proof === 'capped' && (await secondFactorCap.hit(key)).count > SECOND_FACTOR_CAP) return 'capped';
      const { count } = await secondFactorFailures.hit(key);
      if (count > SECOND_FACTOR_FAILURES) {
        // Refused during the lock, it checked nothing: no failure for the cap either.
        if (proof === 'capped') await secondFactorCap.refund(key);
        return 'locked';
      }
      if (proof === 'uncapped') await secondFactorCap.hit(key);
      // The 10th failure locks from its own time, as R1 and R2 do: the count's window opened at the first failure.
      if (count === SECOND_FACTOR_FAILURES) await secondFactorFailures.block(key, SECOND_FACTOR_LOCK_SECONDS);
      return 'admitted';
    },
    recordSecondFactorSuccess: forgetSecondFactor,
    forgetSecondFactorFailures: forgetSecondFactor,
    admitPasskeyOptions: (context) =>
      refuseRequest(
        'R14',
        passkeyOptionsPerIp,
        clientIpKey(context.ipAddress, policy.ipv6SubnetBits),
        context,
      ),
    // Keyed as R9's addresses: the store holds no username or address in clear.
    admitIdentifierConflict: (identifier, key, context) =>
      refuseRequest('R15', identifierConflicts, addressKey(`${identifier}:${key}`), context),
  };
}
