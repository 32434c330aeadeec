import type { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { createPasswordPolicy } from '../../src/security/password-policy.ts';

const policy = createPasswordPolicy({ minLength: 8, maxLength: 1024 });
const inputs = ['alice', 'alice@example.com'];
const stuckWorkerUrl = new URL('../support/stuck-strength-worker.ts', import.meta.url);
const unavailable = { code: 'service_unavailable' };

/** Resolves with the next worker thread the process starts, and whether it has exited since. */
function nextWorker(): Promise<{ worker: Worker; hasExited: () => boolean }> {
  return new Promise((resolve) => {
    process.once('worker', (worker: Worker) => {
      let exited = false;
      worker.once('exit', () => {
        exited = true;
      });
      resolve({ worker, hasExited: () => exited });
    });
  });
}

afterAll(() => policy.close());

describe('password policy', async () => {
  // UAX #15's stream-safe limit: normalising a longer run takes time in its square (found from outside).
  it('refuses more than 30 combining marks in a row, before normalising, and takes 30', () => {
    const run = (marks: number) => `x${'\u0316\u0301'.repeat(marks / 2)}`;
    expect(policy.checkShape(`${run(30)}Q7#kd2!zz`)?.type).toBeUndefined();
    expect(policy.checkShape(`${run(32)}Q7#kd2!zz`)).toEqual({ type: 'combining_marks', maxRun: 30 });
    expect(policy.checkShape(`Q7#kd2!zz${'\u0344'.repeat(8000)}`)).toEqual({
      type: 'combining_marks',
      maxRun: 30,
    });
  });

  it('refuses a password one character below the minimum and accepts one at it', async () => {
    expect(await policy.check('xQ7#kd2', inputs)).toEqual({ type: 'too_short', minLength: 8 });
    expect(await policy.check('xQ7#kd2!', inputs)).toBeUndefined();
  });

  // Found from outside: the length was counted on the NFKC form alone, so one character that NFKC spells out (U+FDFA
  // is 18 after it) passed a minimum of 8, or of 15. The user typed one character; NIST 800-63B §3.1.1.2 counts those.
  it('counts the minimum on the password as typed: one character NFKC expands is one character', async () => {
    for (const typed of ['\ufdfa', '\ufdfb', '\u3300\u3301', '\ufb03\ufb04\ufb03'])
      expect(await policy.check(typed, inputs), typed).toEqual({ type: 'too_short', minLength: 8 });
  });

  it('counts the minimum on the shorter of the typed (NFC) and NFKC forms, so a decomposed spelling counts once', async () => {
    const letters = 'ḱñẃśźýç';
    expect(await policy.check(letters.normalize('NFD'), inputs)).toEqual({ type: 'too_short', minLength: 8 });
    // Half-width katakana with a voiced mark: 2 typed characters, 1 after NFKC.
    expect(await policy.check('\uff76\uff9e'.repeat(5), inputs)).toEqual({ type: 'too_short', minLength: 8 });
  });

  it('counts the maximum on the longer form, the NFKC one that is hashed', async () => {
    expect(await policy.check('\ufb03'.repeat(400), inputs)).toEqual({ type: 'too_long', maxLength: 1024 });
  });

  it('counts code points, not UTF-16 units or bytes', async () => {
    expect(await policy.check('🔑🗝🔐🛡⚔🏰🐉🦄', inputs)).toBeUndefined();
    expect(
      (await createPasswordPolicy({ minLength: 15, maxLength: 1024 }).check('🔑🗝🔐🛡⚔🏰🐉🦄', inputs))?.type,
    ).toBe('too_short');
  });

  it('accepts 64, 128 and 1024 characters and refuses 1025', async () => {
    const random = (n: number) => Array.from({ length: n }, (_, i) => 'q7Z!kd2#Lm9$'[i % 12]).join('');
    for (const length of [64, 128, 1024])
      expect(await policy.check(`${random(length - 4)}Xy5%`, inputs)).toBeUndefined();
    expect(await policy.check('x'.repeat(1025), inputs)).toEqual({ type: 'too_long', maxLength: 1024 });
  });

  it('imposes no composition rules', async () => {
    expect(await policy.check('correct horse battery staple', inputs)).toBeUndefined();
  });

  it('refuses control characters', async () => {
    expect((await policy.check('correct horse\u0000battery', inputs))?.type).toBe('control_character');
    expect((await policy.check('correct horse\nbattery', inputs))?.type).toBe('control_character');
  });

  // Found from outside: refused as a "control character", which a surrogate is not.
  it('refuses lone surrogates, which would hash like another password, saying so', async () => {
    for (const password of ['correct horse \ud800 battery', 'correct horse \udfff battery'])
      expect((await policy.check(password, inputs))?.type).toBe('lone_surrogate');
  });

  it.each(['password123456789', '123456789012345', 'qwertyuiopasdfgh', 'password', 'P@ssw0rd2024'])(
    'refuses the common password %s with a reason',
    async (password) => {
      const problem = await policy.check(password, inputs);
      expect(problem?.type).toBe('too_common');
    },
  );

  it('refuses the username or email as the password', async () => {
    expect(await policy.check('alice@example.com', inputs)).toEqual({
      type: 'too_common',
      reason: 'it contains the username or email',
    });
  });
});

describe('password strength worker', () => {
  it('answers service_unavailable for the one estimate the worker fails on, and answers the others', async () => {
    const local = createPasswordPolicy({ minLength: 8, maxLength: 1024 });
    // zxcvbn throws on a null user input (it calls toString on each); the types never let one through.
    const results = await Promise.allSettled([
      local.check('correct horse battery staple', inputs),
      local.check('correct horse battery staple', [null as unknown as string]),
      local.check('password123456789', inputs),
    ]);
    expect(results[0]).toEqual({ status: 'fulfilled', value: undefined });
    expect(results[1]).toMatchObject({ status: 'rejected', reason: unavailable });
    expect(results[2]).toMatchObject({ status: 'fulfilled', value: { type: 'too_common' } });
    await local.close();
  });

  it('sheds at once, as the hash queue does (overloaded, Retry-After 1), when 64 estimates are already waiting', async () => {
    const local = createPasswordPolicy(
      { minLength: 8, maxLength: 1024 },
      { workerUrl: stuckWorkerUrl, estimateTimeoutMs: 600_000 },
    );
    let settled = 0;
    const waiting = Array.from({ length: 64 }, (_, i) =>
      local.check(`stuck password ${i}`, inputs).finally(() => {
        settled += 1;
      }),
    );
    await expect(local.check('correct horse battery staple', inputs)).rejects.toMatchObject({
      code: 'overloaded',
      retryAfterSeconds: 1,
      unavailableReason: 'password_check_unavailable',
    });
    expect(settled).toBe(0);
    const outcomes = Promise.allSettled(waiting);
    await local.close();
    for (const outcome of await outcomes)
      expect(outcome).toMatchObject({ status: 'rejected', reason: unavailable });
  });

  it('ends its worker on close, failing waiting estimates with service_unavailable', async () => {
    const local = createPasswordPolicy(
      { minLength: 8, maxLength: 1024 },
      { workerUrl: stuckWorkerUrl, estimateTimeoutMs: 600_000 },
    );
    const started = nextWorker();
    const refused = expect(local.check('stuck password', inputs)).rejects.toMatchObject(unavailable);
    const { hasExited } = await started;
    await local.close();
    expect(hasExited()).toBe(true);
    await refused;
    expect(await local.check('correct horse battery staple', inputs)).toBeUndefined();
    await local.close();
  });

  it('ends its idle worker after the idle time, and starts another for the next estimate', async () => {
    const local = createPasswordPolicy({ minLength: 8, maxLength: 1024 }, { idleWorkerMs: 200 });
    const started = nextWorker();
    expect(await local.check('correct horse battery staple', inputs)).toBeUndefined();
    const { worker, hasExited } = await started;
    await new Promise((resolve) => worker.once('exit', resolve));
    expect(hasExited()).toBe(true);
    const replacement = nextWorker();
    expect((await local.check('password123456789', inputs))?.type).toBe('too_common');
    await replacement;
    await local.close();
  });

  it('keeps a worker that answers again within the idle time', async () => {
    const local = createPasswordPolicy({ minLength: 8, maxLength: 1024 }, { idleWorkerMs: 1500 });
    const started = nextWorker();
    await local.check('correct horse battery staple', inputs);
    const { hasExited } = await started;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await local.check('another horse battery staple', inputs);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(hasExited()).toBe(false);
    await local.close();
  });

  it('answers service_unavailable when an estimate outlasts its limit, and replaces the stuck worker', async () => {
    const local = createPasswordPolicy(
      { minLength: 8, maxLength: 1024 },
      { workerUrl: stuckWorkerUrl, estimateTimeoutMs: 2000 },
    );
    const started = nextWorker();
    const stuck = local.check('stuck password', inputs);
    const { hasExited } = await started;
    await expect(stuck).rejects.toMatchObject(unavailable);
    const replacement = nextWorker();
    expect(await local.check('correct horse battery staple', inputs)).toBeUndefined();
    await replacement;
    expect(hasExited()).toBe(true);
    await local.close();
  });

  it('asks the breach corpus last, only about a password every local rule accepts, and refuses what it lists', async () => {
    const asked: string[] = [];
    const local = createPasswordPolicy({
      minLength: 8,
      maxLength: 1024,
      breachedPasswords: {
        isBreached: async (password) => {
          asked.push(password);
          return password === 'correct horse battery staple';
        },
      },
    });
    expect(await local.check('correct horse battery staple', inputs)).toEqual({ type: 'breached' });
    expect(await local.check('violet tractor moonlight sandwich', inputs)).toBeUndefined();
    expect((await local.check('short', inputs))?.type).toBe('too_short');
    expect((await local.check('password123456789', inputs))?.type).toBe('too_common');
    expect(asked).toEqual(['correct horse battery staple', 'violet tractor moonlight sandwich']);
    await local.close();
  });
});
