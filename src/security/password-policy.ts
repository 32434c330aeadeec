import { Worker } from 'node:worker_threads';
import { AppError } from '../errors.ts';
import type { StrengthAnswer, StrengthRequest } from './password-strength-worker.ts';

export type PasswordProblem =
  | { type: 'too_short'; minLength: number }
  | { type: 'too_long'; maxLength: number }
  | { type: 'control_character' }
  | { type: 'too_common'; reason: string };

export interface PasswordPolicy {
  /** Returns the first rule the password breaks, or undefined; throws service_unavailable when zxcvbn cannot answer. */
  check(password: string, userInputs: string[]): Promise<PasswordProblem | undefined>;
  /** Returns the first length or character rule the password breaks: the cheap rules, without zxcvbn. */
  checkShape(password: string): PasswordProblem | undefined;
  /** Ends the zxcvbn worker, failing estimates still waiting; a later check starts a new one. */
  close(): Promise<void>;
}

export interface StrengthEstimatorOptions {
  /** The worker module: tests substitute one that hangs, which no real input is known to make zxcvbn do. */
  workerUrl?: URL;
  estimateTimeoutMs?: number;
}

// zxcvbn score 0–1 means fewer than 10^6 guesses: on or next to a common-password list.
const MINIMUM_SCORE = 2;

/** Builds the NIST 800-63B policy: length in code points, no composition rules, a common-password check. */
export function createPasswordPolicy(
  limits: { minLength: number; maxLength: number },
  estimatorOptions: StrengthEstimatorOptions = {},
): PasswordPolicy {
  const estimator = createStrengthEstimator(estimatorOptions);
  const checkShape = (password: string): PasswordProblem | undefined => {
    const length = [...password].length;
    if (length < limits.minLength) return { type: 'too_short', minLength: limits.minLength };
    if (length > limits.maxLength) return { type: 'too_long', maxLength: limits.maxLength };
    if (/[\p{Cc}\p{Cs}]/u.test(password)) return { type: 'control_character' };
    return undefined;
  };
  return {
    checkShape,
    async check(password, userInputs) {
      const problem = checkShape(password);
      if (problem) return problem;
      const estimate = await estimator.estimate(password, userInputs);
      if (estimate.score < MINIMUM_SCORE) {
        const warning = estimate.warning;
        return { type: 'too_common', reason: warning ? describeWarning(warning) : 'it is too easy to guess' };
      }
      return undefined;
    },
    close: () => estimator.close(),
  };
}

// A full queue of worst-case (64-character) passwords is about three seconds of zxcvbn: the last of them is still
// answered within the time limit below, and a client further back would wait longer than it is worth.
const MAX_PENDING_ESTIMATES = 64;
// More than a full queue takes: a worker that has not answered by then is stuck, not busy.
const DEFAULT_ESTIMATE_TIMEOUT_MS = 5000;

interface StrengthEstimate {
  score: number;
  warning: string | null;
}

interface Waiter {
  resolve: (estimate: StrengthEstimate) => void;
  reject: (error: AppError) => void;
}

const unavailable = (cause: unknown) =>
  new AppError('service_unavailable', 'The password strength check is unavailable; try again shortly', {
    cause,
  });

/**
 * zxcvbn in a worker thread: even capped, one estimate is tens of milliseconds of CPU, which on the event loop
 * delayed every other request (three clients posting 128-digit passwords took /healthz from 3 to 680 ms).
 * One worker, started at the first estimate and left out of the process's reasons to stay alive.
 */
function createStrengthEstimator(options: StrengthEstimatorOptions) {
  const workerUrl = options.workerUrl ?? new URL('./password-strength-worker.ts', import.meta.url);
  const timeoutMs = options.estimateTimeoutMs ?? DEFAULT_ESTIMATE_TIMEOUT_MS;
  let nextId = 0;

  const start = () => {
    const thread = new Worker(workerUrl);
    thread.unref();
    // Per worker: the exit of one that was replaced must not fail the estimates its successor is running.
    const pending = new Map<number, Waiter>();
    const stop = (error: AppError) => {
      if (current === running) current = undefined;
      for (const waiter of pending.values()) waiter.reject(error);
      pending.clear();
      return thread.terminate().then(() => {});
    };
    const running = { thread, pending, stop };
    thread.on('message', (answer: StrengthAnswer) => {
      const waiter = pending.get(answer.id);
      pending.delete(answer.id);
      if (!waiter) return;
      if ('failedWith' in answer) waiter.reject(unavailable(new Error(`zxcvbn threw ${answer.failedWith}`)));
      else waiter.resolve(answer);
    });
    thread.on('error', (error) => void stop(unavailable(error)));
    thread.on(
      'exit',
      (code) => void stop(unavailable(new Error(`strength worker exited with code ${code}`))),
    );
    return running;
  };
  let current: ReturnType<typeof start> | undefined;

  return {
    estimate: (password: string, userInputs: string[]) =>
      new Promise<StrengthEstimate>((resolve, reject) => {
        current ??= start();
        const running = current;
        if (running.pending.size >= MAX_PENDING_ESTIMATES) {
          throw unavailable(new Error(`${MAX_PENDING_ESTIMATES} strength estimates already waiting`));
        }
        const id = nextId++;
        running.thread.postMessage({ id, password, userInputs } satisfies StrengthRequest);
        // One estimate that overstays means the worker is stuck on it, and every one queued behind it with it.
        const timer = setTimeout(
          () => void running.stop(unavailable(new Error(`no strength estimate within ${timeoutMs} ms`))),
          timeoutMs,
        );
        timer.unref();
        running.pending.set(id, {
          resolve: (estimate) => {
            clearTimeout(timer);
            resolve(estimate);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        });
      }),
    close: () => current?.stop(unavailable(new Error('password policy closed'))) ?? Promise.resolve(),
  };
}

function describeWarning(warning: string): string {
  switch (warning) {
    case 'userInputs':
      return 'it contains the username or email';
    case 'common':
    case 'topTen':
    case 'topHundred':
    case 'similarToCommon':
      return 'it is on or close to a list of common passwords';
    case 'sequences':
    case 'straightRow':
    case 'keyPattern':
      return 'it is a keyboard or character sequence';
    case 'simpleRepeat':
    case 'extendedRepeat':
      return 'it repeats characters';
    case 'dates':
    case 'recentYears':
      return 'it is a date or year';
    default:
      return 'it is too easy to guess';
  }
}
