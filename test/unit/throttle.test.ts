import { createHash, createHmac } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { type CounterStore, createCounterStore } from '../../src/db/counters.ts';
import { AppError } from '../../src/errors.ts';
import { deriveMailAddressKey, generateSecret } from '../../src/security/secret-box.ts';
import type { RequestContext } from '../../src/services/request-context.ts';
import {
  createThrottle,
  type LoginAttempt,
  type Refusal,
  type Throttle,
} from '../../src/services/throttle.ts';

// rate-limiter-flexible reads Date.now(): faking Date alone moves its windows without sleeping.
const advanceSeconds = (seconds: number) => vi.setSystemTime(Date.now() + seconds * 1000);

const DEFAULTS = loadConfig({}).throttling;
const SECRET = generateSecret();
const KEYS = { mailAddressKey: deriveMailAddressKey(SECRET) };

function contextFrom(ipAddress: string, audits: { event: string; fields: Record<string, unknown> }[] = []) {
  const context: RequestContext = {
    userAgent: undefined,
    ipAddress,
    audit: (event, fields) => audits.push({ event, fields }),
  };
  return context;
}

describe('login throttling rules (in-process counters, fake clock)', () => {
  let throttle: Throttle;
  const build = (overrides: Partial<typeof DEFAULTS> = {}) => {
    throttle = createThrottle(createCounterStore(), { ...DEFAULTS, ...overrides }, KEYS);
  };
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-12-01T12:00:00Z') });
    build();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds no keys once the windows of many distinct attempts have passed, nor for attempts given back', async () => {
    const store = createCounterStore();
    throttle = createThrottle(store, DEFAULTS, KEYS);
    const distinct = (i: number) => attempt({ username: `sprayed-${i}`, ip: `198.51.${i >> 8}.${i & 255}` });
    for (let i = 0; i < 500; i += 1) {
      expect(await throttle.admitPasswordGrant(distinct(i).ip)).toBeUndefined();
      expect(await throttle.reserveLoginAttempt(distinct(i))).toBeUndefined();
    }
    expect(store.heldKeys()).toBeGreaterThan(0);
    // R3's window, the longest, is 30 days.
    advanceSeconds(30 * 86400 + 1);
    expect(store.heldKeys()).toBe(0);
    for (let i = 0; i < 500; i += 1) {
      expect(await throttle.reserveLoginAttempt(distinct(i))).toBeUndefined();
      // Shed before its hash: every place it took is given back.
      await throttle.releaseLoginAttempt(distinct(i));
    }
    expect(store.heldKeys()).toBe(0);
    await store.close();
  });

  const attempt = (overrides: Partial<LoginAttempt> = {}): LoginAttempt => ({
    username: 'alice',
    ip: '203.0.113.1',
    deviceId: undefined,
    trusted: false,
    ...overrides,
  });
  /** Reserves `count` attempts one after the other, each failing; returns the refusals. */
  const fail = async (count: number, overrides: Partial<LoginAttempt> = {}) => {
    const refusals = [];
    for (let i = 0; i < count; i += 1) refusals.push(await throttle.reserveLoginAttempt(attempt(overrides)));
    return refusals;
  };

  describe('R1: failures per username and client', () => {
    // A trusted client, and R4 out of the way: R1 alone decides here.
    beforeEach(() => build({ ipFailuresPerMinute: 100_000, ipFailuresPerDay: 100_000 }));
    const fail = async (count: number, overrides: Partial<LoginAttempt> = {}) => {
      const refusals = [];
      for (let i = 0; i < count; i += 1) {
        refusals.push(await throttle.reserveLoginAttempt(attempt({ trusted: true, ...overrides })));
      }
      return refusals;
    };
    const next = (overrides: Partial<LoginAttempt> = {}) =>
      throttle.reserveLoginAttempt(attempt({ trusted: true, ...overrides }));

    it('verifies 5 failures, then locks for 30 s, then 5 more and 60 s, doubling up to an hour', async () => {
      expect(await fail(5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 30 });
      advanceSeconds(29);
      expect(await next()).toMatchObject({ rule: 'R1' });
      advanceSeconds(1);
      expect(await fail(5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 60 });
      const locks = [];
      for (let lock = 3; lock <= 9; lock += 1) {
        advanceSeconds(3600);
        await fail(5);
        locks.push((await next())?.retryAfterSeconds);
      }
      expect(locks).toEqual([120, 240, 480, 960, 1920, 3600, 3600]);
    });

    // Found from outside: the lock started at the next attempt, whenever it came, not at the failure that filled the
    // count, so a user who mistyped 5 times and came back an hour later waited 30 s more, right password and all.
    it('locks from the failure that fills the count: a client back after the lock is verified', async () => {
      await fail(5);
      advanceSeconds(31);
      expect(await next()).toBeUndefined();
      expect(await fail(4)).toEqual([undefined, undefined, undefined, undefined]);
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 60 });
    });

    it('leaves no lock when the attempt that fills the count succeeds', async () => {
      await fail(4);
      expect(await next()).toBeUndefined();
      await throttle.recordLoginSuccess(attempt({ trusted: true }));
      expect(await fail(5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
    });

    // Found in review: the lock was set as the count held past the limit, and a refund lowered it, so a client that
    // abandoned each filling attempt (or whose earlier attempts were shed) had its lock cut to the base, or lifted.
    it('keeps the lock when the attempt that filled the count is given back (shed, or abandoned while queued)', async () => {
      await fail(5);
      advanceSeconds(30);
      await fail(4);
      expect(await next()).toBeUndefined();
      await throttle.releaseLoginAttempt(attempt({ trusted: true }));
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 60 });
    });

    it('keeps the lock when earlier attempts in flight are given back after it started', async () => {
      expect(await fail(5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
      await throttle.releaseLoginAttempt(attempt({ trusted: true }));
      await throttle.releaseLoginAttempt(attempt({ trusted: true }));
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 30 });
      advanceSeconds(30);
      expect(await fail(5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 60 });
    });

    it('starts no lock for a filling attempt that a later rule refused', async () => {
      build({ ipFailuresPerMinute: 100_000, ipFailuresPerDay: 100_000, accountUntrustedFailures: 4 });
      const untrusted = () => throttle.reserveLoginAttempt(attempt());
      for (let i = 0; i < 4; i += 1) expect(await untrusted()).toBeUndefined();
      // The 5th fills R1's count, but R2 (locked by the 4th) refuses it: R1 gives its place back and starts no lock.
      expect(await untrusted()).toMatchObject({ rule: 'R2' });
      advanceSeconds(900);
      expect(await untrusted()).toBeUndefined();
      // So R1's first lock is still its first: 30 s, not 60.
      expect(await untrusted()).toEqual({ rule: 'R1', retryAfterSeconds: 30 });
    });

    it('starts the back-off afresh a failure window (24 h) after the first lock', async () => {
      await fail(6);
      advanceSeconds(30);
      await fail(6);
      advanceSeconds(86400);
      await fail(5);
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 30 });
    });

    it('reserves before verifying: of 50 concurrent attempts exactly 5 may verify', async () => {
      const results = await Promise.all(Array.from({ length: 50 }, () => next()));
      expect(results.filter((result) => result === undefined)).toHaveLength(5);
      expect(results.filter((result) => result?.rule === 'R1')).toHaveLength(45);
    });

    it('forgets the failures and the locks of the pair after a success', async () => {
      await fail(6);
      advanceSeconds(30);
      await fail(4);
      await throttle.recordLoginSuccess(attempt());
      expect(await fail(5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
      expect(await next()).toEqual({ rule: 'R1', retryAfterSeconds: 30 });
    });

    it('locks only the failing client: another address or a device token of the same user goes on', async () => {
      await fail(6);
      expect(await next({ ip: '203.0.113.2' })).toBeUndefined();
      expect(await next({ deviceId: 'device-1' })).toBeUndefined();
    });

    it('counts a username in all its spellings as one, and an unknown one like any other', async () => {
      await fail(2, { username: 'Alice' });
      await fail(3, { username: ' ALICE ' });
      expect(await next()).toMatchObject({ rule: 'R1' });
      await fail(5, { username: 'nobody-here' });
      expect(await next({ username: 'nobody-here' })).toMatchObject({
        rule: 'R1',
        retryAfterSeconds: 30,
      });
    });
  });

  describe('R2 and R3: failures per account from untrusted clients', () => {
    /** One failure from each of `count` untrusted addresses (so that R1 and R4 never refuse). */
    const spread = async (count: number, from = 0) => {
      const refusals = [];
      for (let i = from; i < from + count; i += 1) {
        refusals.push(await throttle.reserveLoginAttempt(attempt({ ip: `198.51.100.${i % 250}` })));
      }
      return refusals;
    };

    it('locks untrusted clients out of the account after 10 failures, for 15 min, then 30, at most an hour', async () => {
      expect((await spread(10)).every((refusal) => refusal === undefined)).toBe(true);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.1' }))).toEqual({
        rule: 'R2',
        retryAfterSeconds: 900,
      });
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.2', trusted: true }))).toBeUndefined();
      advanceSeconds(900);
      await spread(10, 20);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.3' }))).toEqual({
        rule: 'R2',
        retryAfterSeconds: 1800,
      });
      advanceSeconds(1800);
      await spread(10, 40);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.4' }))).toEqual({
        rule: 'R2',
        retryAfterSeconds: 3600,
      });
    });

    it('refuses untrusted clients for good after 100 verified failures, until a success or a password change', async () => {
      let verified = 0;
      for (let round = 0; verified < 100 && round < 20; round += 1) {
        const refusals = await spread(10, round * 10);
        verified += refusals.filter((refusal) => refusal === undefined).length;
        advanceSeconds(3600);
      }
      expect(verified).toBe(100);
      advanceSeconds(86400);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.9' }))).toMatchObject({ rule: 'R3' });
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.9', trusted: true }))).toBeUndefined();
      await throttle.forgetAccountFailures('ALICE');
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.10' }))).toBeUndefined();
    });

    it('does not count attempts that a lock refused towards the cap of 100', async () => {
      // R2 out of the way, so that R3 alone refuses at the end.
      build({ accountUntrustedFailures: 1000 });
      await fail(5);
      for (let i = 0; i < 300; i += 1) {
        expect((await throttle.reserveLoginAttempt(attempt()))?.rule).toBe('R1');
      }
      // Only the 5 verified failures count: 95 more verified ones reach the cap, not 1.
      expect((await spread(95)).every((refusal) => refusal === undefined)).toBe(true);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.77' }))).toMatchObject({ rule: 'R3' });
    });

    it('locks untrusted clients from the 10th failure: one back 15 min later is verified', async () => {
      await spread(10);
      advanceSeconds(901);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.50' }))).toBeUndefined();
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.51' }))).toBeUndefined();
    });

    it('forgets the account failures after a success of any client', async () => {
      await spread(10);
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.1' }))).toMatchObject({ rule: 'R2' });
      await throttle.recordLoginSuccess(attempt({ ip: '192.0.2.2', trusted: true }));
      expect(await throttle.reserveLoginAttempt(attempt({ ip: '192.0.2.1' }))).toBeUndefined();
    });
  });

  describe('R4: failures per address across accounts', () => {
    it('refuses the 11th failure in a minute from one address, whatever the username, for 10 minutes', async () => {
      for (let i = 0; i < 10; i += 1) {
        expect(await throttle.reserveLoginAttempt(attempt({ username: `user${i}` }))).toBeUndefined();
      }
      expect(await throttle.reserveLoginAttempt(attempt({ username: 'user10' }))).toEqual({
        rule: 'R4',
        retryAfterSeconds: 600,
      });
      expect(
        await throttle.reserveLoginAttempt(attempt({ username: 'user10', ip: '203.0.113.9' })),
      ).toBeUndefined();
      advanceSeconds(600);
      expect(await throttle.reserveLoginAttempt(attempt({ username: 'user11' }))).toBeUndefined();
    });

    it('refuses the 101st failure in a day for a day', async () => {
      for (let i = 0; i < 100; i += 1) {
        if (i % 10 === 0) advanceSeconds(601);
        expect(await throttle.reserveLoginAttempt(attempt({ username: `user${i}` }))).toBeUndefined();
      }
      advanceSeconds(601);
      expect(await throttle.reserveLoginAttempt(attempt({ username: 'user100' }))).toEqual({
        rule: 'R4',
        retryAfterSeconds: 86400,
      });
    });

    it('gives a success its place back', async () => {
      for (let i = 0; i < 9; i += 1) await throttle.reserveLoginAttempt(attempt({ username: `user${i}` }));
      await throttle.reserveLoginAttempt(attempt({ username: 'bob', trusted: true }));
      await throttle.recordLoginSuccess(attempt({ username: 'bob', trusted: true }));
      expect(await throttle.reserveLoginAttempt(attempt({ username: 'user9' }))).toBeUndefined();
    });
  });

  // Found in review: the count's window opened at the first failure, so ten failures spread over 14 minutes locked
  // the factor for one more minute, and a probe past the window's end locked it 15 minutes from then.
  describe('R13: second-factor failures per user', () => {
    const code = (userId: number) => throttle.reserveSecondFactorAttempt(userId, 'capped');
    const recoveryCode = (userId: number) => throttle.reserveSecondFactorAttempt(userId, 'uncapped');

    it('locks for 15 minutes from the 10th failure, then gives 10 more', async () => {
      expect(await code(7)).toBe('admitted');
      advanceSeconds(14 * 60);
      for (let i = 0; i < 9; i += 1) expect(await code(7)).toBe('admitted');
      advanceSeconds(2 * 60);
      expect(await code(7)).toBe('locked');
      expect(await recoveryCode(7)).toBe('locked');
      expect(await code(8)).toBe('admitted');
      advanceSeconds(13 * 60);
      for (let i = 0; i < 10; i += 1) expect(await code(7)).toBe('admitted');
      expect(await code(7)).toBe('locked');
    });

    it('forgets the failures after a right code', async () => {
      for (let i = 0; i < 9; i += 1) await code(7);
      await throttle.recordSecondFactorSuccess(7);
      for (let i = 0; i < 10; i += 1) expect(await code(7)).toBe('admitted');
    });

    /** Ten rounds of ten wrong proofs, each after the last round's lock ended: 100 consecutive failures. */
    const hundredFailures = async (userId: number) => {
      for (let round = 0; round < 10; round += 1) {
        for (let i = 0; i < 10; i += 1)
          expect(await (i === 0 ? recoveryCode : code)(userId)).toBe('admitted');
        expect(await recoveryCode(userId)).toBe('locked');
        advanceSeconds(15 * 60 + 1);
      }
    };

    // NIST SP 800-63B §3.2.2 (5.2.2 of rev. 3): at most 100 consecutive failures per account. Ten every 15 minutes
    // alone gave someone who has the password 960 guesses a day at a 6-digit code.
    it('refuses codes after 100 consecutive failures, lock or no lock, but still checks what cannot be guessed', async () => {
      await hundredFailures(7);
      expect(await code(7)).toBe('capped');
      advanceSeconds(24 * 3600);
      // Refused unchecked, the codes are no failures for the lock either: they cannot lock the owner out.
      for (let i = 0; i < 30; i += 1) expect(await code(7)).toBe('capped');
      // A recovery code (80 bits) or a passkey is no guess: the owner's way back in.
      expect(await recoveryCode(7)).toBe('admitted');
      expect(await code(8)).toBe('admitted');
      await throttle.recordSecondFactorSuccess(7);
      expect(await code(7)).toBe('admitted');
    });

    it('refuses a burst of codes past the cap without locking the recovery codes out', async () => {
      await hundredFailures(7);
      const burst = await Promise.all(Array.from({ length: 40 }, () => code(7)));
      expect(new Set(burst)).toEqual(new Set(['capped']));
      expect(await recoveryCode(7)).toBe('admitted');
    });

    it('lets no more than 100 codes through a burst that reaches the cap', async () => {
      for (let round = 0; round < 9; round += 1) {
        for (let i = 0; i < 10; i += 1) await code(7);
        advanceSeconds(15 * 60 + 1);
      }
      const burst = await Promise.all(Array.from({ length: 40 }, () => code(7)));
      expect(burst.filter((outcome) => outcome === 'admitted')).toHaveLength(10);
      advanceSeconds(15 * 60 + 1);
      expect(await code(7)).toBe('capped');
    });

    it('keeps the cap for 30 days from the first failure it counted', async () => {
      await hundredFailures(7);
      advanceSeconds(27 * 86400);
      expect(await code(7)).toBe('capped');
      advanceSeconds(3 * 86400);
      expect(await code(7)).toBe('admitted');
    });

    it('counts a locked attempt toward neither count: it checked nothing', async () => {
      for (let round = 0; round < 9; round += 1) {
        for (let i = 0; i < 10; i += 1) await code(7);
        for (let i = 0; i < 50; i += 1) expect(await code(7)).toBe('locked');
        advanceSeconds(15 * 60 + 1);
      }
      for (let i = 0; i < 10; i += 1) expect(await code(7)).toBe('admitted');
    });

    it('forgets the lock and the cap when an operator unlocks the user', async () => {
      await hundredFailures(7);
      for (let i = 0; i < 10; i += 1) await recoveryCode(7);
      expect(await recoveryCode(7)).toBe('locked');
      await throttle.forgetSecondFactorFailures(7);
      for (let i = 0; i < 10; i += 1) expect(await code(7)).toBe('admitted');
    });
  });

  describe('request caps', () => {
    it('R5: allows bursts of 30 password grants a minute per address, and 150 in 5 minutes', async () => {
      const admitted = async (count: number) => {
        let n = 0;
        for (let i = 0; i < count; i += 1) if (!(await throttle.admitPasswordGrant('203.0.113.1'))) n += 1;
        return n;
      };
      expect(await admitted(31)).toBe(30);
      expect(await throttle.admitPasswordGrant('203.0.113.2')).toBeUndefined();
      advanceSeconds(60);
      expect(await admitted(30)).toBe(30);
      advanceSeconds(60);
      expect(await admitted(30)).toBe(30);
      advanceSeconds(60);
      // 30 + 1 refused + 30 + 30 = 91 counted of 150, so 30 now and then the five-minute window refuses.
      expect(await admitted(30)).toBe(30);
      advanceSeconds(60);
      expect(await admitted(30)).toBe(29);
      expect(await throttle.admitPasswordGrant('203.0.113.1')).toMatchObject({ rule: 'R5' });
    });

    it('R6: refuses the 4th registration from one address within 10 s, and the 21st within an hour', async () => {
      const audits: { event: string; fields: Record<string, unknown> }[] = [];
      const context = contextFrom('203.0.113.1', audits);
      for (let i = 0; i < 3; i += 1) await throttle.admitRegistration(context);
      const refused = await throttle.admitRegistration(context).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(AppError);
      expect(refused).toMatchObject({ code: 'temporarily_unavailable', retryAfterSeconds: 10 });
      expect(audits).toEqual([{ event: 'request_throttled', fields: { rule: 'R6', retryAfterSeconds: 10 } }]);
      await throttle.admitRegistration(contextFrom('203.0.113.2'));

      build();
      for (let i = 0; i < 20; i += 1) {
        if (i % 3 === 0) advanceSeconds(10);
        await throttle.admitRegistration(context);
      }
      advanceSeconds(10);
      await expect(throttle.admitRegistration(context)).rejects.toMatchObject({
        code: 'temporarily_unavailable',
        retryAfterSeconds: 3600 - 70,
      });
    });

    it('R7: refuses the 11th refresh of one session within a minute, and counts addresses apart', async () => {
      const context = contextFrom('203.0.113.1');
      for (let i = 0; i < 10; i += 1)
        expect(await throttle.admitRefreshOfSession('session-1')).toBeUndefined();
      const refusal = await throttle.admitRefreshOfSession('session-1');
      expect(refusal).toEqual({ rule: 'R7', retryAfterSeconds: 60 });
      expect(throttle.refuse(refusal as Refusal, context)).toMatchObject({
        code: 'temporarily_unavailable',
        retryAfterSeconds: 60,
      });
      expect(await throttle.admitRefreshOfSession('session-2')).toBeUndefined();
      for (let i = 0; i < 150; i += 1) await throttle.admitRefresh(context);
      await expect(throttle.admitRefresh(context)).rejects.toMatchObject({ code: 'temporarily_unavailable' });
      expect(await throttle.admitPasswordGrant('203.0.113.1')).toBeUndefined();
    });

    it('R8: refuses the 31st message of one user within a minute, whatever the address, and counts users apart', async () => {
      for (let i = 0; i < 30; i += 1) {
        await throttle.admitMessage(7, contextFrom(`203.0.113.${(i % 3) + 1}`));
      }
      await expect(throttle.admitMessage(7, contextFrom('198.51.100.9'))).rejects.toMatchObject({
        code: 'temporarily_unavailable',
        retryAfterSeconds: 60,
      });
      await throttle.admitMessage(8, contextFrom('203.0.113.1'));
    });

    it('R9: keys an address by an HMAC under a key derived from GATEHOUSE_SECRET, never by a bare digest', async () => {
      const store = createCounterStore();
      const keys: string[] = [];
      const recording: CounterStore = {
        ...store,
        counter: (spec) => {
          const counter = store.counter(spec);
          return {
            ...counter,
            hit: (key) => {
              keys.push(key);
              return counter.hit(key);
            },
          };
        },
      };
      throttle = createThrottle(recording, DEFAULTS, KEYS);
      await throttle.admitMailTo(' Victim@Example.com', contextFrom('203.0.113.1'));
      const expected = createHmac('sha256', deriveMailAddressKey(SECRET))
        .update('victim@example.com')
        .digest('base64url')
        .slice(0, 24);
      expect(new Set(keys)).toEqual(new Set([expected]));
      const bare = createHash('sha256').update('victim@example.com').digest('base64url').slice(0, 24);
      expect(keys.join()).not.toContain(bare);
      expect(keys.join()).not.toContain('victim');
      await store.close();
    });

    it('R9: one mail per address a minute and five an hour, the address case-folded, whoever asks', async () => {
      const audits: { event: string; fields: Record<string, unknown> }[] = [];
      await throttle.admitMailTo('Someone@Example.com ', contextFrom('203.0.113.1', audits));
      const refused = await throttle
        .admitMailTo('someone@example.COM', contextFrom('198.51.100.7', audits))
        .catch((error: unknown) => error);
      expect(refused).toMatchObject({ code: 'temporarily_unavailable', retryAfterSeconds: 60 });
      expect(audits).toEqual([{ event: 'request_throttled', fields: { rule: 'R9', retryAfterSeconds: 60 } }]);
      await throttle.admitMailTo('other@example.com', contextFrom('203.0.113.1'));
      // The refused request counted too: three more fill the hour's five.
      for (let i = 0; i < 3; i += 1) {
        advanceSeconds(61);
        await throttle.admitMailTo('someone@example.com', contextFrom('203.0.113.1'));
      }
      advanceSeconds(61);
      await expect(
        throttle.admitMailTo('someone@example.com', contextFrom('203.0.113.1')),
      ).rejects.toMatchObject({
        code: 'temporarily_unavailable',
      });
    });

    it('R10: refuses the 31st mail request of one address within an hour', async () => {
      for (let i = 0; i < 30; i += 1) await throttle.admitMailRequest(contextFrom('203.0.113.1'));
      await expect(throttle.admitMailRequest(contextFrom('203.0.113.1'))).rejects.toMatchObject({
        code: 'temporarily_unavailable',
        retryAfterSeconds: 3600,
      });
      await throttle.admitMailRequest(contextFrom('203.0.113.2'));
    });

    it('R11: refuses the 11th token submission of one address within 5 minutes', async () => {
      for (let i = 0; i < 10; i += 1) await throttle.admitTokenSubmission(contextFrom('203.0.113.1'));
      await expect(throttle.admitTokenSubmission(contextFrom('203.0.113.1'))).rejects.toMatchObject({
        code: 'temporarily_unavailable',
        retryAfterSeconds: 300,
      });
      await throttle.admitTokenSubmission(contextFrom('203.0.113.2'));
    });
  });
});
