import { Worker } from 'node:worker_threads';
import { hasLongCombiningRun, MAX_COMBINING_RUN } from '../domain/text.ts';
import { AppError } from '../errors.ts';
import type { BreachedPasswords } from './breached-passwords.ts';
import type { StrengthAnswer, StrengthRequest } from './password-strength-worker.ts';
import { normalisePassword } from './passwords.ts';

export type PasswordProblem =
  | { type: 'too_short'; minLength: number }
  | { type: 'too_long'; maxLength: number }
  | { type: 'combining_marks'; maxRun: number }
  | { type: 'control_character' }
  | { type: 'lone_surrogate' }
  | { type: 'too_common'; reason: string }
  | { type: 'breached' };

export interface PasswordPolicy {
  /**
   * Returns the first rule the password, as typed, breaks, or undefined; throws service_unavailable when zxcvbn cannot
   * answer (a breach corpus that cannot answer is skipped instead). The rules but the length see its NFKC form
   * (normalisePassword), the one that is hashed.
   */
  check(typed: string, userInputs: string[]): Promise<PasswordProblem | undefined>;
  /** Returns the first length or character rule the password, as typed, breaks: the cheap rules, without zxcvbn. */
  checkShape(typed: string): PasswordProblem | undefined;
  /** Ends the zxcvbn worker, failing estimates still waiting; a later check starts a new one. */
  close(): Promise<void>;
}

export interface StrengthEstimatorOptions {
  /** The worker module: tests substitute one that hangs, which no real input is known to make zxcvbn do. */
  workerUrl?: URL;
  estimateTimeoutMs?: number;
  /** How long the worker may wait for an estimate before it is ended. */
  idleWorkerMs?: number;
}

/** The longest new password, in code points: long enough for any passphrase (NIST 800-63B asks at least 64). */
export const MAX_PASSWORD_LENGTH = 1024;

// zxcvbn score 0–1 means fewer than 10^6 guesses: on or next to a common-password list.
const MINIMUM_SCORE = 2;

export interface PasswordRules {
  minLength: number;
  maxLength: number;
  /** Checked last, for a password every other rule accepts: it is the only rule that leaves the process. */
  breachedPasswords?: BreachedPasswords | undefined;
}

/**
 * Builds the NIST 800-63B policy: length in code points, no composition rules, a common-password check, and
 * optionally a breached-password check.
 */
export function createPasswordPolicy(
  limits: PasswordRules,
  estimatorOptions: StrengthEstimatorOptions = {},
): PasswordPolicy {
  const estimator = createStrengthEstimator(estimatorOptions);
  const checkShape = (typed: string): PasswordProblem | undefined => {
    // First: every rule below normalises, in time that grows with the square of such a run.
    if (hasLongCombiningRun(typed)) return { type: 'combining_marks', maxRun: MAX_COMBINING_RUN };
    const password = normalisePassword(typed);
    // NIST 800-63B §3.1.1.2 counts code points; of which string it does not say. The minimum counts the shorter of the
    // typed one (NFC, so that a decomposed spelling counts once) and the NFKC one: NFKC spells out some characters
    // (U+FDFA is 18 after it), and one typed character passed a minimum of 8 or 15 (found from outside). The maximum
    // counts the longer, the NFKC one that is hashed.
    const asTyped = [...typed.normalize('NFC')].length;
    const hashed = [...password].length;
    if (Math.min(asTyped, hashed) < limits.minLength)
      return { type: 'too_short', minLength: limits.minLength };
    if (Math.max(asTyped, hashed) > limits.maxLength)
      return { type: 'too_long', maxLength: limits.maxLength };
    // Not Unicode text: encoded for the hash, a lone surrogate becomes U+FFFD, as another password's would.
    if (!password.isWellFormed()) return { type: 'lone_surrogate' };
    if (/\p{Cc}/u.test(password)) return { type: 'control_character' };
    return undefined;
  };
  return {
    checkShape,
    async check(typed, userInputs) {
      const problem = checkShape(typed);
      if (problem) return problem;
      const password = normalisePassword(typed);
      const estimate = await estimator.estimate(password, userInputs);
      if (estimate.score < MINIMUM_SCORE) {
        const warning = estimate.warning;
        return { type: 'too_common', reason: warning ? describeWarning(warning) : 'it is too easy to guess' };
      }
      if (await limits.breachedPasswords?.isBreached(password)) return { type: 'breached' };
      return undefined;
    },
    close: () => estimator.close(),
  };
}

// A full queue of worst-case (64-character) passwords is about three seconds of zxcvbn: the last of them is still
// answered within the time limit below, and a client further back would wait longer than it is worth.
const MAX_PENDING_ESTIMATES = 64;
// Counted from when the worker takes the estimate, not from when it was queued: a worker that has not answered
// one estimate by then is stuck on it, not busy (the worst capped estimate takes well under 100 ms).
const DEFAULT_ESTIMATE_TIMEOUT_MS = 5000;
// The worker is a second V8 isolate holding zxcvbn's dictionaries: 27-35 MB of resident memory (bench/memory.ts),
// a fifth of the server's, kept for registrations and password changes that most minutes do not see. Starting it
// again costs 150-230 ms of one registration; a burst of them keeps it.
const DEFAULT_IDLE_WORKER_MS = 10_000;

interface StrengthEstimate {
  score: number;
  warning: string | null;
}

interface Job {
  id: number;
  request: StrengthRequest;
  resolve: (estimate: StrengthEstimate) => void;
  reject: (error: AppError) => void;
}

const unavailable = (cause: unknown) =>
  new AppError('service_unavailable', 'The password strength check is unavailable; try again shortly', {
    cause,
    unavailableReason: 'password_check_unavailable',
  });

/**
 * zxcvbn in a worker thread: even capped, one estimate is tens of milliseconds of CPU, which on the event loop
 * delayed every other request (three clients posting 128-digit passwords took /healthz from 3 to 680 ms).
 * One worker, started at the first estimate, ended when idle, and left out of the process's reasons to stay alive.
 * Estimates wait here and go to the worker one at a time, so that a stuck estimate fails alone and a full queue
 * answers 503 at once.
 */
function createStrengthEstimator(options: StrengthEstimatorOptions) {
  const workerUrl = options.workerUrl ?? new URL('./password-strength-worker.ts', import.meta.url);
  const timeoutMs = options.estimateTimeoutMs ?? DEFAULT_ESTIMATE_TIMEOUT_MS;
  const idleMs = options.idleWorkerMs ?? DEFAULT_IDLE_WORKER_MS;
  const queue: Job[] = [];
  let nextId = 0;
  let worker: Worker | undefined;
  let inFlight: { job: Job; timer: NodeJS.Timeout } | undefined;
  let idleTimer: NodeJS.Timeout | undefined;

  const settle = (outcome: (job: Job) => void) => {
    if (!inFlight) return;
    clearTimeout(inFlight.timer);
    const { job } = inFlight;
    inFlight = undefined;
    outcome(job);
  };
  const dropWorker = (error: AppError) => {
    const dropped = worker;
    worker = undefined;
    settle((job) => job.reject(error));
    void dropped?.terminate();
  };
  const start = () => {
    const thread = new Worker(workerUrl);
    thread.unref();
    thread.on('message', (answer: StrengthAnswer) => {
      if (thread !== worker || answer.id !== inFlight?.job.id) return;
      settle((job) =>
        'failedWith' in answer
          ? job.reject(unavailable(new Error(`zxcvbn threw ${answer.failedWith}`)))
          : job.resolve(answer),
      );
      pump();
    });
    const fail = (error: unknown) => {
      if (thread !== worker) return;
      dropWorker(unavailable(error));
      pump();
    };
    thread.on('error', fail);
    thread.on('exit', (code) => fail(new Error(`strength worker exited with code ${code}`)));
    return thread;
  };
  const endIdleWorker = () => {
    idleTimer = undefined;
    const idle = worker;
    worker = undefined;
    void idle?.terminate();
  };
  const pump = () => {
    if (inFlight) return;
    clearTimeout(idleTimer);
    idleTimer = undefined;
    const job = queue.shift();
    if (!job) {
      if (worker) {
        idleTimer = setTimeout(endIdleWorker, idleMs);
        idleTimer.unref();
      }
      return;
    }
    worker ??= start();
    const timer = setTimeout(() => {
      dropWorker(unavailable(new Error(`no strength estimate within ${timeoutMs} ms`)));
      pump();
    }, timeoutMs);
    timer.unref();
    inFlight = { job, timer };
    worker.postMessage(job.request);
  };

  return {
    estimate: (password: string, userInputs: string[]) =>
      new Promise<StrengthEstimate>((resolve, reject) => {
        // Shed as the hash queue sheds: a burst, not an outage, so the client may come back in a second.
        if (queue.length + (inFlight ? 1 : 0) >= MAX_PENDING_ESTIMATES) {
          throw new AppError('overloaded', 'The server is busy; retry in a second.', {
            cause: new Error(`${MAX_PENDING_ESTIMATES} strength estimates already waiting`),
            retryAfterSeconds: 1,
            unavailableReason: 'password_check_unavailable',
          });
        }
        const id = nextId++;
        queue.push({ id, request: { id, password, userInputs }, resolve, reject });
        pump();
      }),
    close: async () => {
      clearTimeout(idleTimer);
      idleTimer = undefined;
      const closed = unavailable(new Error('password policy closed'));
      for (const job of queue.splice(0)) job.reject(closed);
      const closing = worker;
      dropWorker(closed);
      await closing?.terminate();
    },
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
