import { availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Algorithm, hash, verify } from '@node-rs/argon2';
import { verify as verifyBcrypt } from '@node-rs/bcrypt';
import { hasLongCombiningRun } from '../domain/text.ts';
import { AppError, type UnavailableReason, withoutStackTrace } from '../errors.ts';

export interface Argon2Parameters {
  memoryKib: number;
  timeCost: number;
  parallelism: number;
}

export interface PasswordHasher {
  /** Returns an argon2id PHC string for the password; throws `overloaded` when shed (see HashOptions). */
  hash(password: string, options?: HashOptions): Promise<string>;
  /**
   * Returns whether the password matches the stored argon2id or bcrypt hash; false, without trying, for a hash
   * findStoredHashProblem refuses.
   * A false answer comes no earlier than the failure floor, whatever the kind of hash. Throws `overloaded` when shed.
   */
  verify(storedHash: string, password: string, options?: HashOptions): Promise<boolean>;
  /**
   * Returns whether a lookup secret (a recovery code) matches an argon2id hash that `hash` made of it; false for any
   * other kind of hash. Never waits for the failure floor. Throws `overloaded` when shed.
   */
  verifyLookupSecret(storedHash: string, secret: string, options?: HashOptions): Promise<boolean>;
  /** Returns whether the stored hash should be replaced, now that `password` is known to match it. */
  needsRehash(storedHash: string, password: string): boolean;
  /** Fails like a real verification, floor included, for callers that have no user to verify against. */
  verifyDummy(password: string, options?: HashOptions): Promise<void>;
  /** Returns the current failure floor in milliseconds: the slowest kind of verification, estimated from runs. */
  failureFloorMs(): number;
  /**
   * Makes every failure wait for the floor from now on: bcrypt hashes (the default), or only argon2 hashes of other
   * parameters, exist, so their time must not show.
   */
  activateFailureFloor(kind?: 'bcrypt' | 'argon2'): void;
  /** The start of every hash made with the current parameters: a stored hash without it is verified in another time. */
  readonly currentHashPrefix: string;
  /** Returns the hashes running now and those waiting for a slot. */
  load(): HashLoad;
  /** Throws `overloaded`, as a shed hash does, when a hash asked for now would be shed at once for a full queue. */
  refuseWhenFull(): void;
  /** Counts a request that is not mostly hashing: while such requests keep coming, hashes leave them a core. */
  noteOtherWork(): void;
}

export interface HashLoad {
  inFlight: number;
  queued: number;
}

export interface HashOptions {
  /** Aborted when the client has gone: a hash still waiting for its slot is dropped; a running one finishes. */
  signal?: AbortSignal;
}

export interface PasswordHasherOptions {
  /** Hashes running at once (HASH_CONCURRENCY); one per core by default. */
  concurrency?: number;
  /** Hashes that may wait for a slot (HASH_QUEUE_MAX); past it a hash is shed. Unbounded by default. */
  queueMax?: number;
  /** How long a hash may wait for a slot (HASH_QUEUE_TIMEOUT_MS) before it is shed. Unbounded by default. */
  queueTimeoutMs?: number;
  /** The bcrypt cost of imported hashes: failures wait as long as one of those would take. passlib's default. */
  importedBcryptCost?: number;
  /** Milliseconds, for the window in which other requests are counted; performance.now unless a test moves it. */
  now?: () => number;
}

/**
 * Returns the one form of a password that the policy checks and argon2id hashes cover (NFKC); bcrypt hashes imported
 * from passlib were made over the raw password, so bcrypt verification does not use it.
 */
export function normalisePassword(raw: string): string {
  // A password with such a run is refused when set (password-policy.ts), so as typed it matches none; normalising it
  // would take time in the square of the run (domain/text.ts).
  return hasLongCombiningRun(raw) ? raw : raw.normalize('NFKC');
}

// passlib's bcrypt: $2b$ (or the older $2a$/$2y$), a two-digit cost, 22 characters of salt and 31 of hash.
const BCRYPT_HASH = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;
// bcrypt's own minimum, and a maximum that takes about a second on one core (passlib writes 12): each step doubles
// the work, so an imported cost of 31 would hold a hash thread for hours at every login to its name.
const MIN_BCRYPT_COST = 4;
const MAX_BCRYPT_COST = 14;
// A constant hash (of "gatehouse-calibration") whose verification times bcrypt on this machine at start-up.
const BCRYPT_CALIBRATION_COST = 8;
// The parameters of an argon2 PHC string, as far as they set its verification's duration.
const ARGON2_PARAMETERS = /^\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$/;
const MAX_ARGON2_ESTIMATES = 16;

/** Returns why Gatehouse does not verify this stored hash as bcrypt (not bcrypt's shape, a cost outside 4 to 14), or undefined. */
export function findBcryptHashProblem(storedHash: string): string | undefined {
  const bcrypt = BCRYPT_HASH.exec(storedHash);
  if (!bcrypt) return 'not a bcrypt hash';
  const cost = Number(bcrypt[1]);
  if (cost < MIN_BCRYPT_COST || cost > MAX_BCRYPT_COST) {
    return `bcrypt cost ${cost} is outside ${MIN_BCRYPT_COST} to ${MAX_BCRYPT_COST}`;
  }
  return undefined;
}

/**
 * Returns why verification refuses this stored hash without trying it (not argon2id or bcrypt, a malformed bcrypt
 * hash, a bcrypt cost outside 4 to 14), or undefined; nobody can log in to an account whose hash it refuses.
 */
export function findStoredHashProblem(storedHash: string): string | undefined {
  if (storedHash.startsWith('$argon2')) return undefined;
  if (storedHash.startsWith('$2')) return findBcryptHashProblem(storedHash);
  return 'neither an argon2 nor a bcrypt hash';
}

/** Builds an argon2id hasher that also verifies bcrypt hashes imported from passlib. */
export function createPasswordHasher(
  parameters: Argon2Parameters,
  options: PasswordHasherOptions = {},
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
  // busy, and runtime-check.ts sizes the pool so threads remain for the rest. A third hash in flight on two cores gave no
  // more logins per second (measured, interleaved runs) and held 19 MiB more memory. bcrypt shares the limit:
  // it is the same kind of work on the same threads.
  const otherWork = createRequestRate(options.now ?? (() => performance.now()));
  const slots = createHashSlots(
    {
      concurrency: options.concurrency ?? availableParallelism(),
      queueMax: options.queueMax ?? Number.POSITIVE_INFINITY,
      queueTimeoutMs: options.queueTimeoutMs ?? Number.POSITIVE_INFINITY,
    },
    () => otherWork.perWindow() >= OTHER_WORK_RESERVES_A_CORE,
  );

  // Wrong passwords must take as long for an argon2 account as for a bcrypt one (~250 ms at cost 12 against
  // ~20 ms) and an unknown user, or the timing tells them apart. Every failure therefore resolves no earlier
  // than the slowest kind's estimated duration, waited on a timer: no CPU, no threadpool slot. The estimates
  // follow the machine's actual speed and load rather than a constant that is wrong on the next host.
  // One estimate per argon2 parameter set met (the current set's takes the dummy and every new hash): one running mix
  // of them drifted toward whichever kind had failed last, and the floor with it, which the timing then told apart
  // (found in review: after 40 failures of an account with older, cheaper parameters, 36 ms against 149 ms).
  const argon2Durations = new Map<string, DurationEstimate>();
  const argon2DurationOf = (storedHash: string): DurationEstimate => {
    const prefix = ARGON2_PARAMETERS.exec(storedHash)?.[0] ?? expectedPrefix;
    let estimate = argon2Durations.get(prefix);
    if (!estimate) {
      // A handful of sets at most exist in a database; past that, a set shares the current one's estimate.
      if (argon2Durations.size >= MAX_ARGON2_ESTIMATES) return argon2DurationOf(expectedPrefix);
      estimate = createDurationEstimate();
      argon2Durations.set(prefix, estimate);
    }
    return estimate;
  };
  const argon2Duration = argon2DurationOf(expectedPrefix);
  // Per 2^cost rounds, since each bcrypt cost doubles the work: one estimate serves every cost.
  const bcryptRoundDuration = createDurationEstimate();
  let slowestBcryptCost = options.importedBcryptCost ?? 12;
  // Without bcrypt hashes every failure is one argon2 verification already (a real or the dummy hash), so there is
  // nothing to hide and failures are not slowed: the caller activates the floor when its users include bcrypt
  // hashes, and the first bcrypt hash met activates it too.
  let floorActive = false;
  // Whether bcrypt's estimate sets the floor: only while bcrypt hashes exist. Argon2id hashes of other parameters alone
  // need no more than the argon2id verifications measured, theirs included.
  let bcryptInFloor = false;
  const failureFloorMs = () =>
    Math.max(
      ...[...argon2Durations.values()].map((estimate) => estimate.upperBoundMs()),
      bcryptInFloor ? bcryptRoundDuration.upperBoundMs() * 2 ** slowestBcryptCost : 0,
    );

  // `admission` undefined: the hasher's own start-up work, which waits for a slot however long the queue.
  const timed = async <T>(
    estimate: DurationEstimate,
    scale: number,
    task: () => Promise<T>,
    admission?: HashOptions,
  ) =>
    slots.run(async () => {
      const started = performance.now();
      try {
        return await task();
      } finally {
        estimate.add((performance.now() - started) / scale);
      }
    }, admission);

  const hashPassword = (password: string, admission?: HashOptions) =>
    timed(argon2Duration, 1, () => hash(normalisePassword(password), argonOptions), admission);
  // Made at once, so that the first unknown-user login after a start costs no more than any other; its time
  // seeds the argon2 estimate, as the calibration below seeds bcrypt's.
  const dummyHash = hashPassword('gatehouse-dummy-password-for-timing');
  dummyHash.catch(() => {});
  // The fastest of a few runs: start-up is noisy (other threads, a cold cache), and noise only adds time. The
  // deviation starts at a quarter of the mean, so the first floor is twice bcrypt's bare cost; real bcrypt
  // verifications then move it.
  const calibration = (async () => {
    let fastestMs = Number.POSITIVE_INFINITY;
    for (let run = 0; run < 4; run += 1) {
      const started = performance.now();
      await slots.run(() => verifyBcrypt('gatehouse-calibration', BCRYPT_CALIBRATION_HASH));
      fastestMs = Math.min(fastestMs, performance.now() - started);
    }
    const perRoundMs = fastestMs / 2 ** BCRYPT_CALIBRATION_COST;
    bcryptRoundDuration.seed(perRoundMs, perRoundMs / 4);
  })();
  calibration.catch(() => {});

  // A hash that cannot be parsed is a mismatch; a shed one is an error the caller must see, never a mismatch.
  const matchesArgon2 = (storedHash: string, password: string, admission: HashOptions) => {
    const task = () => verify(storedHash, normalisePassword(password)).catch(() => false);
    return timed(argon2DurationOf(storedHash), 1, task, admission);
  };
  const matches = (storedHash: string, password: string, admission: HashOptions): Promise<boolean> => {
    if (storedHash.startsWith('$argon2')) {
      // A hash of other parameters (ARGON2_* changed since it was made) takes another time than the dummy of an
      // unknown name: failures wait for the floor from now on, which the estimate of these verifications then moves.
      if (!storedHash.startsWith(expectedPrefix)) floorActive = true;
      return matchesArgon2(storedHash, password, admission);
    }
    if (storedHash.startsWith('$2')) {
      floorActive = true;
      bcryptInFloor = true;
      if (findBcryptHashProblem(storedHash)) return Promise.resolve(false);
      const cost = Number(storedHash.slice(4, 6));
      // A cost above the expected one raises the floor from now on; the first such failure shows, once.
      slowestBcryptCost = Math.max(slowestBcryptCost, cost);
      // passlib hashed the raw password: no normalisation here, or imported users could not log in.
      // Below the calibration cost a run is mostly fixed overhead, which would inflate the per-round estimate.
      const task = () => verifyBcrypt(password, storedHash).catch(() => false);
      return cost >= BCRYPT_CALIBRATION_COST
        ? timed(bcryptRoundDuration, 2 ** cost, task, admission)
        : slots.run(task, admission);
    }
    return Promise.resolve(false);
  };

  const verifyPassword = async (
    storedHash: string,
    password: string,
    admission: HashOptions = {},
  ): Promise<boolean> => {
    const started = performance.now();
    // A lone surrogate reaches argon2id as U+FFFD, so "…\ud800" would match the hash of "…\ufffd": such a password
    // matches nothing, after the same work as a real verification.
    const wellFormed = password.isWellFormed();
    if (await matches(wellFormed ? storedHash : await dummyHash, password, admission)) return wellFormed;
    if (!floorActive) return false;
    await calibration.catch(() => {});
    // From the start of the call, queueing included: the queue is shared, so it says nothing about the hash.
    const remainingMs = started + failureFloorMs() - performance.now();
    if (remainingMs > 0) await sleep(remainingMs);
    return false;
  };

  return {
    hash: (password, admission = {}) => hashPassword(password, admission),
    verify: verifyPassword,
    // The floor hides which kind of hash a password has; lookup secrets have one kind only, and a check of a user's
    // codes tries them one after another, so a floor on each miss would make a wrong code wait ten floors.
    verifyLookupSecret: async (storedHash, secret, admission = {}) =>
      storedHash.startsWith('$argon2id$') && matchesArgon2(storedHash, secret, admission),
    needsRehash: (storedHash, password) => {
      if (storedHash.startsWith('$argon2')) return !storedHash.startsWith(expectedPrefix);
      // bcrypt matched only the first 72 bytes: a longer password may be just a prefix of the real one, and
      // hashing it would lock the user out of their full password. Keep bcrypt for those.
      return Buffer.byteLength(password, 'utf8') < 72;
    },
    async verifyDummy(password, admission) {
      await verifyPassword(await dummyHash, password, admission);
    },
    failureFloorMs,
    currentHashPrefix: expectedPrefix,
    activateFailureFloor: (kind = 'bcrypt') => {
      floorActive = true;
      if (kind === 'bcrypt') bcryptInFloor = true;
    },
    load: slots.load,
    refuseWhenFull: slots.refuseWhenFull,
    noteOtherWork: otherWork.note,
  };
}

// Other requests in one window (a clock second, the current or the last) from which hashing leaves them a core: 50 a
// second is far above a load balancer's health checks, which must not cost a busy two-core server half its logins.
// The reserve therefore ends one to two seconds after the other requests stop.
const OTHER_WORK_RESERVES_A_CORE = 50;
const OTHER_WORK_WINDOW_MS = 1000;

/** Counts events in fixed windows; perWindow is the larger of the current and the last window's counts. */
function createRequestRate(now: () => number) {
  let windowStart = now();
  let current = 0;
  let previous = 0;
  const roll = () => {
    const elapsed = now() - windowStart;
    if (elapsed < OTHER_WORK_WINDOW_MS) return;
    const justEnded = elapsed < 2 * OTHER_WORK_WINDOW_MS;
    previous = justEnded ? current : 0;
    current = 0;
    windowStart = justEnded ? windowStart + OTHER_WORK_WINDOW_MS : now();
  };
  return {
    note() {
      roll();
      current += 1;
    },
    perWindow() {
      roll();
      return Math.max(current, previous);
    },
  };
}

const BCRYPT_CALIBRATION_HASH = '$2b$08$VBOHwM8Dmgd3fSO53Dyoyu4Bt/9MRBjqA3MXzLXr1nI1tnW0lQv9C';

interface DurationEstimate {
  add(sampleMs: number): void;
  seed(meanMs: number, deviationMs: number): void;
  upperBoundMs(): number;
}

/**
 * RFC 6298's retransmission-timeout estimator: a smoothed mean plus four smoothed deviations bounds a noisy
 * duration from above, follows a slower machine within a few samples, and is not thrown by one outlier.
 */
function createDurationEstimate(): DurationEstimate {
  let meanMs: number | undefined;
  let deviationMs = 0;
  return {
    add(sampleMs) {
      if (meanMs === undefined) {
        meanMs = sampleMs;
        deviationMs = sampleMs / 2;
        return;
      }
      deviationMs = 0.75 * deviationMs + 0.25 * Math.abs(meanMs - sampleMs);
      meanMs = 0.875 * meanMs + 0.125 * sampleMs;
    },
    seed(mean, deviation) {
      if (meanMs !== undefined) return;
      meanMs = mean;
      deviationMs = deviation;
    },
    upperBoundMs: () => (meanMs === undefined ? 0 : meanMs + 4 * deviationMs),
  };
}

interface HashLimits {
  concurrency: number;
  queueMax: number;
  queueTimeoutMs: number;
}

interface Waiter {
  start(): void;
}

/**
 * At most `concurrency` tasks run, one fewer (never none) while `reserveACore` says other requests keep coming; the
 * rest wait in FIFO order. The reserve exists because idle priority does not keep hashes off the event loop's core:
 * on the 2-core bench host one SCHED_IDLE busy loop, with no Gatehouse code in it, raised /conversation's p99 at rest
 * from 0.35 to 1.30 ms, and under a 500-connection /token flood the reserve took it from 6.4-7.7 to 3.6-4.2 ms.
 * A task with an admission (a request's) is shed when the queue is full, when it has waited `queueTimeoutMs`, or when
 * its signal aborts while it waits: argon2 work that would finish after the client gave up, or after its retry, only
 * delays the hashes behind it. Shedding throws `overloaded` without running the task; a task that started always
 * runs to its end.
 */
function createHashSlots(limits: HashLimits, reserveACore: () => boolean) {
  let inFlight = 0;
  const limit = () =>
    limits.concurrency > 1 && reserveACore() ? limits.concurrency - 1 : limits.concurrency;
  // A Set keeps insertion order, and a waiter that leaves early (timeout, abort) is deleted in O(1).
  const queue = new Set<Waiter>();

  const queueFull = () =>
    shed('hash_queue_full', `hash queue full (${queue.size} waiting for ${limit()} slots)`);

  // Free slots go to the waiters in order, at once: a newcomer runs only when nobody waits (see run).
  const startWaiters = () => {
    for (const next of queue) {
      if (inFlight >= limit()) return;
      queue.delete(next);
      inFlight += 1;
      next.start();
    }
  };
  const release = () => {
    inFlight -= 1;
    startWaiters();
  };

  const waitForSlot = (admission: HashOptions | undefined) =>
    new Promise<void>((resolve, reject) => {
      const signal = admission?.signal;
      if (admission && queue.size >= limits.queueMax) {
        reject(queueFull());
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const leave = (kind: UnavailableReason, reason: string) => {
        queue.delete(waiter);
        cleanUp();
        reject(shed(kind, reason));
      };
      const onAbort = () => leave('client_gone', 'client closed the connection while its hash was queued');
      const cleanUp = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        start() {
          cleanUp();
          resolve();
        },
      };
      queue.add(waiter);
      if (admission && Number.isFinite(limits.queueTimeoutMs)) {
        timer = setTimeout(
          () => leave('hash_queue_timeout', `waited ${limits.queueTimeoutMs} ms for a hash slot`),
          limits.queueTimeoutMs,
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  return {
    async run<T>(task: () => Promise<T>, admission?: HashOptions): Promise<T> {
      // The reserve may have lapsed since the last release, leaving a slot free behind the queue.
      startWaiters();
      if (queue.size === 0 && inFlight < limit()) inFlight += 1;
      else if (admission?.signal?.aborted)
        // Its signal says the client ended its side (a FIN) or left. One that only half-closed still reads, and a free
        // slot serves it; one that would wait is taken for gone, as one that leaves while it waits.
        throw shed('client_gone', 'client closed the connection before its hash started');
      else await waitForSlot(admission);
      try {
        return await task();
      } finally {
        release();
      }
    },
    load: (): HashLoad => ({ inFlight, queued: queue.size }),
    refuseWhenFull() {
      if (inFlight >= limit() && queue.size >= limits.queueMax) throw queueFull();
    },
  };
}

function shed(kind: UnavailableReason, reason: string): AppError {
  return withoutStackTrace(
    () =>
      new AppError('overloaded', 'The server is busy; retry in a second.', {
        cause: new Error(reason),
        retryAfterSeconds: 1,
        unavailableReason: kind,
      }),
  );
}
