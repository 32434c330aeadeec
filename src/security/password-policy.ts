import { Worker } from 'node:worker_threads';
import type { StrengthAnswer, StrengthRequest } from './password-strength-worker.ts';

export type PasswordProblem =
  | { type: 'too_short'; minLength: number }
  | { type: 'too_long'; maxLength: number }
  | { type: 'control_character' }
  | { type: 'too_common'; reason: string };

export interface PasswordPolicy {
  /** Returns the first rule the password breaks, or undefined when it is acceptable. */
  check(password: string, userInputs: string[]): Promise<PasswordProblem | undefined>;
  /** Returns the first length or character rule the password breaks: the cheap rules, without zxcvbn. */
  checkShape(password: string): PasswordProblem | undefined;
}

// zxcvbn score 0–1 means fewer than 10^6 guesses: on or next to a common-password list.
const MINIMUM_SCORE = 2;

/** Builds the NIST 800-63B policy: length in code points, no composition rules, a common-password check. */
export function createPasswordPolicy(limits: { minLength: number; maxLength: number }): PasswordPolicy {
  const estimator = createStrengthEstimator();
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
      const estimate = await estimator(password, userInputs);
      if (estimate.score < MINIMUM_SCORE) {
        const warning = estimate.warning;
        return { type: 'too_common', reason: warning ? describeWarning(warning) : 'it is too easy to guess' };
      }
      return undefined;
    },
  };
}

/**
 * zxcvbn in a worker thread: even capped, one estimate is tens of milliseconds of CPU, which on the event loop
 * delayed every other request (three clients posting 128-digit passwords took /healthz from 3 to 680 ms).
 * One worker, started at the first estimate and left out of the process's reasons to stay alive.
 */
function createStrengthEstimator() {
  let worker: Worker | undefined;
  let nextId = 0;
  const pending = new Map<
    number,
    { resolve: (answer: StrengthAnswer) => void; reject: (error: Error) => void }
  >();
  const start = () => {
    const started = new Worker(new URL('./password-strength-worker.ts', import.meta.url));
    started.unref();
    started.on('message', (answer: StrengthAnswer) => {
      pending.get(answer.id)?.resolve(answer);
      pending.delete(answer.id);
    });
    const fail = (error: Error) => {
      if (worker === started) worker = undefined;
      for (const waiter of pending.values()) waiter.reject(error);
      pending.clear();
    };
    started.on('error', fail);
    started.on('exit', (code) => fail(new Error(`password strength worker exited with code ${code}`)));
    return started;
  };
  return (password: string, userInputs: string[]) =>
    new Promise<StrengthAnswer>((resolve, reject) => {
      worker ??= start();
      const id = nextId++;
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, password, userInputs } satisfies StrengthRequest);
    });
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
