import { hashSync as bcryptHashSync } from '@node-rs/bcrypt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AppError } from '../../src/errors.ts';
import {
  createPasswordHasher,
  findBcryptHashProblem,
  type PasswordHasher,
} from '../../src/security/passwords.ts';
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

  // Found from outside: a lone surrogate became U+FFFD on its way to argon2id, so "…\ud800y", "…\udfffy" and the
  // registered "…\ufffdy" all logged in. Different strings are different passwords.
  it('never matches a password holding a lone surrogate, not even to its U+FFFD spelling', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    const stored = await hasher.hash('correct horse \ufffdy battery');
    expect(await hasher.verify(stored, 'correct horse \ufffdy battery')).toBe(true);
    for (const other of ['correct horse \ud800y battery', 'correct horse \udfffy battery'])
      expect(await hasher.verify(stored, other)).toBe(false);
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

  it('verifies a lookup secret against argon2id hashes only', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    const secret = '0123456789ABCDEF';
    expect(await hasher.verifyLookupSecret(await hasher.hash(secret), secret)).toBe(true);
    for (const stored of [bcryptHashSync(secret, 4), '', 'plain', '$argon2id$v=19$m=1$broken']) {
      expect(await hasher.verifyLookupSecret(stored, secret), stored).toBe(false);
    }
  });

  it('answers false, never throws, for a corrupt or unknown hash', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    for (const stored of ['', 'plain', '$argon2id$v=19$m=1$broken', '$2b$04$short', '$pbkdf2-sha256$x']) {
      expect(await hasher.verify(stored, 'whatever')).toBe(false);
    }
  });
});

describe('bcrypt hashes Gatehouse verifies', () => {
  const withCost = (cost: string) => bcryptHashSync('the password', 4).replace(/^\$2b\$04\$/, `$2b$${cost}$`);

  it('accepts the bcrypt shape at costs 4 to 14 only, saying why not', () => {
    for (const cost of ['04', '10', '12', '14'])
      expect(findBcryptHashProblem(withCost(cost)), cost).toBeUndefined();
    for (const cost of ['00', '03', '15', '31', '99']) {
      expect(findBcryptHashProblem(withCost(cost)), cost).toMatch(
        new RegExp(`cost ${Number(cost)}\\b.*4 to 14`),
      );
    }
    for (const hash of [
      '',
      'plain',
      '$2b$04$short',
      '$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA',
      '$2x$04$abc',
    ]) {
      expect(findBcryptHashProblem(hash), hash).toMatch(/not a bcrypt hash/);
    }
  });

  it('answers false at once for a stored hash of cost 31, which would run for hours', {
    timeout: 10_000,
  }, async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, CHEAP_FLOOR);
    expect(await hasher.verify(withCost('31'), 'the password')).toBe(false);
    expect(await hasher.verify(withCost('04'), 'the password')).toBe(true);
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
    // Until bcrypt's calibration has run, the floor is argon2's own estimate, which a fast machine's median may pass.
    while (hasher.load().inFlight + hasher.load().queued > 0) await new Promise((r) => setTimeout(r, 5));
    const unpadded = await median(5, () => hasher.verify(argon2, 'a wrong password'));
    expect(unpadded).toBeLessThan(hasher.failureFloorMs() / 4);
    await hasher.verify(bcryptHashSync('the right password', 12), 'a wrong password');
    const padded = await median(3, () => hasher.verify(argon2, 'a wrong password'));
    expect(padded).toBeGreaterThan(hasher.failureFloorMs() / 2);
  }, 60_000);

  it('checks a lookup secret without the failure floor: ten misses in a row take less than one floor', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2);
    hasher.activateFailureFloor();
    await hasher.verifyDummy('warm up');
    const stored = await hasher.hash('0123456789ABCDEF');
    const started = performance.now();
    for (let row = 0; row < 10; row += 1) {
      expect(await hasher.verifyLookupSecret(stored, 'FEDCBA9876543210')).toBe(false);
    }
    expect(performance.now() - started).toBeLessThan(hasher.failureFloorMs());
    expect(await hasher.verifyLookupSecret(stored, '0123456789ABCDEF')).toBe(true);
  }, 60_000);

  // Found from outside: after ARGON2_* were raised, a wrong password for an account still hashed with the older, cheaper
  // parameters answered in 14-25 ms, and one for an unknown name (the dummy, at the new cost) in 160-560 ms. Then in
  // review: with one running estimate of every argon2 run, a burst of failures of one kind pulled the floor to it.
  const CHEAP = { memoryKib: 64, timeCost: 1, parallelism: 1 };
  const DEAR = { memoryKib: 4096, timeCost: 4, parallelism: 1 };
  it.each([
    ['cheaper', 'older', CHEAP, DEAR],
    ['cheaper', 'unknown', CHEAP, DEAR],
    ['dearer', 'older', DEAR, CHEAP],
    ['dearer', 'unknown', DEAR, CHEAP],
  ] as const)(
    'answers a wrong password as slowly for a hash of %s older argon2 parameters as for no user, after 30 failures of the %s kind',
    async (_label, burst, older, current) => {
      const stored = await createPasswordHasher(older).hash('the right password');
      const hasher = createPasswordHasher(current);
      // Meeting the first such hash makes failures wait for the floor (a start finding such hashes does too).
      await hasher.verify(stored, 'warm up');
      await hasher.verifyDummy('warm up');
      const failOlder = () => hasher.verify(stored, 'a wrong password');
      const failUnknown = () => hasher.verifyDummy('a wrong password');
      for (let i = 0; i < 30; i += 1) await (burst === 'older' ? failOlder() : failUnknown());
      const durations = { older: [] as number[], unknown: [] as number[] };
      for (let round = 0; round < 3; round += 1) {
        durations.older.push(await median(1, failOlder));
        durations.unknown.push(await median(1, failUnknown));
      }
      const [olderMedian, unknownMedian] = Object.values(durations).map(
        (list) => list.sort((a, b) => a - b)[1]!,
      );
      expect(Math.max(olderMedian!, unknownMedian!) / Math.min(olderMedian!, unknownMedian!)).toBeLessThan(
        1.5,
      );
    },
    60_000,
  );

  it('raises the floor for a bcrypt hash dearer than the expected cost', async () => {
    const hasher = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
    await hasher.verifyDummy('warm up');
    const before = hasher.failureFloorMs();
    await hasher.verify(bcryptHashSync('the right password', 10), 'a wrong password');
    expect(hasher.failureFloorMs()).toBeGreaterThan(before * 4);
  });
});

describe('password hasher load shedding', () => {
  /** One slot; what waits behind the hash in it is what the test looks at. */
  const oneSlot = async (limits: { queueMax?: number; queueTimeoutMs?: number } = {}) => {
    const hasher = createPasswordHasher(FAST_ARGON2, { ...CHEAP_FLOOR, concurrency: 1, ...limits });
    // The hasher's own start-up work (dummy hash, bcrypt calibration) finishes first, so the slot starts free. Its
    // steps follow each other within one turn of the event loop, so a timer never sees a gap between two of them.
    await waitUntilIdle(hasher);
    return hasher;
  };
  const waitUntilIdle = async (hasher: PasswordHasher) => {
    while (hasher.load().inFlight + hasher.load().queued > 0) await new Promise((r) => setTimeout(r, 5));
  };
  const overloaded = (error: unknown) => error instanceof AppError && error.code === 'overloaded';

  afterEach(() => {
    vi.useRealTimers();
  });

  it('reports the hashes in flight and those queued', async () => {
    const hasher = await oneSlot();
    expect(hasher.load()).toEqual({ inFlight: 0, queued: 0 });
    const running = [hasher.hash('first password'), hasher.hash('second password'), hasher.hash('third one')];
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 2 });
    await Promise.all(running);
    expect(hasher.load()).toEqual({ inFlight: 0, queued: 0 });
  });

  it('sheds a hash past HASH_QUEUE_MAX at once, without running it, and keeps the queued ones', async () => {
    const hasher = await oneSlot({ queueMax: 2 });
    const admitted = [
      hasher.hash('one password'),
      hasher.hash('two password'),
      hasher.hash('three password'),
    ];
    const shed = hasher.hash('four password').then(
      () => 'hashed',
      (error: unknown) => (overloaded(error) ? hasher.load() : error),
    );
    // Refused while the first hash still holds the only slot: it neither waited nor ran.
    expect(await shed).toEqual({ inFlight: 1, queued: 2 });
    for (const stored of await Promise.all(admitted)) expect(stored).toMatch(/^\$argon2id\$/);
  });

  it('sheds a verification too: it throws overloaded, never answers a mismatch', async () => {
    const hasher = await oneSlot({ queueMax: 0 });
    const stored = await hasher.hash('the right password');
    const running = hasher.hash('holds the slot');
    await expect(hasher.verify(stored, 'the right password')).rejects.toSatisfy(overloaded);
    await expect(hasher.verifyDummy('any password')).rejects.toSatisfy(overloaded);
    await running;
    expect(await hasher.verify(stored, 'the right password')).toBe(true);
  });

  it('sheds a hash that waited HASH_QUEUE_TIMEOUT_MS for a slot, and frees its place', async () => {
    const hasher = await oneSlot({ queueTimeoutMs: 1000 });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const running = hasher.hash('holds the slot');
    const waiting = hasher.hash('waits too long').catch((error: unknown) => error);
    vi.advanceTimersByTime(999);
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 1 });
    vi.advanceTimersByTime(1);
    expect(overloaded(await waiting)).toBe(true);
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 0 });
    vi.useRealTimers();
    expect(await running).toMatch(/^\$argon2id\$/);
  });

  it('drops a queued hash whose client left, and never starts it', async () => {
    const hasher = await oneSlot();
    const client = new AbortController();
    const running = hasher.hash('holds the slot');
    const waiting = hasher.hash('client leaves', { signal: client.signal }).catch((error: unknown) => error);
    const behind = hasher.hash('queued behind it');
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 2 });
    client.abort();
    expect(overloaded(await waiting)).toBe(true);
    // Its place went to nobody: the slot still holds the first hash, and only the one behind waits.
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 1 });
    await Promise.all([running, behind]);
    expect(hasher.load()).toEqual({ inFlight: 0, queued: 0 });
  });

  // The signal cannot tell a client gone from one that only ended its side (a FIN) and still reads: a free slot serves
  // it; one that would have to wait is refused at once, never queued.
  it('runs a hash whose signal aborted before it started only when a slot is free, and never queues it', async () => {
    const hasher = await oneSlot();
    expect(await hasher.hash('half-closed', { signal: AbortSignal.abort() })).toMatch(/^\$argon2id\$/);
    const running = hasher.hash('holds the slot');
    await expect(hasher.hash('too late', { signal: AbortSignal.abort() })).rejects.toSatisfy(overloaded);
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 0 });
    await running;
  });

  it('lets a hash that has started finish when its client leaves', async () => {
    const hasher = await oneSlot();
    const client = new AbortController();
    const running = hasher.hash('already running', { signal: client.signal });
    client.abort();
    const stored = await running;
    expect(await hasher.verify(stored, 'already running')).toBe(true);
  });
});

describe('password hasher beside other requests', () => {
  // Two slots, and a clock the test moves: the reserve follows the requests of the last second or so.
  const twoSlots = async () => {
    const clock = { ms: 0 };
    const hasher = createPasswordHasher(FAST_ARGON2, {
      ...CHEAP_FLOOR,
      concurrency: 2,
      now: () => clock.ms,
    });
    while (hasher.load().inFlight + hasher.load().queued > 0) await new Promise((r) => setTimeout(r, 5));
    return { hasher, clock };
  };
  const noteRequests = (hasher: PasswordHasher, count: number) => {
    for (let request = 0; request < count; request += 1) hasher.noteOtherWork();
  };

  it('uses every slot while other requests come at fewer than 50 a second (health checks, a trickle)', async () => {
    const { hasher } = await twoSlots();
    noteRequests(hasher, 49);
    const running = [hasher.hash('first password'), hasher.hash('second password'), hasher.hash('third one')];
    expect(hasher.load()).toEqual({ inFlight: 2, queued: 1 });
    await Promise.all(running);
  });

  it('leaves a core to the other requests while they come at 50 a second or more', async () => {
    const { hasher } = await twoSlots();
    noteRequests(hasher, 50);
    const running = [hasher.hash('first password'), hasher.hash('second password'), hasher.hash('third one')];
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 2 });
    for (const stored of await Promise.all(running)) expect(stored).toMatch(/^\$argon2id\$/);
    expect(hasher.load()).toEqual({ inFlight: 0, queued: 0 });
  });

  it('keeps the reserve through the next second, and starts the waiting hashes once the requests have stopped', async () => {
    const { hasher, clock } = await twoSlots();
    noteRequests(hasher, 50);
    clock.ms = 1500;
    const running = [hasher.hash('first password'), hasher.hash('second password'), hasher.hash('third one')];
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 2 });
    clock.ms = 2500;
    // The next hash asked for finds a free slot behind the queue: the first waiter takes it, in order.
    running.push(hasher.hash('fourth password'));
    expect(hasher.load()).toEqual({ inFlight: 2, queued: 2 });
    await Promise.all(running);
  });

  it('never reserves the only slot', async () => {
    const clock = { ms: 0 };
    const hasher = createPasswordHasher(FAST_ARGON2, { ...CHEAP_FLOOR, concurrency: 1, now: () => clock.ms });
    while (hasher.load().inFlight + hasher.load().queued > 0) await new Promise((r) => setTimeout(r, 5));
    noteRequests(hasher, 500);
    const running = [hasher.hash('first password'), hasher.hash('second password')];
    expect(hasher.load()).toEqual({ inFlight: 1, queued: 1 });
    await Promise.all(running);
  });
});
